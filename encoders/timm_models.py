"""The six timm-built encoders: ResNet-50 (CLAM truncation), UNI, Virchow, Virchow2, Prov-GigaPath, H-optimus-0.

How a model is built, the timm way
----------------------------------
Each encoder names a timm architecture and the keyword arguments of its model card (`TimmArch`). The
``config.json`` that comes with the weights (from the hub, or beside a ``--weights`` file or in a
``--weights`` folder), in timm's hub format ``{"architecture", "model_args", "pretrained_cfg"}``, overrides
those kwargs key by key, as ``timm.create_model("hf-hub:...")`` lets a repo's ``model_args`` override an
architecture's defaults (``timm/models/_hub.py::_parse_model_cfg``, ``_factory.py::_resolve_model_source``).
Where this differs from timm, on purpose:

* timm lets the caller's kwargs win over ``model_args`` (it merges with ``setdefault``); here the config wins
  over the model card's kwargs, so a config always describes the weights it ships with (a re-export, or the
  reduced-depth models of the tests). The published configs agree with the model cards (Virchow2's lists
  img_size, init_values, reg_tokens, mlp_ratio, global_pool, dynamic_img_size; GigaPath's the whole
  definition, which is why its card passes no kwargs), so both orders build the same model for them.
* ``num_classes``, ``global_pool``, ``features_only`` and ``out_indices`` always come from the spec: they
  choose what the pooling below reads, not what the weights are.
* Layer classes cannot be written in JSON. The real Virchow configs omit them (their cards pass
  ``mlp_layer=SwiGLUPacked, act_layer=SiLU`` in code); some exports write dotted names such as
  ``"timm.layers.SwiGLUPacked"``. Those are looked up in a fixed table, never imported by name.
* The architecture a config names must be the spec's: weights of another model are refused up front.

The model is built on the meta device (a 1.1 B-parameter ViT otherwise spends ~34 s on 2 CPU cores drawing
random weights that are then overwritten), the embedding length is checked against the spec, and the weight
file is loaded strictly with ``assign=True``, then kept in fp32 (extraction runs it under autocast in the
spec's precision on CUDA).

Inputs and precision follow HEST-Benchmark's model zoo (mahmoodlab/HEST
``src/hest/bench/cpath_model_zoo/inference_models.py``), whose numbers the published tables repeat:

* Prov-GigaPath gets its card's Resize(256, bicubic) then CenterCrop(224) on a PIL image of the 224 px patch
  (``resize_to=256, resample="pil"``): it magnifies to 0.4375 um/px and drops the border, as the reference does.
  The others take the 224 px patch as it is.
* Precision (autocast on CUDA): fp32 for ResNet-50, GigaPath and Virchow; fp16 for UNI, Virchow2 and
  H-optimus-0. ``bench run --precision`` overrides it; the precision is part of the embeddings' fingerprint.
  stbench ran GigaPath and Virchow in fp16 before (``untagged_precision="fp16"``), so their fp32 embeddings
  are keyed apart from those (`stbench.encoders.compute_tag`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stbench.encoders._base import Encoder, EncoderSpec, register_encoder
from stbench.encoders.weights import ResolvedWeights, WeightsSource
from stbench.errors import WeightsError

if TYPE_CHECKING:
    import torch

__all__ = ["TimmArch", "ARCHS", "ENCODERS", "model_args", "build_embedder", "embed_dim_of"]

# What the pooling reads: fixed by the spec, whatever a config.json says.
PINNED = ("num_classes", "global_pool", "features_only", "out_indices")
# kwargs whose values are classes; a dotted string there is looked up in `_layer_table`.
LAYER_KWARGS = ("mlp_layer", "act_layer", "norm_layer", "embed_layer", "block_fn")
SWIGLU = {"mlp_layer": "timm.layers.SwiGLUPacked", "act_layer": "torch.nn.SiLU"}


@dataclass(frozen=True)
class TimmArch:
    """A timm architecture with its model card's kwargs, and how its output becomes one vector."""

    name: str  # timm architecture, without a weights tag: the weights come from the resolver
    kwargs: Mapping[str, Any]  # model card kwargs; layer classes as dotted names (no torch at import)
    pool: str  # "cls": class token; "cls+mean": class token ++ mean of patch tokens; "gap": mean of the map
    drop: tuple[str, ...] = ()  # state-dict key prefixes of layers the truncated model does not have


