"""DINOv2 ViTs published in Hugging Face ``transformers`` format: Phikon-v2, Hibou-L, Midnight-12k.

Their cards load them with ``AutoModel.from_pretrained`` (a ``Dinov2Model``; Hibou-L's custom code adds four
register tokens, as ``Dinov2WithRegistersModel`` does) and take the class token of ``last_hidden_state``
(Hibou-L: ``pooler_output``, the same vector), or, for Midnight, the class token ++ the mean of the other
tokens. ``transformers`` is not needed at run time: the network is a timm ``VisionTransformer`` built from the
repo's ``config.json`` and the checkpoint's keys are renamed onto it (q, k, v fused into ``qkv``; a SwiGLU
``weights_in`` is timm's packed ``fc1``, gate first, as both compute ``silu(x1) * x2``), then loaded strictly.

Two layouts differ and are converted exactly:

* registers: DINOv2 adds the position embedding to the class and patch tokens and then inserts the registers
  after the class token; timm's ``no_embed_class`` model adds positions to the patch tokens only, so the class
  token's position is folded into the class token (as timm's own DINOv2-register conversion does);
* a config whose ``image_size`` differs from the 224 px input: transformers resamples the patch position grid
  on every forward (bicubic, ``align_corners=False``, in float32: transformers 5's ``interpolate_pos_encoding``);
  here it is resampled once at load time the same way. Older transformers releases used a slightly different
  formula (a scale factor), so embeddings may differ from theirs in the last digits.

tests/_reduced_more.py checks each against ``transformers``' own models on real patches.

Where each fact was checked (issue 14) is written beside it: mahmoodlab/TRIDENT
``trident/patch_encoder_models/load.py`` (its loader classes) and ``utils/constants.py``, mahmoodlab/HEST
``src/hest/bench/cpath_model_zoo/inference_models.py``, kaiko-ai/eva (``backbones/pathology/*.py``,
``docs/user-guide/advanced/replicate_evaluations.md``), kaiko-ai/Midnight (``README.md``, ``eval/``), HistAI/hibou,
and the Hugging Face pages stored for the search corpora; "recollection" marks what none of them settled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stbench.encoders._base import Encoder, EncoderSpec, register_encoder
from stbench.encoders.timm_models import _hub
from stbench.encoders.weights import ResolvedWeights
from stbench.errors import WeightsError

if TYPE_CHECKING:
    import torch

__all__ = ["Dinov2Family", "FAMILIES", "SPECS", "ENCODERS", "dinov2_config", "build_dinov2", "hf_dinov2_to_timm"]


@dataclass(frozen=True)
class Dinov2Family:
    """A transformers DINOv2 model: its config.json fields when none comes with the weights, and the pooling."""

    config: dict[str, Any]
    pool: str  # "cls" or "cls+mean" (class token ++ mean of the non-prefix tokens)


# Dinov2Config's own defaults for what the published configs may leave out.
_DEFAULTS: dict[str, Any] = {"mlp_ratio": 4, "image_size": 224, "layer_norm_eps": 1e-6, "layerscale_value": 1.0,
                             "use_swiglu_ffn": False, "qkv_bias": True, "hidden_act": "gelu", "num_channels": 3,
                             "num_register_tokens": 0}
_VIT_L = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16}

FAMILIES: dict[str, Dinov2Family] = {
    # Phikon-v2: AutoModel.from_pretrained("owkin/phikon-v2") and last_hidden_state[:, 0, :] (TRIDENT
    # Phikonv2InferenceEncoder; HEST PhikonV2InferenceEncoder, return_cls=True); "DINOv2 ViT-L16", 1024-d (eva
    # replicate_evaluations.md). No registers: a plain Dinov2Model loaded without trust_remote_code (released before
    # transformers had DINOv2 registers; "ViT-L/16, no registers" in a third-party summary of arXiv:2409.09173). Its
    # config.json (read at load time) was not seen: these are the fallback when none comes with the weights.
    "phikon-v2": Dinov2Family({**_VIT_L, "patch_size": 16, "model_type": "dinov2"}, "cls"),
    # Hibou-L: AutoModel with trust_remote_code and pooler_output (TRIDENT HibouLInferenceEncoder); HEST takes
    # last_hidden_state[:, 0] (HibouLargeInferenceEncoder), the same normed class token. ViT-L/14 with 4 registers
    # (eva histai.py num_register_tokens 4; Nechaev et al. 2024, arXiv:2406.05074). SwiGLU FFN: HistAI/hibou
    # hibou/models/__init__.py build_model (ffn_layer="swiglufused", 4 registers, layerscale, 224 px) and the
    # stored hf.co/histai/hibou-b config.json ("use_swiglu_ffn": true, "image_size": 224); hibou-L's own
    # config.json was not seen (it overrides these at load time).
    "hibou-l": Dinov2Family({**_VIT_L, "patch_size": 14, "num_register_tokens": 4, "use_swiglu_ffn": True,
                             "model_type": "dinov2"}, "cls"),
    # Midnight-12k: kaiko-ai/Midnight README (= the hf.co/kaiko-ai/midnight card): AutoModel (Dinov2Model),
    # extract_classification_embedding = cat(last_hidden_state[:, 0], last_hidden_state[:, 1:].mean(1)); the
    # authors' own HEST run uses the same (eval/hest_bench_config.yaml: ExtractConcatToken). ViT-g/14: eva
    # replicate_evaluations.md ("Midnight-12k (ViT-G14)"), trained as DINOv2's dinov2_vitg14 (Midnight eval
    # configs), whose transformers config (stored hf.co/facebook/dinov2-giant config.json) is 1536 wide,
    # 40 layers, 24 heads, use_swiglu_ffn true.
    "midnight": Dinov2Family({"hidden_size": 1536, "num_hidden_layers": 40, "num_attention_heads": 24,
                              "patch_size": 14, "use_swiglu_ffn": True, "model_type": "dinov2"}, "cls+mean"),
}


def dinov2_config(name: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config fields the architecture needs: ``config`` over the family's own values; refuses what a
    timm ViT cannot reproduce."""
    base = {**_DEFAULTS, **FAMILIES[name].config}
    cfg = {**base, **{k: v for k, v in (config or {}).items() if k in base and v is not None}}
    if not str(cfg["model_type"]).startswith("dinov2"):
        raise WeightsError(f"{name}: config.json has model_type {cfg['model_type']!r}; expected a dinov2 model")
    if cfg["hidden_act"] != "gelu" and not cfg["use_swiglu_ffn"]:  # transformers' "gelu" is the exact GELU, timm's
        raise WeightsError(f"{name}: config.json hidden_act {cfg['hidden_act']!r} is not supported (only 'gelu')")
    return cfg


