"""``pca``: StandardScaler then PCA, fitted on the training fold only (HEST's default reduction)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from stbench.reducers._base import Reducer, TrainFold, register_reducer

log = logging.getLogger("stbench")


@register_reducer
class PCAReducer(Reducer):
    name = "pca"
    description = "StandardScaler + PCA(n_components, random_state=seed) on the training fold (HEST)"

    @dataclass(frozen=True)
    class Options:
        n_components: int = 256  # HEST's latent size

    def fit(self, train: TrainFold) -> PCAReducer:
        self.fit_transform(train)
        return self

    def fit_transform(self, train: TrainFold) -> np.ndarray:
        """Fit, and the training features as HEST computes them (``Pipeline([StandardScaler, PCA]).fit_transform``):
        the scores from the SVD itself, which differ from ``transform`` of the same rows by float32 rounding
        (up to 1e-4 in a gene's PCC on HER2ST)."""
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler

        n, d = train.X.shape
        k = self.options.n_components
        cap = min(n - 1, d)
        if k > cap:
            log.warning(
                "pca: %d components requested but fold %d has %d training spots and %d features; using %d",
                k, train.fold, n, d, cap,
            )
            k = cap
        self.n_components_ = k
        self.scaler_ = StandardScaler().fit(train.X)
        self.pca_ = PCA(n_components=k, random_state=train.seed)
        return self.pca_.fit_transform(self.scaler_.transform(train.X)).astype(np.float32)

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.pca_.transform(self.scaler_.transform(X)).astype(np.float32)
