"""Reduced-depth stand-ins for the encoders beyond the nine (issue 14), added to `tests._reduced`'s tables.

Same contract as there: each writer lays out the encoder's hub repository at depth 1 (real widths, so the
embedding length is the real one) in the layout its authors publish, and each reference computes the embedding
without stbench's model code where one exists:

* timm-format repos (UNI2-h, H-optimus-1, H0-mini, Kaiko, Lunit, Virchow CLS-only): saved from timm built with
  the model card's kwargs written out here; the pooling is recomputed from ``forward_features``;
* transformers-format repos (Phikon-v2, Hibou-L, Midnight): saved by ``transformers``' own ``Dinov2Model`` /
  ``Dinov2WithRegistersModel``, and the reference is that model's output (its class token, pooler output, or
  class token ++ patch mean). Midnight's config says 518 px, so positions are resampled to 224 as transformers does;
* GPFM: a timm DINOv2 ViT-L in the DINOv2 training layout (``teacher`` wrapper, ``backbone.`` prefix, chunked
  blocks, heads and ``mask_token`` to drop);
* CONCH v1.5: a ViT-L trunk with LayerScale and a 14 x 14 position grid (built at 224 px, as the references
  build it) plus bias-free pooler tensors written by name; the reference runs that trunk with DINO's per-forward
  position resampling and pools by hand.

Parameter counts for `FULL_SIZE` are the published sizes (model cards / papers) where one was found, to two
figures; otherwise the count of the architecture the reference loaders build (said so below).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests._reduced import (
    FULL_SIZE,
    _hub_vit,
    _swiglu,
    _vit_state,
    class_token,
    full_size,
    reduced,
    safetensors_bytes,
    timm_config,
    torch_bytes,
    write_virchow,
    write_virchow2,
)
from stbench.testing import write_hub_repo

if TYPE_CHECKING:
    import torch

HOPT = {"mean": (0.707223, 0.578729, 0.703617), "std": (0.211883, 0.230117, 0.177517)}
_HF: dict[str, Any] = {}  # name -> the transformers model a writer saved: the reference computes with it


# -- timm-format repositories ----------------------------------------------------------------------------------
@reduced("uni2-h", reference=class_token)
def write_uni2h(cache: Path) -> Path:
    # As hf.co/MahmoodLab/UNI2-h: the config omits the layer classes, the model card passes them in code.
    return _hub_vit(cache, "uni2-h", "vit_giant_patch14_224", {
        "img_size": 224, "patch_size": 14, "num_heads": 24, "init_values": 1e-5, "embed_dim": 1536,
        "mlp_ratio": 2.66667 * 2, "num_classes": 0, "no_embed_class": True, "reg_tokens": 8, "dynamic_img_size": True},
        _swiglu())


def _safetensors_vit(cache: Path, repo: str, arch: str, args: dict[str, Any], classes: dict | None = None,
                     **cfg: Any) -> Path:
    args = {**args, "depth": 1}
    files = {"config.json": timm_config(arch, args, **cfg), "model.safetensors": safetensors_bytes(_vit_state(arch, args, classes))}
    return write_hub_repo(cache, repo, files)


@reduced("hoptimus1", reference=class_token)
def write_hoptimus1(cache: Path) -> Path:
    return _safetensors_vit(cache, "bioptimus/H-optimus-1", "vit_giant_patch14_reg4_dinov2",
                            {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "global_pool": "token"}, **HOPT)


@reduced("h0-mini", reference=class_token)
def write_h0mini(cache: Path) -> Path:
    return _safetensors_vit(cache, "bioptimus/H0-mini", "vit_base_patch14_reg4_dinov2",
                            {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "global_pool": "",
                             "mlp_ratio": 2.66667 * 2}, _swiglu(), **HOPT)


@reduced("kaiko-vitb8", reference=class_token)
def write_kaiko(cache: Path) -> Path:
    return _safetensors_vit(cache, "1aurent/vit_base_patch8_224.kaiko_ai_towards_large_pathology_fms",
                            "vit_base_patch8_224", {"img_size": 224, "num_classes": 0, "dynamic_img_size": True},
                            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@reduced("lunit-s8", reference=class_token)
def write_lunit(cache: Path) -> Path:
    return _safetensors_vit(cache, "1aurent/vit_small_patch8_224.lunit_dino", "vit_small_patch8_224",
                            {"img_size": 224, "num_classes": 0},
                            mean=(0.70322989, 0.53606487, 0.66096631), std=(0.21716536, 0.26081574, 0.20723464))


# The CLS-only modes read the same repositories as Virchow and Virchow2.
reduced("virchow-cls", reference=class_token)(write_virchow)
reduced("virchow2-cls", reference=class_token)(write_virchow2)


# -- transformers-format repositories --------------------------------------------------------------------------
def _noisy(model: torch.nn.Module, seed: int) -> None:
    """Noise on every tensor, so swapped norms, biases or layer scales (1, 0 at init) cannot go unnoticed."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def _hub_transformers(cache: Path, name: str, repo: str, model_cls: str, config_cls: str, **config: Any) -> Path:
    import pytest
    import torch

    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(num_hidden_layers=1, **config)).eval()
    _noisy(model, 1)
    _HF[name] = model
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        files = {f: (Path(tmp) / f).read_bytes() for f in ("model.safetensors", "config.json")}
    return write_hub_repo(cache, repo, files)