def _layer_table() -> dict[str, Any]:
    import timm.layers
    import torch

    return {
        "timm.layers.SwiGLUPacked": timm.layers.SwiGLUPacked,
        "timm.layers.mlp.SwiGLUPacked": timm.layers.SwiGLUPacked,
        "timm.layers.SwiGLU": timm.layers.SwiGLU,
        "timm.layers.GluMlp": timm.layers.GluMlp,
        "timm.layers.Mlp": timm.layers.Mlp,
        "torch.nn.SiLU": torch.nn.SiLU,
        "torch.nn.GELU": torch.nn.GELU,
        "torch.nn.LayerNorm": torch.nn.LayerNorm,
    }


def model_args(arch: TimmArch, config: Mapping[str, Any] | None = None, *,
               where: str = "config.json") -> dict[str, Any]:
    """The kwargs for ``timm.create_model(arch.name, ...)``: the model card's, overridden by the config's
    ``model_args`` (except `PINNED`), with dotted layer names turned into classes."""
    config = config or {}
    declared = config.get("architecture")
    if isinstance(declared, str) and declared.split(".")[0] != arch.name:
        raise WeightsError(f"{where} describes a {declared} but this encoder is a {arch.name}: "
                           f"these weights belong to another model")
    overrides = config.get("model_args") or {}
    if not isinstance(overrides, Mapping):
        raise WeightsError(f"{where}: model_args must be an object of keyword arguments, not {overrides!r}")
    args = {**arch.kwargs, **{k: v for k, v in overrides.items() if k not in PINNED}}
    named = [k for k in LAYER_KWARGS if isinstance(args.get(k), str) and "." in args[k]]
    if named:
        table = _layer_table()
        for key in named:
            if args[key] not in table:
                known = ", ".join(sorted(table))
                raise WeightsError(f"{where}: {key}={args[key]!r} is not a layer stbench knows (known: {known})")
            args[key] = table[args[key]]
    return args


