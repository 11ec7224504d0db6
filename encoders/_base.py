"""The encoder contract: `EncoderSpec` (data) + a loader (one function), and the registry."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stbench._registry import Registry
from stbench.errors import WeightsError
from stbench.encoders.weights import ResolvedWeights, WeightsSource, resolve_weights, weights_location

if TYPE_CHECKING:
    import torch

__all__ = ["EncoderSpec", "Encoder", "LoadedEncoder", "encoders", "register_encoder", "get_encoder", "list_encoders", "sha256_file"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """Everything about an encoder except its code: read by the extraction pipeline and `bench list`."""

    name: str  # registry key, lower-case with dashes
    embed_dim: int  # length of one patch embedding
    weights: str  # where the weights come from, for people (hub id, wheel, file)
    license: str
    source: WeightsSource | None = None  # where the weights come from, for the resolver
    input_size: int = 224  # patches are resized to this on the device
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # used only when input_size differs from the patch size
    precision: str = "fp32"  # autocast dtype on CUDA: fp32, fp16 or bf16
    pooling: str = "model output"  # how a patch becomes one vector
    gated: bool = False  # weights need an access request on the hub
    aliases: tuple[str, ...] = ()
    code: str = "timm"  # where the architecture's code comes from
    requires: str | None = None  # pip extra that provides code not on PyPI, e.g. "stbench[conch]"
    paper: str = ""
    random_init: bool = False  # the loader can build the architecture with random weights (--weights random)


@dataclass
class LoadedEncoder:
    """A ready model: ``model(x)`` maps normalised (B, 3, S, S) float images to (B, embed_dim)."""

    spec: EncoderSpec
    model: torch.nn.Module
    fingerprint: str  # hash of the weight file or the hub revision: embeddings are keyed by it
    weights_path: str | None = None
    origin: str = ""  # how the weights were found (--weights, config, package, hub)


@dataclass(frozen=True)
class Encoder:
    """A registered encoder: its spec and ``loader(weights: ResolvedWeights) -> torch.nn.Module``."""

    spec: EncoderSpec
    loader: Callable[[ResolvedWeights], Any] = field(compare=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def resolve(self, weights: str | Path | None = None) -> ResolvedWeights:
        """Find the weights (``weights`` overrides every other source); no model is built."""
        return resolve_weights(self.spec, weights)

    def fingerprint(self, weights: str | Path | None = None) -> str:
        return self.resolve(weights).fingerprint

    def available(self) -> str | None:
        """Where weights are on this machine without a download, or None."""
        return weights_location(self.spec)

    def load(self, weights: str | Path | None = None) -> LoadedEncoder:
        """Build the model with its weights, in eval mode on CPU."""
        resolved = self.resolve(weights)
        if resolved.random_seed is None:
            model = self.loader(resolved)
        else:
            model = self._random_model(resolved)
        model.eval()
        return LoadedEncoder(self.spec, model, resolved.fingerprint, str(resolved.path), resolved.origin)

    def _random_model(self, resolved: ResolvedWeights) -> Any:
        import torch

        if not self.spec.random_init:
            able = ", ".join(e.name for e in list_encoders() if e.spec.random_init)
            raise WeightsError(f"{self.name}: random weights are not available for this encoder (they are for: "
                               f"{able}); pass a weight file with --weights")
        with torch.random.fork_rng(devices=[]):  # the same seed gives the same weights, whatever ran before
            torch.manual_seed(resolved.random_seed)
            return self.loader(resolved).float()


encoders: Registry[Encoder] = Registry(
    kind="encoder",
    group="stbench.encoders",
    builtin_modules=("stbench.encoders.efficientnet_lite", "stbench.encoders.phikon", "stbench.encoders.conch",
                     "stbench.encoders.ctranspath", "stbench.encoders.timm_models"),
    key=lambda e: (e.spec.name, e.spec.aliases),
)


def register_encoder(spec: EncoderSpec) -> Callable[[Callable[[ResolvedWeights], Any]], Encoder]:
    """Decorator: register ``loader`` under ``spec.name``; returns the `Encoder` (usable as an entry point).

    The loader receives the resolved weights (file path, config.json contents, fingerprint) and returns
    a torch module mapping normalised images (B, 3, S, S) to embeddings (B, embed_dim).
    """

    def wrap(loader: Callable[[ResolvedWeights], Any]) -> Encoder:
        enc = Encoder(spec, loader)
        encoders.register(enc, origin=f"{loader.__module__}.{loader.__qualname__}")
        return enc

    return wrap


def get_encoder(name: str) -> Encoder:
    return encoders.get(name)


def list_encoders() -> list[Encoder]:
    return [encoders.get(n) for n in encoders.names()]


@lru_cache(maxsize=64)
def sha256_file(path: str, size: int, mtime: float) -> str:
    """sha256 of a file, cached per (path, size, mtime): weight files are read once per process."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
