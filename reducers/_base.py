"""The reducer contract and registry.

A reducer sees the whole training fold (`TrainFold`: embeddings, all-gene raw-count AnnData, coordinates,
sample ids) in ``fit`` and only embeddings in ``transform``: the test fold cannot leak into anything fitted.
Options are a dataclass, so they are typed, defaulted, listed by `bench list reducers` and hashed into
each result's key.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, get_type_hints

import numpy as np

from stbench._registry import Registry
from stbench.errors import StbenchError

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["SelectionCache", "TrainFold", "Reducer", "reducers", "register_reducer", "create_reducer", "list_reducers", "parse_options"]


class SelectionCache(Protocol):
    """Where a reducer keeps gene selections (HVGs, SVGs) of a fold between runs; the runner gives one
    bound to the store, the task and the fold. ``key`` must name every input of the selection."""

    def get(self, kind: str, key: dict[str, Any]) -> dict[str, Any] | None: ...

    def put(self, kind: str, key: dict[str, Any], value: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class TrainFold:
    """Everything a reducer may learn from: the training samples of one fold, nothing else."""

    X: np.ndarray  # (n_spots, n_features) embeddings, float32
    expression: AnnData  # raw counts, all genes; obs rows align with X; obs["sample_id"]
    coords: np.ndarray  # (n_spots, 2) patch coordinates in full-resolution pixels
    sample_ids: np.ndarray  # (n_spots,) which training sample each spot comes from
    seed: int = 1
    task: str = ""
    encoder: str = ""
    fold: int = 0
    device: str | None = None  # where trainable reducers run: None/"auto" = CUDA when present
    cache: SelectionCache | None = None
    progress: Any = None  # a rich Progress for long fits (add a task, advance it, remove it), or None


class Reducer(ABC):
    """Subclass, set ``name`` and an ``Options`` dataclass, implement ``fit`` and ``transform``."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    # Bumped when the same options can give other numbers (a changed algorithm or numerics): part of every
    # result's identity from 2 on, so results made by another implementation are never read back as these.
    version: ClassVar[int] = 1

    @dataclass(frozen=True)
    class Options:
        pass

    def __init__(self, **options: Any) -> None:
        self.options = parse_options(self.Options, options, reducer=self.name)

    @abstractmethod
    def fit(self, train: TrainFold) -> Reducer:
        """Learn from the training fold only; return self."""

    @abstractmethod
    def transform(self, X: np.ndarray) -> np.ndarray:
        """Map embeddings (n, d) to features (n, k)."""

    def fit_transform(self, train: TrainFold) -> np.ndarray:
        """``fit``, then the training fold's features. A reducer whose fit yields them itself overrides this
        (PCA: scikit-learn's ``fit_transform``, as HEST computes its training features)."""
        return self.fit(train).transform(train.X)

    def resolve(self, *, task: str, encoder: str) -> None:  # noqa: B027 - optional hook
        """Fill defaults that depend on the task or encoder before the run's identity is computed."""

    def report(self) -> dict[str, Any]:
        """What the last ``fit`` wants recorded beside the fold's results (JSON-able); stored in the catalog."""
        return {}

    def describe_report(self) -> str:
        """``report()`` as one line for the run log."""
        return ""

    def save(self, path: Path) -> Path | None:
        """Write the fitted state to ``path`` if the reducer has one worth keeping; return where, or None."""
        return None

    @classmethod
    def variant_label(cls, options: Mapping[str, Any], *, task: str = "", encoder: str = "") -> str:
        """The stored options that differ from this reducer's defaults, as ``k=v`` (empty for defaults)."""
        defaults = {f.name: f.default for f in dataclasses.fields(cls.Options)}
        return " ".join(f"{k}={v}" for k, v in sorted(options.items()) if k in defaults and defaults[k] != v)

    def options_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.options)

    def options_key(self) -> str:
        """Canonical JSON of the options: part of every stored result's identity."""
        return json.dumps(self.options_dict(), sort_keys=True, separators=(",", ":"))


def _coerce(value: Any, typ: Any, *, reducer: str, key: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if typ in (int, "int"):
            return int(value)
        if typ in (float, "float"):
            return float(value)
        if typ in (bool, "bool"):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
    except ValueError:
        raise StbenchError(f"reducer {reducer}: option {key}={value!r} is not a valid {getattr(typ, '__name__', typ)}") from None
    return value


def parse_options(options_cls: type, values: Mapping[str, Any], *, reducer: str) -> Any:
    """Build the options dataclass from ``values`` (strings from the command line are converted)."""
    hints = get_type_hints(options_cls)
    fields = {f.name for f in dataclasses.fields(options_cls)}
    unknown = set(values) - fields
    if unknown:
        valid = ", ".join(sorted(fields)) or "none"
        raise StbenchError(f"reducer {reducer}: unknown option(s) {', '.join(sorted(unknown))}; valid: {valid}")
    return options_cls(**{k: _coerce(v, hints.get(k), reducer=reducer, key=k) for k, v in values.items()})


reducers: Registry[type[Reducer]] = Registry(
    kind="reducer",
    group="stbench.reducers",
    builtin_modules=("stbench.reducers.identity", "stbench.reducers.pca", "stbench.reducers.bpbooster"),
    key=lambda cls: (cls.name, cls.aliases),
)


def register_reducer(cls: type[Reducer]) -> type[Reducer]:
    """Class decorator: add a reducer to the registry under ``cls.name``."""
    reducers.register(cls, origin=f"{cls.__module__}.{cls.__qualname__}")
    return cls


def create_reducer(name: str, **options: Any) -> Reducer:
    return reducers.get(name)(**options)


def list_reducers() -> list[type[Reducer]]:
    return [reducers.get(n) for n in reducers.names()]