def _cls(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.forward_features(x)[:, 0]


def _cls_mean(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    import torch

    tokens = net.forward_features(x)
    # num_prefix_tokens = class token + register tokens: Virchow averages tokens 1:, Virchow2 tokens 5:
    return torch.cat([tokens[:, 0], tokens[:, net.num_prefix_tokens :].mean(dim=1)], dim=-1)


def _gap(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net(x)[-1].mean(dim=(2, 3))  # features_only returns the list of requested maps


POOLS = {"cls": _cls, "cls+mean": _cls_mean, "gap": _gap}


def embed_dim_of(net: torch.nn.Module, pool: str) -> int:
    """The embedding length ``pool`` makes from ``net``, read from its attributes (works on meta)."""
    if pool == "gap":
        return int(net.feature_info.channels()[-1])
    return int(net.embed_dim) * (2 if pool == "cls+mean" else 1)


def build_embedder(arch: TimmArch, config: Mapping[str, Any] | None = None, *,
                   where: str = "config.json"):  # noqa: ANN201
    """``Embedder(net, pool)`` with random (or, under ``torch.device("meta")``, no) weights."""
    import timm

    from stbench.encoders._torch import Embedder

    args = model_args(arch, config, where=where)
    try:
        net = timm.create_model(arch.name, pretrained=False, **args)
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        raise WeightsError(f"cannot build {arch.name} from {where} ({type(exc).__name__}: {exc})") from exc
    return Embedder(net, POOLS[arch.pool])


def _read_state(name: str, arch: TimmArch, path: Path) -> dict[str, torch.Tensor]:
    import torch

    from stbench.encoders._torch import load_state_dict_file

    try:
        state = load_state_dict_file(path)
    except Exception as exc:  # noqa: BLE001 - pickle, safetensors and OS errors alike: not a usable file
        raise WeightsError(f"{name}: cannot read {path} as a state dict ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, Mapping):
        raise WeightsError(f"{name}: {path} holds a {type(state).__name__}, not a state dict")
    odd = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if odd is not None:
        raise WeightsError(f"{name}: {path} is not a flat state dict ({odd!r} holds a {type(state[odd]).__name__}, "
                           f"not a tensor); save the model's own state_dict()")
    if arch.drop:
        state = {k: v for k, v in state.items() if not k.startswith(arch.drop)}
    return dict(state)


def _check_fit(name: str, arch: TimmArch, net: torch.nn.Module, state: Mapping[str, Any], path: Path) -> None:
    """Compare keys and shapes first, so a mismatch is one line, not torch's page of keys."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    kinds = (("missing", missing), ("unexpected", unexpected), ("wrong-shape", wrong))
    problems = [f"{len(keys)} {what} keys ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                for what, keys in kinds if keys]
    if problems:
        raise WeightsError(f"{name}: {path} does not fit {arch.name} as configured: {'; '.join(problems)}; "
                           f"pass the weights of {name}, or fix model_args in the config.json beside them")


def _loader(spec: EncoderSpec, arch: TimmArch):  # noqa: ANN202
    def load(weights: ResolvedWeights):  # noqa: ANN202
        import torch

        if weights.random_seed is not None:  # the random-weight control: timm's own init, nothing loaded
            return build_embedder(arch, None, where=f"the {spec.name} model card kwargs")
        cfg_path = weights.path.with_name("config.json")
        where = f"{cfg_path} ({weights.origin})" if weights.config else f"the {spec.name} model card kwargs"
        with torch.device("meta"):  # no random init; shapes only
            model = build_embedder(arch, weights.config, where=where)
        dim = embed_dim_of(model.net, arch.pool)
        if dim != spec.embed_dim:
            raise WeightsError(f"{spec.name}: {where} builds a {arch.name} giving {dim}-d embeddings, but "
                               f"{spec.name} embeddings are {spec.embed_dim}-d; these weights are for another model")
        if any(m._non_persistent_buffers_set for m in model.modules()):  # a buffer no checkpoint would fill
            model = build_embedder(arch, weights.config, where=where)
        state = _read_state(spec.name, arch, weights.path)
        _check_fit(spec.name, arch, model.net, state, weights.path)
        model.net.load_state_dict(state, strict=True, assign=True)
        return model.float()  # fp16 checkpoints too: weights stay fp32, autocast picks the precision

    load.__qualname__ = f"load_{spec.name.replace('-', '_')}"
    return load


ARCHS: dict[str, TimmArch] = {
    # The truncation: layer4 and the classifier of the ImageNet checkpoint are not part of the model.
    "resnet50": TimmArch("resnet50", {"features_only": True, "out_indices": [3]}, "gap",
                         drop=("layer4.", "fc.")),
    "uni": TimmArch("vit_large_patch16_224", {"img_size": 224, "patch_size": 16, "init_values": 1e-5,
                                              "num_classes": 0, "dynamic_img_size": True}, "cls"),
    "virchow": TimmArch("vit_huge_patch14_224", {"mlp_ratio": 5.3375, "init_values": 1e-5, "global_pool": "",
                                                 "num_classes": 0, "dynamic_img_size": True, **SWIGLU},
                        "cls+mean"),
    "virchow2": TimmArch("vit_huge_patch14_224", {"mlp_ratio": 5.3375, "init_values": 1e-5, "global_pool": "",
                                                  "num_classes": 0, "dynamic_img_size": True, "reg_tokens": 4,
                                                  **SWIGLU}, "cls+mean"),
    "gigapath": TimmArch("vit_giant_patch14_dinov2", {"img_size": 224, "patch_size": 16, "embed_dim": 1536,
                                                      "depth": 40, "num_heads": 24, "mlp_ratio": 5.33334,
                                                      "init_values": 1e-5, "num_classes": 0}, "cls"),
    "hoptimus0": TimmArch("vit_giant_patch14_reg4_dinov2", {"img_size": 224, "init_values": 1e-5,
                                                            "num_classes": 0, "global_pool": "token"}, "cls"),
}


def _hub(repo: str, files: tuple[str, ...] = ("pytorch_model.bin",)) -> WeightsSource:
    return WeightsSource(hub=repo, files=files, page=f"https://huggingface.co/{repo}")


SPECS: tuple[EncoderSpec, ...] = (
    EncoderSpec(
        name="resnet50", aliases=("resnet50-trunc", "resnet50-tv-in1k"), embed_dim=1024, precision="fp32",
        pooling="global average of layer3 (1024 x 14 x 14): the CLAM truncation",
        weights="hf.co/timm/resnet50.tv_in1k (torchvision ImageNet-1k)", license="BSD-3-Clause",
        paper="He et al. 2016, Deep Residual Learning (CVPR); layer3 truncation: Lu et al. 2021, CLAM "
              "(Nat Biomed Eng)",
        random_init=True, code="timm", source=_hub("timm/resnet50.tv_in1k", ("model.safetensors", "pytorch_model.bin")),
    ),
    EncoderSpec(
        name="uni", aliases=("uni-v1", "uni1"), embed_dim=1024, precision="fp16", untagged_precision="fp16", gated=True,
        pooling="class token of forward_features", weights="hf.co/MahmoodLab/UNI (gated)",
        license="CC-BY-NC-ND-4.0",
        paper="Chen et al. 2024, Towards a general-purpose foundation model for computational pathology (Nat Med)",
        random_init=True, code="timm", source=_hub("MahmoodLab/UNI"),
    ),
    EncoderSpec(
        name="virchow", aliases=("virchow-v1", "virchow1"), embed_dim=2560, precision="fp32",
        untagged_precision="fp16", gated=True,
        interpolation="bicubic", pooling="class token ++ mean of patch tokens 1: (1280 + 1280)",
        weights="hf.co/paige-ai/Virchow (gated)", license="Apache-2.0",
        paper="Vorontsov et al. 2024, A foundation model for clinical-grade computational pathology (Nat Med)",
        random_init=True, code="timm", source=_hub("paige-ai/Virchow"),
    ),
    EncoderSpec(
        name="virchow2", aliases=("virchow-v2",), embed_dim=2560, precision="fp16", untagged_precision="fp16",
        gated=True,
        interpolation="bicubic", pooling="class token ++ mean of patch tokens 5: (skips 4 register tokens)",
        weights="hf.co/paige-ai/Virchow2 (gated)", license="CC-BY-NC-ND-4.0",
        paper="Zimmermann et al. 2024, Virchow2: scaling self-supervised mixed magnification models "
              "(arXiv:2408.00738)",
        random_init=True, code="timm", source=_hub("paige-ai/Virchow2"),
    ),
    EncoderSpec(
        name="gigapath", aliases=("prov-gigapath", "provgigapath"), embed_dim=1536, precision="fp32",
        untagged_precision="fp16", gated=True, interpolation="bicubic", resize_to=256, resample="pil",
        pooling="class token of forward_features (patch resized to 256 with PIL bicubic, centre crop 224)",
        weights="hf.co/prov-gigapath/prov-gigapath (gated)", license="Apache-2.0",
        paper="Xu et al. 2024, A whole-slide foundation model for digital pathology from real-world data (Nature)",
        random_init=True, code="timm", source=_hub("prov-gigapath/prov-gigapath"),
    ),
    EncoderSpec(
        name="hoptimus0", aliases=("h-optimus-0", "hoptimus-0"), embed_dim=1536, precision="fp16",
        untagged_precision="fp16",
        mean=(0.707223, 0.578729, 0.703617), std=(0.211883, 0.230117, 0.177517),
        pooling="class token of forward_features", weights="hf.co/bioptimus/H-optimus-0", license="Apache-2.0",
        paper="Saillard et al. 2024, H-optimus-0 (Bioptimus; github.com/bioptimus/releases)",
        random_init=True, code="timm", source=_hub("bioptimus/H-optimus-0"),
    ),
)

ENCODERS: dict[str, Encoder] = {
    spec.name: register_encoder(spec)(_loader(spec, ARCHS[spec.name])) for spec in SPECS
}
