"""``identity``: the raw embeddings, unchanged (HEST's "no PCA" setting)."""

from __future__ import annotations

import numpy as np

from stbench.reducers._base import Reducer, TrainFold, register_reducer


@register_reducer
class IdentityReducer(Reducer):
    name = "identity"
    aliases = ("raw", "none")
    description = "raw embeddings, unchanged"

    def fit(self, train: TrainFold) -> IdentityReducer:
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float32)
