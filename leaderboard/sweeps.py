"""Alpha-sensitivity curves from ``--alpha sweep`` runs: mean test PCC against the ridge alpha.

A sweep run stores, per fold and gene, the test PCC at every alpha of its grid and at HEST's alpha for that
fold, ``100 / (n_features * n_genes)`` (table ``alpha_sweep``). A curve is, at each alpha every fold has, the
mean over folds of the fold's mean PCC over genes (the task score's definition). HEST's point is the same mean
with each fold at its own HEST alpha; the cross-validated choice is the alpha each fold's inner CV picked
(``fold_results.alpha``). HEST's alpha is on the plateau when its PCC is within `PLATEAU` of the curve's peak.

Pure: plain rows in, plain dicts out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from stbench.regression import hest_alpha

__all__ = ["PLATEAU", "alpha_curve", "how_to_sweep", "sentence"]

PLATEAU = 0.002  # HEST's alpha is "on the plateau" when its PCC is at most this far below the curve's peak


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def _fold_mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _mean(values: Iterable[float | None]) -> float | None:
    vals = list(values)
    if not vals or any(v is None for v in vals):
        return None
    return sum(vals) / len(vals)  # type: ignore[arg-type]


def alpha_curve(run: dict[str, Any], rows: Iterable[tuple[int, str, float, float]]) -> dict[str, Any] | None:
    """The curve of one sweep run from its ``(fold, gene, alpha, pcc)`` rows; None without rows. ``run`` is a
    `Leaderboard` run (its ``n_features``, ``n_genes_per_fold`` and ``alphas`` per fold are read)."""
    per_fold: dict[int, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for fold, _gene, alpha, pcc in rows:
        per_fold[int(fold)][float(alpha)].append(float(pcc))
    if not per_fold:
        return None
    folds = sorted(per_fold)
    fold_means = {f: {a: _fold_mean(v) for a, v in per_fold[f].items()} for f in folds}

    def at(f: int, alpha: float) -> float | None:
        hits = [m for a, m in fold_means[f].items() if _close(a, alpha)]
        return hits[0] if hits else None

    common = sorted(a for a in fold_means[folds[0]] if all(any(_close(a, b) for b in fold_means[f]) for f in folds))
    curve = [(a, _mean(at(f, a) for f in folds)) for a in common]
    curve = [(a, v) for a, v in curve if v is not None]
    if not curve:
        return None
    index = {int(f): i for i, f in enumerate(run["fold_ids"])}
    hest_alphas = [hest_alpha(run["n_features"][index[f]], run["n_genes_per_fold"][index[f]]) for f in folds]
    hest_pcc = _mean(at(f, a) for f, a in zip(folds, hest_alphas))
    cv = [{"fold": f, "alpha": run["alphas"][index[f]], "pcc": at(f, run["alphas"][index[f]])} for f in folds
          if run["alphas"][index[f]] is not None]
    peak_alpha, peak = max(curve, key=lambda p: (p[1], -p[0]))  # the smallest alpha among equal peaks
    if hest_pcc is not None and hest_pcc > peak:
        peak_alpha, peak = math.exp(sum(math.log(a) for a in hest_alphas) / len(hest_alphas)), hest_pcc
    cv_pcc = _mean(c["pcc"] for c in cv) if len(cv) == len(folds) else None
    out = {
        "run_id": run["run_id"], "encoder": run["encoder"], "reducer": run["reducer"],
        "protocol": run["protocol_fingerprint"], "folds": folds,
        "alphas": [a for a, _ in curve], "pcc": [v for _, v in curve],
        "peak": {"alpha": peak_alpha, "pcc": peak},
        # HEST's alpha differs between folds only when their feature counts do: the point sits at their geometric mean
        "hest": {"alphas": hest_alphas, "alpha": math.exp(sum(math.log(a) for a in hest_alphas) / len(hest_alphas)),
                 "pcc": hest_pcc},
        "cv": cv, "cv_pcc": cv_pcc,
        "gap": None if hest_pcc is None else peak - hest_pcc,
        "on_plateau": None if hest_pcc is None else peak - hest_pcc <= PLATEAU,
        "plateau": PLATEAU,
    }
    out["sentence"] = sentence(out)
    return out


def _a(x: float) -> str:
    return f"{x:.2g}"


def sentence(c: dict[str, Any]) -> str:
    """One line saying where HEST's alpha and the cross-validated choice sit on the curve."""
    peak = c["peak"]
    head = f"{c['encoder']} · {c['reducer']}: peak {peak['pcc']:.4f} at α = {_a(peak['alpha'])}"
    h = c["hest"]
    if h["pcc"] is None:
        hest = "; HEST's α is not among the stored alphas"
    else:
        where = "on the plateau" if c["on_plateau"] else "off the plateau"
        hest = (f"; HEST's α ({_a(h['alpha'])}) gives {h['pcc']:.4f}, {c['gap']:.4f} below the peak: {where} "
                f"(the plateau: within {c['plateau']:g} of the peak)")
    if c["cv"]:
        chosen = ", ".join(f"{_a(x['alpha'])} (fold {x['fold']})" for x in c["cv"])
        cv = f"; the cross-validated choice: α = {chosen}" + (
            f", {c['cv_pcc']:.4f}" if c["cv_pcc"] is not None else "")
    else:
        cv = ""
    return head + hest + cv + "."


def how_to_sweep(task: str, encoders: list[str], reducers: list[str]) -> str:
    """The command that stores sweep curves for a task's encoders and reducers."""
    enc = ",".join(encoders) if encoders else "ENCODER"
    red = ",".join(reducers) if reducers else "identity,pca"
    return f"bench run --task {task} --encoder {enc} --reducer {red} --alpha sweep"