def _swiglu_hidden(cfg: dict[str, Any]) -> int:
    """transformers' Dinov2SwiGLUFFN width: two thirds of the MLP width, rounded up to a multiple of 8."""
    return (int(int(cfg["hidden_size"] * cfg["mlp_ratio"]) * 2 / 3) + 7) // 8 * 8


def build_dinov2(name: str, config: dict[str, Any] | None = None, *, input_size: int = 224,
                 weight_init: str = "skip") -> torch.nn.Module:
    """The timm ViT equal to the transformers model of ``config`` at ``input_size`` (weights not loaded)."""
    from functools import partial

    import torch
    from timm.layers import Mlp, SwiGLUPacked
    from timm.models.vision_transformer import VisionTransformer

    cfg = dinov2_config(name, config)
    width, regs = cfg["hidden_size"], int(cfg["num_register_tokens"])
    if cfg["use_swiglu_ffn"]:  # timm's packed fc1 is 2 x hidden wide; +0.5 so int(width * ratio) is exact
        mlp = {"mlp_layer": SwiGLUPacked, "act_layer": torch.nn.SiLU,
               "mlp_ratio": (2 * _swiglu_hidden(cfg) + 0.5) / width}
    else:
        mlp = {"mlp_layer": Mlp, "act_layer": torch.nn.GELU, "mlp_ratio": (int(width * cfg["mlp_ratio"]) + 0.5) / width}
    return VisionTransformer(
        img_size=input_size, patch_size=cfg["patch_size"], in_chans=cfg["num_channels"], embed_dim=width,
        depth=cfg["num_hidden_layers"], num_heads=cfg["num_attention_heads"], qkv_bias=cfg["qkv_bias"],
        init_values=cfg["layerscale_value"], reg_tokens=regs, no_embed_class=regs > 0,
        norm_layer=partial(torch.nn.LayerNorm, eps=cfg["layer_norm_eps"]), num_classes=0, global_pool="token",
        weight_init=weight_init, **mlp,
    )


