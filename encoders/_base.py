"""The encoder contract: `EncoderSpec` (data) + a loader (one function), and the registry."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stbench._registry import Registry
from stbench.errors import StbenchError, WeightsError
from stbench.encoders.weights import (
    ResolvedWeights,
    WeightsSource,
    local_weights_fingerprint,
    resolve_weights,
    weights_location,
)

if TYPE_CHECKING:
    import torch

__all__ = ["EncoderSpec", "Encoder", "LoadedEncoder", "encoders", "register_encoder", "get_encoder", "list_encoders",
           "sha256_file", "PRECISIONS", "compute_tag"]

log = logging.getLogger("stbench")

PRECISIONS = ("fp32", "fp16", "bf16")
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
    input_size: int = 224  # the model's input (S x S); patches of another size are resized (see resample)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # used only when the patch is resized (input_size or resize_to differ from it)
    resize_to: int | None = None  # resize the shorter side to this, then centre-crop input_size (GigaPath: 256/224)
    resample: str = "torch"  # "torch": float resize on the device; "pil": PIL on the uint8 patch, per patch on the
    #                          CPU, as torchvision's Resize of a PIL image does in the reference code
    precision: str = "fp32"  # autocast dtype on CUDA: fp32, fp16 or bf16 (HEST-Benchmark's choice per encoder)
    untagged_precision: str = "fp32"  # the precision fingerprints without a precision tag stand for (see compute_tag)
    pooling: str = "model output"  # how a patch becomes one vector
    gated: bool = False  # weights need an access request on the hub
    aliases: tuple[str, ...] = ()
    code: str = "timm"  # where the architecture's code comes from
    requires: str | None = None  # pip extra that provides code not on PyPI, e.g. "stbench[conch]"
    paper: str = ""
    random_init: bool = False  # the loader can build the architecture with random weights (--weights random)
    known_sha256: tuple[str, ...] = ()  # sha256 of published weight files of this encoder: another encoder
    #                                     given one of them warns (CTransPath's and CHIEF's files share all keys)


def compute_tag(spec: EncoderSpec) -> str:
    """What an embedding's fingerprint adds to its weights' fingerprint for how patches were computed:
    ``+<precision>`` and ``+<resampler><size>[crop<size>][-<filter>]``, so results under other settings never mix.

    Empty for the settings stbench keyed embeddings under before precision and transforms entered the
    fingerprint (issue 13): the spec's ``untagged_precision`` (fp16 where stbench's default was fp16) and the
    plain on-device resize. Stored embeddings of unchanged settings therefore keep their keys.
    """
    tag = f"+{spec.precision}" if spec.precision != spec.untagged_precision else ""
    if spec.resample != "torch" or spec.resize_to:
        size = spec.resize_to or spec.input_size
        tag += f"+{spec.resample}{size}" + (f"crop{spec.input_size}" if size != spec.input_size else "")
        if spec.interpolation != "bicubic":  # the filter changes the pixels too (bicubic: the keys stored before)
            tag += f"-{spec.interpolation}"
    return tag


@dataclass
class LoadedEncoder:
    """A ready model: ``model(x)`` maps normalised (B, 3, S, S) float images to (B, embed_dim)."""

    spec: EncoderSpec
    model: torch.nn.Module
    fingerprint: str  # the weights' (file hash or hub revision) + compute_tag: embeddings are keyed by it
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
        resolved = resolve_weights(self.spec, weights)
        _warn_if_foreign(self.spec, resolved)
        return resolved

    def fingerprint(self, weights: str | Path | None = None) -> str:
        """What this encoder's embeddings are keyed by: the weights' fingerprint and `compute_tag`."""
        return self.resolve(weights).fingerprint + compute_tag(self.spec)

    def local_fingerprint(self) -> str | None:
        """`fingerprint` of the weights found on this machine without a download, or None (no network)."""
        found = local_weights_fingerprint(self.spec)
        return None if found is None else found + compute_tag(self.spec)

    def with_precision(self, precision: str | None) -> Encoder:
        """This encoder run in ``precision`` (``--precision``) instead of its default; None: unchanged."""
        if precision is None or precision == self.spec.precision:
            return self
        if precision not in PRECISIONS:
            raise StbenchError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        return Encoder(replace(self.spec, precision=precision), self.loader)

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
        return LoadedEncoder(self.spec, model, resolved.fingerprint + compute_tag(self.spec), str(resolved.path),
                             resolved.origin)

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
                     "stbench.encoders.ctranspath", "stbench.encoders.timm_models", "stbench.encoders.timm_recent",
                     "stbench.encoders.dinov2_hf", "stbench.encoders.gpfm", "stbench.encoders.conch_v15"),
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


def get_encoder(name: str, *, precision: str | None = None) -> Encoder:
    """The registered encoder ``name`` (or alias), in ``precision`` when given (else its spec's)."""
    return encoders.get(name).with_precision(precision)


_warned: set[tuple[str, str]] = set()


def _warn_if_foreign(spec: EncoderSpec, resolved: ResolvedWeights) -> None:
    """Warn (once per process) when the weight file is a known file of another encoder."""
    if not resolved.fingerprint.startswith("sha256:") or (spec.name, resolved.fingerprint) in _warned:
        return
    digest = resolved.fingerprint.removeprefix("sha256:")
    for other in list_encoders():
        if other.name != spec.name and any(d.startswith(digest) for d in other.spec.known_sha256):
            _warned.add((spec.name, resolved.fingerprint))
            log.warning("%s: %s is the published weight file of %s (sha256 %s...), not of %s: its embeddings would "
                        "be stored as %s's; run it as --encoder %s", spec.name, resolved.path, other.name, digest,
                        spec.name, spec.name, other.name)


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
