"""State-dict helpers for encoders whose checkpoints are not in timm's layout; imported inside loaders."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stbench.errors import WeightsError

if TYPE_CHECKING:
    import torch

__all__ = ["read_checkpoint", "unwrap", "strip_prefix", "load_strict"]


def read_checkpoint(path: Path, name: str) -> dict[str, Any]:
    """A checkpoint file as a dict (tensors only; a pickle holding code objects is refused, never run)."""
    from stbench.encoders._torch import load_state_dict_file

    try:
        state = load_state_dict_file(path)
    except Exception as exc:  # noqa: BLE001 - unpickling and safetensors errors have no common base
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        msg = f"{name}: cannot read weights {path} ({first}); is it the right, complete file?"
        raise WeightsError(msg) from exc
    if not isinstance(state, Mapping):
        raise WeightsError(f"{name}: {path} holds a {type(state).__name__}, not a state dict")
    return dict(state)


def unwrap(state: dict[str, Any], *wrappers: str) -> dict[str, Any]:
    """The state dict inside checkpoint wrappers such as ``{"model": {...}}`` or ``{"state_dict": ...}``."""
    for key in wrappers:
        inner = state.get(key)
        if isinstance(inner, Mapping):
            state = dict(inner)
    return state


def strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Remove ``prefix`` from every key that has it (``module.`` from DataParallel saves, ``vit.`` ...)."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def _some(keys: Iterable[str], n: int = 3) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, name: str, path: Path,
                assign: bool = False) -> None:
    """``model.load_state_dict(state, strict=True)``, with a one-line error naming what does not fit.
    ``assign``: the tensors replace the model's (a model built on the meta device)."""
    own = model.state_dict()
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    shapes = [k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected {_some(unexpected)}")
    if shapes:
        k = sorted(shapes)[0]
        problems.append(f"shape of {k} is {tuple(state[k].shape)}, expected {tuple(own[k].shape)} "
                        f"({len(shapes)} tensors differ)")
    if problems:
        raise WeightsError(f"{name}: the weights in {path} do not fit the {name} architecture: "
                           f"{'; '.join(problems)}; pass the original weight file with --weights")
    model.load_state_dict(state, strict=True, assign=assign)