_BLOCK = re.compile(r"encoder\.layer\.(\d+)\.(.+)")
_IN_BLOCK = {"norm1": "norm1", "norm2": "norm2", "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
             "layer_scale1": "ls1", "layer_scale2": "ls2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
             "mlp.weights_in": "mlp.fc1", "mlp.weights_out": "mlp.fc2", "mlp.down_proj": "mlp.fc2"}
_QKV = re.compile(r"attention\.(?:attention\.(query|key|value)|(q|k|v)_proj)\.(weight|bias)")
_GLU = re.compile(r"mlp\.(gate|up)_proj\.(weight|bias)")  # transformers 5's in-memory names of weights_in
_TOP = {"embeddings.cls_token": "cls_token", "embeddings.register_tokens": "reg_token",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias"}


def _positions(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + n*n, D) positions with the patch part resampled to ``grid`` x ``grid`` as transformers does."""
    import torch

    n = round((pos.shape[1] - 1) ** 0.5)
    if n == grid:
        return pos
    patch = pos[:, 1:].reshape(1, n, n, -1).permute(0, 3, 1, 2).float()
    patch = torch.nn.functional.interpolate(patch, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :1].float(), patch.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


def hf_dinov2_to_timm(state: dict[str, torch.Tensor], *, grid: int, name: str = "dinov2") -> dict[str, torch.Tensor]:
    """A transformers ``Dinov2Model`` (or with registers) state dict in timm ``VisionTransformer`` keys, for
    an input of ``grid`` x ``grid`` patches. ``mask_token`` and ``pooler.*`` are dropped; any other key is kept
    as is, so strict loading reports it."""
    import torch

    if any(k.startswith("dinov2.") for k in state):  # saved from a task model
        state = {k[len("dinov2."):]: v for k, v in state.items() if k.startswith("dinov2.")}
    out: dict[str, torch.Tensor] = {}
    fused: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}  # (block, what, weight|bias) -> parts
    for key, value in state.items():
        if key == "embeddings.mask_token" or key.startswith("pooler."):
            continue
        if key in _TOP:
            out[_TOP[key]] = value
            continue
        if key == "embeddings.position_embeddings":
            out["pos_embed"] = _positions(value, grid)
            continue
        m = _BLOCK.fullmatch(key)
        if m is None:
            out[key] = value
            continue
        block, rest = m.groups()
        if q := _QKV.fullmatch(rest):
            part = {"query": "q", "key": "k", "value": "v"}.get(q[1] or "", q[2])
            fused.setdefault((block, "attn.qkv", q[3]), {})[part] = value
            continue
        if g := _GLU.fullmatch(rest):
            fused.setdefault((block, "mlp.fc1", g[2]), {})[g[1]] = value
            continue
        module, _, leaf = rest.rpartition(".")
        leaf = "gamma" if leaf == "lambda1" else leaf
        out[f"blocks.{block}.{_IN_BLOCK.get(module, module)}.{leaf}"] = value
    for (block, target, leaf), parts in fused.items():
        order = ("q", "k", "v") if target == "attn.qkv" else ("gate", "up")
        if set(parts) != set(order):
            raise WeightsError(f"{name}: encoder.layer.{block} has {target} {leaf}s for {sorted(parts)} only; "
                               "is the weight file complete?")
        out[f"blocks.{block}.{target}.{leaf}"] = torch.cat([parts[p] for p in order])
    if "reg_token" in out and "pos_embed" in out:  # timm no_embed_class: the class position goes into the token
        out["cls_token"] = out["cls_token"] + out["pos_embed"][:, :1].to(out["cls_token"].dtype)
        out["pos_embed"] = out["pos_embed"][:, 1:]
    return out


def _loader(spec: EncoderSpec, family: Dinov2Family):  # noqa: ANN202
    def load(weights: ResolvedWeights):  # noqa: ANN202
        import torch

        from stbench.encoders._statedict import load_strict, read_checkpoint
        from stbench.encoders._torch import Embedder
        from stbench.encoders.timm_models import POOLS

        if weights.random_seed is not None:  # the random-weight control: timm's own init
            return Embedder(build_dinov2(spec.name, input_size=spec.input_size, weight_init=""), POOLS[family.pool])
        cfg = dinov2_config(spec.name, weights.config)
        dim = cfg["hidden_size"] * (2 if family.pool == "cls+mean" else 1)
        if dim != spec.embed_dim:
            raise WeightsError(f"{spec.name}: the config.json beside {weights.path} describes a {dim}-d model, but "
                               f"{spec.name} embeddings are {spec.embed_dim}-d; these weights are for another model")
        with torch.device("meta"):  # shapes only: a 1.1 B-parameter init would cost half a minute on 2 cores
            net = build_dinov2(spec.name, weights.config, input_size=spec.input_size)
        state = read_checkpoint(weights.path, spec.name)
        state = hf_dinov2_to_timm(state, grid=spec.input_size // cfg["patch_size"], name=spec.name)
        load_strict(net, state, name=spec.name, path=weights.path, assign=True)
        return Embedder(net.float(), POOLS[family.pool])

    load.__qualname__ = f"load_{spec.name.replace('-', '_')}"
    return load


SPECS: tuple[EncoderSpec, ...] = (
    EncoderSpec(
        # ImageNet mean/std with Resize(224) + CenterCrop(224), fp32: TRIDENT Phikonv2InferenceEncoder (HEST: fp32,
        # ImageNet). Not gated: loaded without a token in HEST's bench_config.yaml (no "requesting the weights"),
        # PathBench-MIL README "Automatic". Files model.safetensors + config.json: TRIDENT's error message.
        name="phikon-v2", aliases=("phikonv2", "owkin-phikon-v2"), embed_dim=1024, precision="fp32",
        pooling="class token of last_hidden_state (Dinov2Model)",
        weights="hf.co/owkin/phikon-v2 (model.safetensors + config.json, transformers Dinov2Model)",
        license="Owkin non-commercial licence (see the model page)",  # licence text: recollection
        paper="Filiot et al. 2024, Phikon-v2, a large and public feature extractor for biomarker prediction "
              "(arXiv:2409.09173)",
        random_init=True, code="timm VisionTransformer built from the repo's Dinov2Config; keys renamed by stbench",
        source=_hub("owkin/phikon-v2", ("model.safetensors",)),
    ),
    EncoderSpec(
        name="hibou-l", aliases=("hiboul", "hibou-large"), embed_dim=1024,
        # HIBOU_MEAN / HIBOU_STD with Resize(224, bicubic): TRIDENT utils/constants.py and HibouLInferenceEncoder;
        # the same mean/std in eva replicate_evaluations.md. fp32: TRIDENT, HEST.
        mean=(0.7068, 0.5755, 0.722), std=(0.195, 0.2316, 0.1816), interpolation="bicubic",
        # gated: third party only (Sbrussee/PathBench-MIL README lists Hibou-L as "Gated", Hibou-B not); HEST's
        # bench_config.yaml does not mark hibou_large as needing a request -- unsettled (recollection), kept gated
        precision="fp32", gated=True,
        pooling="pooler_output: the normed class token (4 register tokens skipped)",
        weights="hf.co/histai/hibou-L (gated; transformers DINOv2 with registers, custom code not needed)",
        license="Apache-2.0",  # HistAI/hibou README: "release of Hibou-L under the Apache 2.0 license"
        paper="Nechaev et al. 2024, Hibou: a family of foundational vision transformers for pathology "
              "(arXiv:2406.05074)",
        random_init=True, code="timm VisionTransformer built from the repo's config; keys renamed by stbench",
        source=_hub("histai/hibou-L", ("model.safetensors", "pytorch_model.bin")),
    ),
    EncoderSpec(
        # mean/std 0.5, Resize(224) + CenterCrop(224): kaiko-ai/Midnight README ("trained on 224x224 images
        # normalized with a mean of (0.5, 0.5, 0.5) and a standard deviation of (0.5, 0.5, 0.5)"). fp32: the
        # authors' HEST run (Midnight eval/run_hest.py, precision=torch.float32); TRIDENT runs it in fp16 and
        # pools the class token only by default. Public (Midnight README), MIT (Midnight LICENSE).
        name="midnight", aliases=("midnight-12k", "kaiko-midnight"), embed_dim=3072, mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5), precision="fp32",
        pooling="class token ++ mean of patch tokens (1536 + 1536), as its card",
        weights="hf.co/kaiko-ai/midnight (model.safetensors + config.json, transformers Dinov2Model)",
        license="MIT",
        paper="Karasikov et al. 2025, Training state-of-the-art pathology foundation models with orders of "
              "magnitude less data (arXiv:2504.05186)",
        random_init=True, code="timm VisionTransformer built from the repo's Dinov2Config; keys renamed by stbench",
        source=_hub("kaiko-ai/midnight", ("model.safetensors",)),
    ),
)

ENCODERS: dict[str, Encoder] = {spec.name: register_encoder(spec)(_loader(spec, FAMILIES[spec.name])) for spec in SPECS}
