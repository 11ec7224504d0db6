"""Torch pieces shared by encoder plugins. Imported only inside loaders (never by `bench list`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["Embedder", "load_state_dict_file"]


class Embedder(torch.nn.Module):
    """``forward(x) = pool(net, x)``: a backbone plus the pooling that makes one vector per patch."""

    def __init__(self, net: torch.nn.Module, pool: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.net = net
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.net, x)


def load_state_dict_file(path) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """A state dict from ``.safetensors`` or a torch pickle (weights only, never arbitrary objects)."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state
