"""When is a difference in the leaderboard real? Paired tests over genes, corrected for the pairs shown.

Two result sets of the same task and protocol (two encoders with one reducer, or two reducers with one
encoder) are compared on the genes both score, fold by fold: each (fold, gene) gives one paired difference of
per-gene PCC. The Wilcoxon signed-rank test (scipy) asks whether the differences are centred on zero, and a
percentile bootstrap over the pairs gives a confidence interval of their mean. The p-values of all the pairs
a table shows are Holm-corrected together (statsmodels). Genes of one fold are not independent and a task
has few folds, so these say "the difference is consistent across genes", not "across tissues": the site says
so beside them.

Pure functions: plain values in, plain values out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Comparison", "compare", "fold_differences", "holm", "kendall_tau", "neighbours_apart", "verdict",
           "MIN_FOLDS", "SIGNIFICANCE"]

SIGNIFICANCE = 0.05
# The paired test is over genes within folds: it says a difference holds across genes. Whether it holds across
# tissues rests on the folds, so a difference is called real only with at least this many folds, all agreeing.
MIN_FOLDS = 3
_BOOTSTRAP = 2000


@dataclass(frozen=True)
class Comparison:
    """``a`` minus ``b`` over the (fold, gene) pairs both have a PCC for."""

    n: int  # paired (fold, gene) differences
    mean_diff: float  # mean of a - b
    ci_low: float  # 95% percentile bootstrap interval of the mean difference
    ci_high: float
    p: float  # two-sided Wilcoxon signed-rank p-value (NaN when it cannot be computed)


def compare(a: Mapping[tuple[int, str], float], b: Mapping[tuple[int, str], float], *, seed: int = 0) -> Comparison:
    """Compare two result sets given as ``{(fold, gene): pcc}``; pairs missing or undefined on either side are
    left out."""
    from scipy.stats import wilcoxon

    keys = sorted(k for k in set(a) & set(b) if np.isfinite(a[k]) and np.isfinite(b[k]))
    d = np.array([a[k] - b[k] for k in keys], dtype=np.float64)
    if len(d) == 0:
        return Comparison(0, float("nan"), float("nan"), float("nan"), float("nan"))
    mean = float(d.mean())
    if len(d) < 2 or not np.any(d):
        return Comparison(len(d), mean, mean, mean, float("nan") if len(d) < 2 else 1.0)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(_BOOTSTRAP, len(d)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    p = float(wilcoxon(d).pvalue)
    return Comparison(len(d), mean, float(low), float(high), p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (statsmodels), NaN kept as NaN and left out of the correction."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(len(p), np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out.tolist()


def neighbours_apart(order: Sequence[str], adjusted: Mapping[tuple[str, str], float], *,
                     level: float = SIGNIFICANCE) -> list[bool]:
    """For a ranking (best first), whether each entry can be told apart from the next one: its adjusted
    p-value (keyed by the ordered pair, either order) is below ``level``. One fewer entry than ``order``."""
    out = []
    for x, y in zip(order, order[1:]):
        p = adjusted.get((x, y), adjusted.get((y, x), float("nan")))
        out.append(bool(np.isfinite(p) and p < level))
    return out


def fold_differences(a: Mapping[tuple[int, str], float], b: Mapping[tuple[int, str], float]) -> dict[int, float]:
    """Per fold, the mean of ``a - b`` over the genes both score in that fold (the pairs `compare` uses)."""
    by_fold: dict[int, list[float]] = {}
    for k in set(a) & set(b):
        if np.isfinite(a[k]) and np.isfinite(b[k]):
            by_fold.setdefault(int(k[0]), []).append(a[k] - b[k])
    return {f: float(np.mean(v)) for f, v in sorted(by_fold.items())}


def verdict(c: Comparison, p_adjusted: float, folds: Mapping[int, float], *, level: float = SIGNIFICANCE,
            min_folds: int = MIN_FOLDS) -> str:
    """Why ``a`` and ``b`` cannot be told apart, or "" when they can: the Holm-adjusted p below ``level``, the
    bootstrap interval clear of zero, at least ``min_folds`` folds and every fold's mean difference (`fold_differences`)
    on the side of the overall one. Reasons are short phrases for the site."""
    if c.n == 0:
        return "no gene scored by both"
    if len(folds) < min_folds:
        return (f"only {len(folds)} fold{'s' if len(folds) != 1 else ''} (at least {min_folds} needed): a difference "
                "across genes, untested across tissue sections")
    if not (np.isfinite(p_adjusted) and p_adjusted < level):
        return f"Holm-adjusted p = {p_adjusted:.2g} (not below {level:g})" if np.isfinite(p_adjusted) else "no test"
    if c.ci_low <= 0 <= c.ci_high:
        return "the 95% interval of the mean difference includes 0"
    against = [f for f, d in folds.items() if np.sign(d) != np.sign(c.mean_diff)]
    if against:
        return f"fold{'s' if len(against) > 1 else ''} {', '.join(map(str, against))} go{'' if len(against) > 1 else 'es'} the other way"
    return ""


def kendall_tau(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Kendall's tau-b between two scorings of the same entries (those scored in both); NaN with fewer than 2."""
    from scipy.stats import kendalltau

    keys = sorted(k for k in set(a) & set(b) if np.isfinite(a[k]) and np.isfinite(b[k]))
    if len(keys) < 2:
        return float("nan")
    return float(kendalltau([a[k] for k in keys], [b[k] for k in keys]).statistic)
