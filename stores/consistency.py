"""The catalog's invariants: every stored summary equals what the rows beneath it give.

A fold row (``fold_results``) must equal what its own gene rows (``gene_results``) give: the number of
genes, the NaN count, the mean and population std of the defined PCCs, the mean MSE and PCC-10/50/200;
each gene row repeats the fold's n_train, n_test and alpha. A run's summary (``Catalog.summary``) must
equal the mean and population std over its fold rows, and a complete run has all its folds.

These are recomputed here with plain numpy, not with `stbench.metrics`, so a bug in the code that
produced a number cannot also hide it. Pure functions: rows (mappings) in, problems (strings) out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["fold_problems", "run_problems", "TOP_K"]

TOP_K = (10, 50, 200)
_REL, _ABS = 1e-9, 1e-12


def _close(stored: Any, expected: float) -> bool:
    """Equal within float rounding; NaN and NULL both mean "no value" and equal each other."""
    s = float("nan") if stored is None else float(stored)
    if math.isnan(expected) or math.isnan(s):
        return math.isnan(expected) and math.isnan(s)
    return abs(s - expected) <= _ABS + _REL * abs(expected)


def _pccs(values: Sequence[Any]) -> np.ndarray:
    return np.array([float("nan") if v is None else float(v) for v in values], dtype=np.float64)


def fold_problems(fold: Mapping[str, Any], genes: Sequence[Mapping[str, Any]]) -> list[str]:
    """What disagrees between one ``fold_results`` row and its ``gene_results`` rows (empty: nothing)."""
    where = f"run {fold['run_id']} fold {fold['fold']}"
    out: list[str] = []
    names = [g["gene"] for g in genes]
    listed = json.loads(fold["genes"]) if fold.get("genes") else None
    if len(names) != fold["n_genes"]:
        out.append(f"{where}: n_genes {fold['n_genes']} but {len(names)} gene rows")
    if listed is not None and (sorted(listed) != sorted(names) or len(set(listed)) != len(listed)):
        out.append(f"{where}: its gene list and its gene rows name different genes")
    pcc = _pccs([g["pcc"] for g in genes])
    finite = pcc[np.isfinite(pcc)]
    n_nan = len(pcc) - len(finite)
    if fold["n_nan"] != n_nan:
        out.append(f"{where}: n_nan {fold['n_nan']} but {n_nan} gene rows have no PCC")
    mean = float(finite.sum() / len(finite)) if len(finite) else float("nan")
    std = float(np.sqrt(((finite - mean) ** 2).sum() / len(finite))) if len(finite) else float("nan")
    mse = _pccs([g["mse"] for g in genes])
    expected = {"pcc_mean": mean, "pcc_std": std,
                "mse_mean": float(mse.sum() / len(mse)) if len(mse) else float("nan")}
    best = np.sort(finite)[::-1]
    for k in TOP_K:
        if len(pcc) >= k:  # PCC-k exists where the fold has k genes; NaN when fewer than k have a PCC
            expected[f"pcc{k}"] = float(best[:k].sum() / k) if len(best) >= k else float("nan")
        elif fold.get(f"pcc{k}") is not None and not math.isnan(fold[f"pcc{k}"]):
            out.append(f"{where}: pcc{k} stored for a fold of {len(pcc)} genes")
    base = [g.get("mse_baseline") for g in genes]
    if fold.get("mse_baseline") is not None or any(b is not None for b in base):  # recorded since schema m005
        b = _pccs(base)
        expected["mse_baseline"] = float(b.sum() / len(b)) if len(b) else float("nan")
    for col, value in expected.items():
        if not _close(fold.get(col), value):
            out.append(f"{where}: {col} {fold.get(col)!r} but its gene rows give {value!r}")
    for col in ("n_train", "n_test", "alpha"):
        bad = [g["gene"] for g in genes if not _close(g[col], float(fold[col]))]
        if bad:
            out.append(f"{where}: gene rows {bad[:3]} have another {col} than the fold ({fold[col]})")
    return out


def run_problems(run: Mapping[str, Any], folds: Sequence[Mapping[str, Any]]) -> list[str]:
    """What disagrees between a run's summary row (`Catalog.summary`) and its fold rows."""
    where = f"run {run['run_id']}"
    out: list[str] = []
    if run["status"] == "complete" and run.get("n_folds") is not None and len(folds) != run["n_folds"]:
        out.append(f"{where}: complete with {len(folds)} of {run['n_folds']} folds")
    if run.get("folds") is not None and run["folds"] != len(folds):
        out.append(f"{where}: summary counts {run['folds']} folds, {len(folds)} fold rows")
    if not folds:
        return out
    v = _pccs([f["pcc_mean"] for f in folds])
    mse = _pccs([f["mse_mean"] for f in folds])
    mean = float(v.sum() / len(v))
    expected = {"pcc_mean": mean, "pcc_std": float(np.sqrt(((v - mean) ** 2).sum() / len(v))),
                "mse_mean": float(mse.sum() / len(mse)), "n_nan": float(sum(f["n_nan"] for f in folds))}
    base = [f.get("mse_baseline") for f in folds if f.get("mse_baseline") is not None]
    if base:  # folds written before schema m005 have none; the summary averages those that do
        expected["mse_baseline"] = float(sum(base) / len(base))
    for col, value in expected.items():
        if col in run and not _close(run[col], value):
            out.append(f"{where}: summary {col} {run[col]!r} but its fold rows give {value!r}")
    return out
