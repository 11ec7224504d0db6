"""The encoder contract: `EncoderSpec` (data) + a loader (one function), and the registry."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stbench._registry import Registry

if TYPE_CHECKING:
    import torch

__all__ = ["EncoderSpec", "Encoder", "LoadedEncoder", "encoders", "register_encoder", "get_encoder", "list_encoders", "file_fingerprint"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """Everything about an encoder except its code: read by the extraction pipeline and `bench list`."""

    name: str  # registry key, lower-case with dashes
    embed_dim: int  # length of one patch embedding
    weights: str  # where the weights come from (hub id, wheel, file)
    license: str
    input_size: int = 224  # patches are resized to this on the device
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # used only when input_size differs from the patch size
    precision: str = "fp32"  # autocast dtype on CUDA: fp32, fp16 or bf16
    pooling: str = "model output"  # how a patch becomes one vector
    gated: bool = False  # weights need an access request on the hub
    aliases: tuple[str, ...] = ()
    requires: str | None = None  # pip extra that provides code not on PyPI, e.g. "stbench[conch]"
    paper: str = ""


@dataclass
class LoadedEncoder:
    """A ready model: ``model(x)`` maps normalised (B, 3, S, S) float images to (B, embed_dim)."""

    spec: EncoderSpec
    model: torch.nn.Module
    fingerprint: str  # hash of the weight file or the hub revision: embeddings are keyed by it
    weights_path: str | None = None


@dataclass(frozen=True)
class Encoder:
    """A registered encoder: its spec and ``loader(weights: Path | None) -> (model, fingerprint, path)``."""

    spec: EncoderSpec
    loader: Callable[[Path | None], tuple[Any, str, str | None]] = field(compare=False)
    available: Callable[[], bool] = field(default=lambda: True, compare=False)  # weights on this machine?
    fingerprinter: Callable[[Path | None], str] | None = field(default=None, compare=False)  # without loading


    @property
    def name(self) -> str:
        return self.spec.name

    def fingerprint(self, weights: str | Path | None = None) -> str:
        """The weights fingerprint, cheaply when the plugin can tell it without building the model."""
        if self.fingerprinter is not None:
            return self.fingerprinter(Path(weights) if weights else None)
        return self.load(weights).fingerprint

    def load(self, weights: str | Path | None = None) -> LoadedEncoder:
        """Build the model with weights (``weights`` overrides the default source), in eval mode on CPU."""
        model, fingerprint, path = self.loader(Path(weights) if weights else None)
        model.eval()
        return LoadedEncoder(self.spec, model, fingerprint, path)


encoders: Registry[Encoder] = Registry(
    kind="encoder",
    group="stbench.encoders",
    builtin_modules=("stbench.encoders.efficientnet_lite",),
    key=lambda e: (e.spec.name, e.spec.aliases),
)


def register_encoder(
    spec: EncoderSpec,
    *,
    available: Callable[[], bool] | None = None,
    fingerprint: Callable[[Path | None], str] | None = None,
) -> Callable:
    """Decorator: register ``loader`` under ``spec.name``; returns the `Encoder` (usable as an entry point).

    ``available`` says whether weights are on this machine; ``fingerprint`` gives the weights fingerprint
    without building the model (so cached embeddings are found without loading anything).
    """

    def wrap(loader: Callable) -> Encoder:
        enc = Encoder(spec, loader, available or (lambda: True), fingerprint)
        encoders.register(enc, origin=f"{loader.__module__}.{loader.__qualname__}")
        return enc

    return wrap


def get_encoder(name: str) -> Encoder:
    return encoders.get(name)


def list_encoders() -> list[Encoder]:
    return [encoders.get(n) for n in encoders.names()]


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_fingerprint(path: Path) -> str:
    """``sha256:<first 16 hex>`` of a weight file (cached per path, size and mtime)."""
    st = path.stat()
    return "sha256:" + _sha256(str(path), st.st_size, st.st_mtime)[:16]