def hf_class_token(name: str):  # noqa: ANN201
    def ref(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return _HF[name](pixel_values=x).last_hidden_state[:, 0]

    return ref


def hf_pooler_output(name: str):  # noqa: ANN201
    def ref(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return _HF[name](pixel_values=x).pooler_output

    return ref


def hf_class_and_mean(name: str):  # noqa: ANN201
    def ref(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        import torch

        tokens = _HF[name](pixel_values=x).last_hidden_state  # Midnight's card: cat(t[:, 0], t[:, 1:].mean(1))
        return torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], dim=-1)

    return ref


_L = {"hidden_size": 1024, "num_attention_heads": 16, "layerscale_value": 1e-5}


@reduced("phikon-v2", reference=hf_class_token("phikon-v2"))
def write_phikon_v2(cache: Path) -> Path:
    return _hub_transformers(cache, "phikon-v2", "owkin/phikon-v2", "Dinov2Model", "Dinov2Config", patch_size=16,
                             image_size=224, **_L)


@reduced("hibou-l", reference=hf_pooler_output("hibou-l"))
def write_hibou_l(cache: Path) -> Path:
    # SwiGLU FFN, 4 registers, 224 px: as HistAI/hibou's build_model and the hibou-b config.json
    return _hub_transformers(cache, "hibou-l", "histai/hibou-L", "Dinov2WithRegistersModel",
                             "Dinov2WithRegistersConfig", patch_size=14, image_size=224, num_register_tokens=4,
                             use_swiglu_ffn=True, **_L)


@reduced("midnight", reference=hf_class_and_mean("midnight"))
def write_midnight(cache: Path) -> Path:
    # image_size 518: the positions (37 x 37) are resampled to the 16 x 16 grid of a 224 px patch
    return _hub_transformers(cache, "midnight", "kaiko-ai/midnight", "Dinov2Model", "Dinov2Config", hidden_size=1536,
                             num_attention_heads=24, patch_size=14, image_size=518, use_swiglu_ffn=True,
                             layerscale_value=1e-5)


# -- GPFM: the DINOv2 training layout ----------------------------------------------------------------------------
@reduced("gpfm", reference=class_token)
def write_gpfm(cache: Path) -> Path:
    import re

    import torch

    args = {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "depth": 1}
    state = {}
    for key, value in _vit_state("vit_large_patch14_dinov2", args).items():  # chunked as FSDP training saves
        state["backbone." + re.sub(r"^blocks\.(\d+)\.", r"blocks.0.\1.", key)] = value
    g = torch.Generator().manual_seed(3)
    state |= {"backbone.mask_token": torch.randn(1, 1024, generator=g),
              "dino_head.mlp.0.weight": torch.randn(16, 1024, generator=g)}  # training heads: not the encoder
    files = {"GPFM.pth": torch_bytes({"teacher": state}),
             "config.json": timm_config("vit_large_patch14_dinov2", args)}
    return write_hub_repo(cache, "majiabo/GPFM", files)


# -- CONCH v1.5: ViT-L trunk + bias-free attentional pooler ------------------------------------------------------
@reduced("conch-v1.5", reference=lambda model, x: conch_v15_by_hand(x))
def write_conch_v15(cache: Path) -> Path:
    """The tower's keys bare (``trunk.``, ``attn_pool_contrast.``, ``ln_contrast.``) as TRIDENT and TITAN load
    them strictly: a trunk built at timm's default 224 px (14 x 14 position grid) with LayerScale, and the pooler's
    bias-free ``to_q`` / ``to_kv`` / ``to_out``."""
    import torch
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    trunk = VisionTransformer(img_size=224, patch_size=16, embed_dim=1024, depth=1, num_heads=16, init_values=1e-6,
                              num_classes=0).eval()
    _noisy(trunk, 2)
    g = torch.Generator().manual_seed(4)

    def r(*shape: int, scale: float = 0.05, centre: float = 0.0) -> torch.Tensor:
        return centre + scale * torch.randn(shape, generator=g)

    pool = {"query": r(1, 768, scale=1.0), "ln_q.weight": r(768, centre=1), "ln_q.bias": r(768),
            "ln_k.weight": r(1024, centre=1), "ln_k.bias": r(1024), "to_q.weight": r(768, 768),
            "to_kv.weight": r(1536, 1024), "to_out.weight": r(768, 768)}
    head = {"ln_contrast.weight": r(768, centre=1), "ln_contrast.bias": r(768)}
    _HF["conch-v1.5"] = (trunk, pool, head)
    state = {f"trunk.{k}": v for k, v in trunk.state_dict().items()}
    state |= {f"attn_pool_contrast.{k}": v for k, v in pool.items()} | head
    config = {"embed_dim": 768, "vision_cfg": {"image_size": 448, "patch_size": 16, "layers": 1}}
    files = {"pytorch_model_vision.bin": torch_bytes(state), "config.json": json.dumps(config).encode()}
    return write_hub_repo(cache, "MahmoodLab/conchv1_5", files)


def conch_v15_by_hand(x: torch.Tensor) -> torch.Tensor:
    """The reference written out from the saved tensors: the 224-px trunk run at 448 px with DINO's per-forward
    position resampling (bicubic, scale (28 + 0.1) / 14), then CoCa's contrastive pooling (1 query, 8 heads,
    bias-free projections) and ln_contrast."""
    import torch

    F = torch.nn.functional
    trunk, pool, head = _HF["conch-v1.5"]
    b, grid = x.shape[0], x.shape[-1] // 16
    pos = trunk.pos_embed
    patch = pos[:, 1:].reshape(1, 14, 14, 1024).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, scale_factor=((grid + 0.1) / 14, (grid + 0.1) / 14), mode="bicubic")
    pos = torch.cat([pos[:, :1], patch.permute(0, 2, 3, 1).reshape(1, grid * grid, 1024)], dim=1)
    patches = trunk.patch_embed.proj(x).flatten(2).transpose(1, 2)  # the 16 px convolution at any input size
    tokens = torch.cat([trunk.cls_token.expand(b, -1, -1), patches], dim=1) + pos
    tokens = trunk.norm(trunk.blocks(tokens))
    kv = F.layer_norm(tokens, (1024,), pool["ln_k.weight"], pool["ln_k.bias"], eps=1e-5)
    q = F.layer_norm(pool["query"], (768,), pool["ln_q.weight"], pool["ln_q.bias"], eps=1e-5) @ pool["to_q.weight"].T
    k, v = (kv @ pool["to_kv.weight"].T).split(768, dim=-1)
    n = tokens.shape[1]
    qh, kh, vh = q.view(8, 96), k.reshape(b, n, 8, 96), v.reshape(b, n, 8, 96)
    weights = torch.einsum("hd,bnhd->bhn", qh, kh).div(96**0.5).softmax(dim=-1)
    pooled = torch.einsum("bhn,bnhd->bhd", weights, vh).reshape(b, 768) @ pool["to_out.weight"].T
    return F.layer_norm(pooled, (768,), head["ln_contrast.weight"], head["ln_contrast.bias"], eps=1e-5)


