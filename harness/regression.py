"""Ridge regression from features to expression: HEST's reference solver and an exact one.

- ``lsqr`` is scikit-learn's ``Ridge(solver="lsqr", fit_intercept=False, max_iter=1000)``, exactly what the
  HEST reference runs. Its iterations stop early on ill-conditioned problems (raw embeddings with few
  training spots), and the published numbers include that early stop, so it is the HEST default. It fits in
  float32 by default, as the reference does (it passes float32 embeddings, and scikit-learn fits in the dtype
  of X): where lsqr stops early the dtype changes where it stops (HER2ST identity, fold 0: 0.0264 in float32,
  0.0184 in float64). ``dtype="float64"`` is the option.
- ``exact`` solves the normal equations in float64 with torch (GPU when present): the ridge solution itself.
- ``cv_alpha`` picks alpha by cross-validation inside the training fold, grouped by sample, computing every
  candidate alpha from one eigendecomposition per split.

All functions take and return numpy arrays.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["SOLVERS", "DTYPES", "CV_ALPHAS", "SWEEP_ALPHAS", "RidgeFit", "hest_alpha", "fit_ridge", "cv_alpha",
           "cv_splits", "default_dtype", "ridge_path"]

SOLVERS = ("lsqr", "exact")
DTYPES = ("float32", "float64")  # what lsqr fits in; exact and cv_alpha always use float64
# Candidates for --alpha cv: 0.5-decade steps wide enough to reach the ~5e3 users found on HEST tasks.
CV_ALPHAS = tuple(float(a) for a in np.logspace(-3, 7, 21))
# --alpha sweep: 1e-6 .. 1e8 in half decades (29 points), past HEST's ~1e-4 and the CV choices seen (~5e3)
SWEEP_ALPHAS = (1e-6, 1e8, 29)


def hest_alpha(n_features: int, n_genes: int) -> float:
    """HEST's alpha rule: ``100 / (n_features * n_genes)`` (nearly unregularised)."""
    return 100.0 / (n_features * n_genes)


