"""Per-gene metrics and their summaries: plain arrays in, plain numbers out.

HEST's rules: Pearson per gene over all test spots of a fold (pooled, not per sample); a fold's score is
the mean over genes; a task's score is the mean and the population standard deviation over folds.
A constant prediction or truth has no correlation: it is NaN here, stored as NaN and counted, never
replaced by zero and never dropped without saying so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["pearson_per_gene", "mse_per_gene", "per_sample_pearson", "FoldSummary", "summarise_fold", "top_k_mean", "task_summary",
           "per_sample_fold_score", "per_sample_task_summary"]

TOP_K = (10, 50, 200)


def pearson_per_gene(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column (gene) of ``y_true`` and ``y_pred`` (n_spots x n_genes).

    NaN where either column is constant (zero variance) or fewer than two spots.
    """
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 2:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} must be equal 2-D shapes")
    if t.shape[0] < 2:
        return np.full(t.shape[1], np.nan)
    tc = t - t.mean(axis=0)
    pc = p - p.mean(axis=0)
    tn = np.sqrt((tc**2).sum(axis=0))
    pn = np.sqrt((pc**2).sum(axis=0))
    # A column whose spread is at rounding level of its mean is constant: scipy warns and gives NaN too.
    scale_t = np.abs(t).max(axis=0) * np.sqrt(t.shape[0]) * 1e-12
    scale_p = np.abs(p).max(axis=0) * np.sqrt(p.shape[0]) * 1e-12
    const = (tn <= scale_t) | (pn <= scale_p)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (tc * pc).sum(axis=0) / (tn * pn)
    r = np.clip(r, -1.0, 1.0)
    r[const] = np.nan
    return r


def mse_per_gene(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Mean squared error of each gene over spots."""
    d = np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
    return (d**2).mean(axis=0)


def per_sample_pearson(y_true: np.ndarray, y_pred: np.ndarray, sample_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-gene Pearson within each test sample: ``{sample_id: r (n_genes,)}``."""
    ids = np.asarray(sample_ids)
    return {s: pearson_per_gene(y_true[ids == s], y_pred[ids == s]) for s in dict.fromkeys(ids.tolist())}


def top_k_mean(pcc: np.ndarray, k: int) -> float:
    """Mean PCC of the ``k`` best-predicted genes (PCC-k); NaN when fewer than ``k`` genes have a PCC."""
    finite = np.sort(pcc[np.isfinite(pcc)])[::-1]
    return float(finite[:k].mean()) if len(finite) >= k else float("nan")


@dataclass(frozen=True)
class FoldSummary:
    """One fold's scores: mean over genes, with NaN genes counted rather than hidden."""

    pcc_mean: float  # mean over genes with a defined PCC
    pcc_std: float  # spread over genes (population std)
    mse_mean: float
    n_genes: int
    n_nan: int  # genes whose PCC is undefined (constant prediction or truth)
    pcc_top: dict[int, float]  # PCC-10/50/200 where there are enough genes


def summarise_fold(pcc: np.ndarray, mse: np.ndarray) -> FoldSummary:
    finite = pcc[np.isfinite(pcc)]
    return FoldSummary(
        pcc_mean=float(finite.mean()) if len(finite) else float("nan"),
        pcc_std=float(finite.std()) if len(finite) else float("nan"),
        mse_mean=float(np.mean(mse)),
        n_genes=int(len(pcc)),
        n_nan=int(len(pcc) - len(finite)),
        pcc_top={k: top_k_mean(pcc, k) for k in TOP_K if len(pcc) >= k},
    )


def task_summary(fold_values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation over folds (HEST's task score)."""
    v = np.asarray(fold_values, dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std())


def per_sample_fold_score(sample_pccs: Mapping[str, Sequence[float]]) -> float:
    """A fold's per-sample PCC: each test sample's mean PCC over its genes with a defined PCC, then the
    mean over the test samples that have one (NaN when none has)."""
    means = []
    for pccs in sample_pccs.values():
        v = np.asarray(pccs, dtype=np.float64)
        v = v[np.isfinite(v)]
        if len(v):
            means.append(v.mean())
    return float(np.mean(means)) if means else float("nan")


def per_sample_task_summary(fold_sample_pccs: Mapping[int, Mapping[str, Sequence[float]]]) -> tuple[float, float]:
    """Per-sample PCC of a task: `per_sample_fold_score` of each fold, then mean and population std over
    folds, as `task_summary` does for the pooled PCC."""
    return task_summary([per_sample_fold_score(s) for _, s in sorted(fold_sample_pccs.items())])