# -- full size on the meta device --------------------------------------------------------------------------------
def _built(module: str, builder: str, *args: Any):  # noqa: ANN202
    def build() -> torch.nn.Module:
        import importlib

        from stbench.encoders._torch import Embedder
        from stbench.encoders.timm_models import POOLS, build_embedder

        mod = importlib.import_module(f"stbench.encoders.{module}")
        if builder == "timm":
            return build_embedder(mod.ARCHS[args[0]] if hasattr(mod, "ARCHS") else mod.ARCH)
        if builder == "dinov2":
            return Embedder(mod.build_dinov2(args[0]), POOLS[mod.FAMILIES[args[0]].pool])
        return getattr(mod, builder)()

    return build


# Sizes. Published: H-optimus-1 1.1 B (the H-optimus-0 architecture, ViT-g/14; arXiv:2409.09173 gives 1.1 B for
# H-optimus-0); Phikon-v2 ViT-L/16 (arXiv:2409.09173; a third-party summary of its Extended Table 5 gives 307 M);
# Hibou-L ViT-L/14 (arXiv:2406.05074); Midnight ViT-g/14 (1.1 B, as H-optimus-0's ViT-g); GPFM ViT-L/14;
# Kaiko ViT-B/8, Lunit ViT-S/8, Virchow / Virchow2 ViT-H/14 (632 M). Not found as a number, so the count of the
# architecture the reference loaders build (TRIDENT kwargs): UNI2-h 681 M; H0-mini 86 M (recollection: ViT-B with
# DINOv2's SwiGLU width); CONCH v1.5 303 M trunk + 2.8 M bias-free pooler.
for _name, _module, _builder, _params, _tol in [
    ("uni2-h", "timm_recent", "timm", 681e6, 0.03), ("hoptimus1", "timm_recent", "timm", 1.1e9, 0.05),
    ("h0-mini", "timm_recent", "timm", 86e6, 0.03), ("kaiko-vitb8", "timm_recent", "timm", 86e6, 0.03),
    ("lunit-s8", "timm_recent", "timm", 22e6, 0.03), ("virchow-cls", "timm_recent", "timm", 632e6, 0.03),
    ("virchow2-cls", "timm_recent", "timm", 632e6, 0.03), ("phikon-v2", "dinov2_hf", "dinov2", 300e6, 0.03),
    ("hibou-l", "dinov2_hf", "dinov2", 303e6, 0.03), ("midnight", "dinov2_hf", "dinov2", 1.1e9, 0.05),
    ("gpfm", "gpfm", "timm", 303e6, 0.03), ("conch-v1.5", "conch_v15", "build_conch_v15", 306e6, 0.03),
]:
    full_size(_name, params=_params, rel_tol=_tol)(_built(_module, _builder, _name))

assert {"uni2-h", "phikon-v2", "midnight", "gpfm", "conch-v1.5"} <= set(FULL_SIZE)