@dataclass(frozen=True)
class RidgeFit:
    """A fitted ridge: ``predict(X) = X @ coef + intercept``."""

    coef: np.ndarray  # (n_features, n_genes), in the dtype of the fit
    intercept: np.ndarray  # (n_genes,), zeros without --intercept
    alpha: float
    solver: str

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions in the fit's dtype (as scikit-learn's ``predict``), returned as float32."""
        return (np.asarray(X, dtype=self.coef.dtype) @ self.coef + self.intercept).astype(np.float32)


def default_dtype(solver: str) -> str:
    """lsqr fits in float32 (HEST's reference); the exact solver in float64."""
    return "float32" if solver == "lsqr" else "float64"


def _device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _center(X: np.ndarray, Y: np.ndarray, intercept: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if not intercept:
        return X, Y, np.zeros(X.shape[1]), np.zeros(Y.shape[1])
    xm, ym = X.mean(axis=0), Y.mean(axis=0)
    return X - xm, Y - ym, xm, ym


def _exact(X: np.ndarray, Y: np.ndarray, alpha: float, device: str) -> np.ndarray:
    """Closed-form ridge coefficients in float64: primal (d x d) or dual (n x n), whichever is smaller."""
    import torch

    x = torch.as_tensor(X, dtype=torch.float64, device=device)
    y = torch.as_tensor(Y, dtype=torch.float64, device=device)
    n, d = x.shape
    if n >= d:
        a = x.T @ x
        a.diagonal().add_(alpha)
        w = torch.linalg.solve(a, x.T @ y)
    else:  # kernel form: cheaper when there are fewer spots than features
        k = x @ x.T
        k.diagonal().add_(alpha)
        w = x.T @ torch.linalg.solve(k, y)
    return w.cpu().numpy()


def fit_ridge(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    alpha: float,
    solver: str = "lsqr",
    intercept: bool = False,
    device: str | None = None,
    dtype: str | None = None,
) -> RidgeFit:
    """Fit ridge regression of ``Y`` (spots x genes) on ``X`` (spots x features). ``dtype``: what lsqr fits
    in, float32 (default, HEST's) or float64; the exact solver fits in float64 only."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose from {SOLVERS}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows, Y {Y.shape[0]}")
    dtype = dtype or default_dtype(solver)
    if dtype not in DTYPES or (solver == "exact" and dtype != "float64"):
        raise ValueError(f"dtype {dtype!r}: lsqr fits in float32 or float64, the exact solver in float64")
    if solver == "lsqr":
        from sklearn.linear_model import Ridge

        model = Ridge(alpha=alpha, solver="lsqr", fit_intercept=intercept, max_iter=1000)
        model.fit(np.asarray(X, dtype=dtype), np.asarray(Y, dtype=dtype))  # scikit-learn fits in X's dtype
        coef = np.asarray(model.coef_, dtype=dtype).T.reshape(X.shape[1], Y.shape[1])
        icpt = np.broadcast_to(np.asarray(model.intercept_, dtype=dtype), (Y.shape[1],)).copy()
        return RidgeFit(coef, icpt, float(alpha), solver)
    Xc, Yc, xm, ym = _center(X, Y, intercept)
    coef = _exact(Xc, Yc, alpha, _device(device))
    return RidgeFit(coef, ym - xm @ coef, float(alpha), solver)


def cv_splits(groups: Sequence[str], *, n_splits: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Validation splits inside a training fold: leave one sample out when there are several samples,
    otherwise ``n_splits`` contiguous blocks of spots (patch order follows the tissue, so blocks are
    spatially coherent and neighbouring spots rarely land on both sides)."""
    g = np.asarray(groups)
    names = list(dict.fromkeys(g.tolist()))
    if len(names) >= 2:
        return [(np.flatnonzero(g != s), np.flatnonzero(g == s)) for s in names]
    idx = np.arange(len(g))
    return [(np.setdiff1d(idx, block), block) for block in np.array_split(idx, n_splits)]


def ridge_path(
    X: np.ndarray,
    Y: np.ndarray,
    X_eval: np.ndarray,
    alphas: Sequence[float],
    *,
    intercept: bool = False,
    device: str | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Exact ridge predictions of ``X_eval`` for every alpha, fitted on (``X``, ``Y``) in float64, from one
    symmetric eigendecomposition (of X'X or XX', whichever is smaller): yields ``(alpha, predictions)``."""
    import torch

    dev = _device(device)
    Xt, Yt, xm, ym = _center(X, Y, intercept)
    x = torch.as_tensor(Xt, dtype=torch.float64, device=dev)
    y = torch.as_tensor(Yt, dtype=torch.float64, device=dev)
    xv = torch.as_tensor(np.asarray(X_eval, dtype=np.float64) - xm, device=dev)
    n, d = x.shape
    if n >= d:
        lam, v = torch.linalg.eigh(x.T @ x)
        proj = v.T @ (x.T @ y)  # (d, g)
        xv_v = xv @ v  # predictions = xv V diag(1/(lam+a)) V' X'y
    else:
        lam, v = torch.linalg.eigh(x @ x.T)
        proj = v.T @ y  # (n, g)
        xv_v = (xv @ x.T) @ v  # predictions = xv X' V diag(1/(lam+a)) V' y
    yield from _path(lam, proj, xv_v, ym, alphas)


def cv_alpha(
    X: np.ndarray,
    Y: np.ndarray,
    groups: Sequence[str],
    *,
    alphas: Sequence[float] = CV_ALPHAS,
    intercept: bool = False,
    device: str | None = None,
) -> tuple[float, np.ndarray]:
    """Choose alpha by grouped cross-validation: the lowest mean squared error over held-out spots and genes.

    Per split, one symmetric eigendecomposition (`ridge_path`) gives the ridge solution for every alpha.
    Returns the best alpha and the validation MSE of each candidate.
    """
    errors = np.zeros(len(alphas))
    splits = cv_splits(groups)
    if min(len(t) for t, _ in splits) >= X.shape[1]:  # every split primal (d x d): one Gram matrix for all
        paths = _primal_paths(X, Y, splits, alphas, intercept=intercept, device=device)
    else:
        paths = (ridge_path(X[t], Y[t], X[v], alphas, intercept=intercept, device=device) for t, v in splits)
    for (_, val_idx), path in zip(splits, paths):
        yv = np.asarray(Y[val_idx], dtype=np.float64)
        for i, (_, pred) in enumerate(path):
            errors[i] += float(((pred - yv) ** 2).sum())
    errors /= len(Y) * Y.shape[1]
    return float(alphas[int(np.argmin(errors))]), errors


def _primal_paths(
    X: np.ndarray, Y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], alphas: Sequence[float], *,
    intercept: bool, device: str | None,
) -> Iterator[Iterator[tuple[float, np.ndarray]]]:
    """`ridge_path` of each split (training part fitted, validation part predicted) where every training part
    has at least as many spots as features. X'X and X'Y of the whole fold are formed once and each split's
    validation rows subtracted: a split costs (validation spots) x d^2 instead of (training spots) x d^2, most
    of the work when each training sample is a split (the d x d eigendecomposition stays per split). With an
    intercept the fold's features are centred first, so the subtraction loses nothing to large feature means."""
    import torch

    dev = _device(device)
    x = torch.as_tensor(np.asarray(X, dtype=np.float64), device=dev)
    y = torch.as_tensor(np.asarray(Y, dtype=np.float64), device=dev)
    if intercept:  # Y needs no centring: with X centred, a column offset c of Y adds X'1c' = 0 to X'Y
        x = x - x.mean(dim=0)
    gram, xty, sx, sy = x.T @ x, x.T @ y, x.sum(dim=0), y.sum(dim=0)
    for _, val_idx in splits:
        v = torch.as_tensor(val_idx, device=dev)
        xv, yv = x[v], y[v]
        g, xy = gram - xv.T @ xv, xty - xv.T @ yv
        if intercept:  # the training part's own centring: (X - 1m')'(X - 1m) = X'X - n m m'
            n = x.shape[0] - len(val_idx)
            xm, ym = (sx - xv.sum(dim=0)) / n, (sy - yv.sum(dim=0)) / n
            g, xy, xv = g - n * torch.outer(xm, xm), xy - n * torch.outer(xm, ym), xv - xm
            offset = ym.cpu().numpy()
        else:
            offset = np.zeros(y.shape[1])
        lam, vec = torch.linalg.eigh(g)
        yield _path(lam, vec.T @ xy, xv @ vec, offset, alphas)


def _path(lam, proj, xv_v, offset: np.ndarray, alphas: Sequence[float]) -> Iterator[tuple[float, np.ndarray]]:  # noqa: ANN001 - torch tensors
    """Ridge predictions for every alpha from an eigendecomposition: ``xv_v diag(1 / (lam + alpha)) proj``."""
    lam = lam.clamp_min(0)
    for a in alphas:
        yield float(a), (xv_v @ (proj / (lam + a)[:, None])).cpu().numpy() + offset
