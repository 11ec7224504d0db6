"""What the leaderboard shows, read from the catalog into plain JSON-able dicts.

A *result set* is one complete row of ``runs``. The main views show, per (task, encoder, reducer, protocol),
the run with the reducer's default options (the newest when there are several; the newest variant when no
run has the defaults); every other run is listed on its task page. Synthetic tasks form their own section
and are never averaged or ranked with real ones. Two PCC modes: ``pooled`` (HEST: per gene over all test
spots of a fold; ``fold_results.pcc_mean``) and ``per-sample`` (per gene within each test sample, mean over
genes, then over the fold's test samples). A task's score is the mean and population std over folds.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stbench.errors import StoreError
from stbench.encoders.weights import encoder_label

if TYPE_CHECKING:
    import polars as pl
    from stbench.stores import Catalog

__all__ = ["PCC_MODES", "REDUCER_ORDER", "Leaderboard", "load_leaderboard", "finite", "rank_desc", "protocol_label",
           "reducer_sort_key", "best_gene"]

PCC_MODES = ("pooled", "per-sample")
REDUCER_ORDER = ("identity", "pca", "bpbooster-random", "bpbooster-gp")  # the paper's Table 3 columns
_GENE_SET_KEYS = ("gene_sets", "gene_sets_sha256")  # where a GMT lives is not part of what a variant is


def finite(x: Any) -> float | None:
    """A float for JSON, or None for NaN/None (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def rank_desc(values: dict[str, float | None]) -> dict[str, int | None]:
    """1 = highest; ties share the best rank; None for missing values (never ranked)."""
    present = [v for v in values.values() if v is not None]
    return {k: (None if v is None else 1 + sum(1 for o in present if o > v)) for k, v in values.items()}


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals or len(vals) != len(values):  # a fold without a score makes the task score undefined
        return None, None
    m = sum(vals) / len(vals)
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / len(vals))


def protocol_label(p: dict[str, Any]) -> str:
    """Short name of a stored protocol: what differs from the HEST default (or from the CV-alpha default)."""
    alpha = str(p.get("alpha", "hest"))
    sweep = alpha.startswith("sweep:")
    if sweep:  # sweep:LO:HI:N; the headline is the CV choice among the swept alphas
        _, lo, hi, n = (alpha.split(":") + ["", "", ""])[:4]
        parts = [f"CV α of sweep {lo}..{hi} ({n})"]
    else:
        parts = ["HEST α" if alpha == "hest" else "CV α" if alpha == "cv" else f"α={alpha}"]
    solver = p.get("solver", "lsqr")
    if solver != ("exact" if alpha == "cv" or sweep else "lsqr"):
        parts.append(f"solver {solver}")
    if p.get("dtype") not in (None, "float32" if solver == "lsqr" else "float64"):  # protocol v2: lsqr's dtype
        parts.append(f"ridge {p.get('dtype')}")
    if p.get("genes", "task") != "task":
        name = str(p.get("panel") or "").upper() or p.get("genes")  # a named panel (pam50) or the rule
        parts.append(f"genes {name}" + (f" ({len(p.get('gene_list') or [])})" if p.get("genes") == "file" else ""))
    if "intercept" in p and bool(p["intercept"]) != (alpha == "cv"):  # the CV alpha fits one by default (protocol 3)
        parts.append("intercept" if p["intercept"] else "no intercept")
    if int(p.get("seed", 1)) != 1:
        parts.append(f"seed {p.get('seed')}")
    if p.get("expression", "log1p") != "log1p":
        parts.append(str(p.get("expression")))
    return " · ".join(parts)


def _protocol_sort_key(p: dict[str, Any]) -> tuple:
    alpha = str(p["protocol"].get("alpha"))
    return (0 if p["label"] == "HEST α" else 1 if p["label"] == "CV α" else 2, alpha != "hest", p["label"])


@dataclass
class Leaderboard:
    """Everything the site needs, as plain data. ``sections``: one per kind of task (real, synthetic)."""

    store: Path
    runs: list[dict[str, Any]]  # every complete result set (incl. variants and excluded synthetic ones)
    protocols: list[dict[str, Any]]  # one per protocol fingerprint among the included runs, default first
    sections: list[dict[str, Any]]
    tasks: dict[str, dict[str, Any]]  # task name -> task page data
    excluded_synthetic: int = 0
    has_spot_predictions: bool = False
    frames: dict[str, Any] = field(default_factory=dict)  # polars frames behind the CSV downloads

    @property
    def included(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["included"]]

    @property
    def default_protocol(self) -> str:
        return self.protocols[0]["fingerprint"]

    def run(self, run_id: str) -> dict[str, Any]:
        return next(r for r in self.runs if r["run_id"] == run_id)


# -- reading --------------------------------------------------------------------------------------------

def _table_exists(cat: Catalog, name: str) -> bool:
    rows = cat.rows("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name])
    return bool(rows[0][0])


def _variant(reducer: str, options: dict[str, Any], *, task: str, encoder: str) -> tuple[str, bool]:
    """(label, known): the options that differ from the registry defaults; a reducer no longer installed
    gets its raw options as label and never counts as the default."""
    from stbench.reducers import reducers

    opts = {k: v for k, v in options.items() if k not in _GENE_SET_KEYS}
    try:
        return reducers.get(reducer).variant_label(opts, task=task, encoder=encoder), True
    except Exception:  # noqa: BLE001 - a plugin reducer that is not installed here
        return json.dumps(opts, sort_keys=True, separators=(",", ":")), False


def _per_sample_scores(cat: Catalog, run_ids: list[str]) -> dict[str, dict[int, float | None]]:
    """run -> fold -> mean over the fold's test samples of the mean per-sample PCC over (finite) genes."""
    if not run_ids:
        return {}
    marks = ", ".join("?" * len(run_ids))
    rows = cat.rows(f"""
        SELECT run_id, fold, avg(s) FROM (
            SELECT run_id, fold, sample_id, avg(pcc) FILTER (WHERE NOT isnan(pcc)) AS s
            FROM sample_gene_results WHERE run_id IN ({marks}) GROUP BY run_id, fold, sample_id)
        GROUP BY run_id, fold""", run_ids)  # noqa: S608
    out: dict[str, dict[int, float | None]] = defaultdict(dict)
    for rid, fold, v in rows:
        out[rid][int(fold)] = finite(v)
    return out


def load_leaderboard(store_root: Path, *, include_synthetic: bool = False) -> Leaderboard:
    """Read every complete result set of the store at ``store_root`` and compute the site's views."""
    from stbench.stores import Store

    store_root = Path(store_root)
    if not (store_root / "catalog.duckdb").exists():
        raise StoreError(f"no catalog in {store_root}: run `bench run` first or pass --store")
    with Store(store_root, read_only=True) as st, st.catalog.session():  # one snapshot, read at once
        return _load(st.catalog, store_root, include_synthetic=include_synthetic)


def _load(cat: Catalog, store_root: Path, *, include_synthetic: bool) -> Leaderboard:
    summary = cat.summary()
    if len(summary) == 0:
        raise StoreError(f"no complete runs in {store_root}: run `bench run` first")
    ids = summary["run_id"].to_list()
    marks = ", ".join("?" * len(ids))
    extra = {r[0]: r[1:] for r in cat.rows(
        f"SELECT run_id, protocol, task_fingerprint, n_folds FROM runs WHERE run_id IN ({marks})", ids)}  # noqa: S608
    folds = cat.query(f"SELECT * FROM fold_results WHERE run_id IN ({marks}) ORDER BY run_id, fold", ids)  # noqa: S608
    folds_by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in folds.iter_rows(named=True):
        folds_by_run[f["run_id"]].append(f)
    per_sample = _per_sample_scores(cat, ids)

    runs: list[dict[str, Any]] = []
    for s in summary.iter_rows(named=True):
        rid = s["run_id"]
        protocol_json, task_fp, n_folds = extra[rid]
        options = json.loads(s["reducer_options"] or "{}")
        label, known = _variant(s["reducer"], options, task=s["task"], encoder=s["encoder"])
        fr = folds_by_run[rid]
        ps_folds = [per_sample.get(rid, {}).get(int(f["fold"])) for f in fr]
        ps_mean, ps_std = _mean_std([math.nan if v is None else v for v in ps_folds]) if ps_folds else (None, None)
        runs.append({
            # "encoder" is the name every view groups and shows: a random-weight control is its own row
            "run_id": rid, "task": s["task"], "synthetic": bool(s["synthetic"]),
            "encoder": encoder_label(s["encoder"], s["weights_fingerprint"]), "encoder_name": s["encoder"],
            "weights_fingerprint": s["weights_fingerprint"], "reducer": s["reducer"], "reducer_options": options,
            "variant": label, "is_default_variant": known and label == "", "alpha_rule": s["alpha_rule"],
            "gene_rule": s["gene_rule"], "solver": s["solver"], "seed": s["seed"],
            "protocol": json.loads(protocol_json or "{}"), "protocol_fingerprint": s["protocol_fingerprint"],
            "task_fingerprint": task_fp, "n_folds": n_folds, "folds": len(fr),
            "scores": {"pooled": {"mean": finite(s["pcc_mean"]), "std": finite(s["pcc_std"]),
                                  "folds": [finite(f["pcc_mean"]) for f in fr]},
                       "per-sample": {"mean": ps_mean, "std": ps_std, "folds": ps_folds}},
            "mse_mean": finite(s["mse_mean"]), "n_nan": int(s["n_nan"] or 0),
            "alphas": [finite(f["alpha"]) for f in fr], "n_genes": sorted({int(f["n_genes"]) for f in fr}),
            "fold_ids": [int(f["fold"]) for f in fr], "n_features": [int(f["n_features"]) for f in fr],
            "n_genes_per_fold": [int(f["n_genes"]) for f in fr],
            "n_test": [int(f["n_test"]) for f in fr],
            "test_samples": [json.loads(f["test_samples"] or "[]") for f in fr],
            "train_samples": [json.loads(f["train_samples"] or "[]") for f in fr],
            "model_paths": {int(f["fold"]): f["model_path"] for f in fr if f.get("model_path")},
            "stbench_version": s["stbench_version"],
            "finished_at": None if s["finished_at"] is None else s["finished_at"].isoformat(timespec="seconds"),
            "included": include_synthetic or not s["synthetic"],
        })
    _mark_shown(runs)
    if not any(r["included"] for r in runs):
        raise StoreError(f"{store_root} holds only synthetic results (bench data demo); pass --include-synthetic to "
                         "show them, clearly labelled, or `bench run --task NAME` on real data")
    protocols = _protocols([r for r in runs if r["included"]])
    board = Leaderboard(store=store_root, runs=runs, protocols=protocols, sections=[], tasks={},
                        excluded_synthetic=sum(1 for r in runs if not r["included"]),
                        has_spot_predictions=_table_exists(cat, "spot_predictions"))
    for synthetic in (False, True):
        chosen = [r for r in board.included if r["synthetic"] == synthetic]
        if chosen:
            board.sections.append(_section(chosen, protocols, synthetic=synthetic))
    board.tasks = _task_pages(cat, board)
    board.frames = _frames(cat, board)
    return board


def _mark_shown(runs: list[dict[str, Any]]) -> None:
    """``shown``: the one run per (task, encoder, reducer, protocol) the main views use."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r["task"], r["encoder"], r["reducer"], r["protocol_fingerprint"])].append(r)
    for group in groups.values():
        newest_first = sorted(group, key=lambda r: r["finished_at"] or "", reverse=True)
        defaults = [r for r in newest_first if r["is_default_variant"]]
        chosen = (defaults or newest_first)[0]
        for r in group:
            r["shown"] = r is chosen


def _protocols(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for r in runs:
        fp = r["protocol_fingerprint"]
        if fp not in seen:
            seen[fp] = {"fingerprint": fp, "protocol": r["protocol"], "label": protocol_label(r["protocol"]),
                        "alpha_rule": r["alpha_rule"], "solver": r["solver"], "gene_rule": r["gene_rule"],
                        "seed": r["seed"], "n_genes": set(), "n_runs": 0}
        seen[fp]["n_genes"].update(r["n_genes"])
        seen[fp]["n_runs"] += 1
    out = sorted(seen.values(), key=_protocol_sort_key)
    labels = [p["label"] for p in out]
    for p in out:
        p["n_genes"] = sorted(p["n_genes"])
        if labels.count(p["label"]) > 1:  # e.g. two protocol versions: keep labels distinct
            p["label"] += f" ({p['fingerprint'][:6]})"
    return out


def _ordered_reducers(names: set[str]) -> list[str]:
    return [r for r in REDUCER_ORDER if r in names] + sorted(names - set(REDUCER_ORDER))


# -- the main views of one section -----------------------------------------------------------------------

def _section(runs: list[dict[str, Any]], protocols: list[dict[str, Any]], *, synthetic: bool) -> dict[str, Any]:
    shown = [r for r in runs if r["shown"]]
    reducers = _ordered_reducers({r["reducer"] for r in shown})
    fps = [p["fingerprint"] for p in protocols if any(r["protocol_fingerprint"] == p["fingerprint"] for r in shown)]
    cells: dict[tuple, dict[str, Any]] = {
        (r["protocol_fingerprint"], r["reducer"], r["encoder"], r["task"]): r for r in shown}
    main: dict[str, Any] = {}
    gain: dict[str, Any] = {}
    for fp in fps:
        in_fp = [r for r in shown if r["protocol_fingerprint"] == fp]
        tasks = sorted({r["task"] for r in in_fp})
        main[fp], gain[fp] = {}, {}
        for mode in PCC_MODES:
            main[fp][mode] = {red: _main_table(cells, fp, mode, red, tasks,
                                               sorted({r["encoder"] for r in in_fp if r["reducer"] == red}))
                              for red in reducers if any(r["reducer"] == red for r in in_fp)}
            gain[fp][mode] = _gain_table(cells, fp, mode, tasks, sorted({r["encoder"] for r in in_fp}), reducers)
    return {
        "id": "synthetic" if synthetic else "real", "synthetic": synthetic,
        "title": "SYNTHETIC tasks" if synthetic else "Tasks",
        "tasks": sorted({r["task"] for r in shown}), "encoders": sorted({r["encoder"] for r in shown}),
        "reducers": reducers, "protocols": fps, "main": main, "gain": gain,
        "sensitivity": _sensitivity(cells, protocols, fps, shown, reducers),
    }


def _score(run: dict[str, Any] | None, mode: str) -> float | None:
    return None if run is None else run["scores"][mode]["mean"]


def _main_table(cells: dict[tuple, dict[str, Any]], fp: str, mode: str, reducer: str, tasks: list[str],
                encoders: list[str]) -> dict[str, Any]:
    """Encoders x tasks: mean ± std per task, the average over tasks and the rank by that average. Only
    encoders with a score on every task column are ranked (an average over fewer tasks is not comparable)."""
    rows = []
    for enc in encoders:
        row_cells = {}
        for task in tasks:
            run = cells.get((fp, reducer, enc, task))
            if run is not None:
                sc = run["scores"][mode]
                row_cells[task] = {"mean": sc["mean"], "std": sc["std"], "run_id": run["run_id"],
                                   "variant": run["variant"], "folds": run["folds"]}
        means = [c["mean"] for c in row_cells.values() if c["mean"] is not None]
        complete = len(means) == len(tasks)
        rows.append({"encoder": enc, "cells": row_cells, "avg": sum(means) / len(means) if means else None,
                     "n_tasks": len(means), "complete": complete})
    ranks = rank_desc({r["encoder"]: r["avg"] if r["complete"] else None for r in rows})
    for r in rows:
        r["rank"] = ranks[r["encoder"]]
    rows.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0, -(r["avg"] or -math.inf), r["encoder"]))
    return {"tasks": tasks, "rows": rows}


def _gain_table(cells: dict[tuple, dict[str, Any]], fp: str, mode: str, tasks: list[str], encoders: list[str],
                reducers: list[str]) -> list[dict[str, Any]]:
    """The paper's Table 3: each reducer's score per (task, encoder) and its gain over PCA."""
    rows = []
    for task in tasks:
        for enc in encoders:
            values = {red: _score(cells.get((fp, red, enc, task)), mode) for red in reducers}
            if all(v is None for v in values.values()):
                continue
            base = values.get("pca")
            rows.append({"task": task, "encoder": enc, "values": values,
                         "gain": {red: (None if v is None or base is None else v - base)
                                  for red, v in values.items() if red != "pca"}})
    return rows


def _sensitivity(cells: dict[tuple, dict[str, Any]], protocols: list[dict[str, Any]], fps: list[str],
                 shown: list[dict[str, Any]], reducers: list[str]) -> list[dict[str, Any]]:
    """How ranks move between protocols: HEST alpha -> CV alpha (all else the same, `_comparable`), and pooled ->
    per-sample PCC. Reducers are ranked within each (task, encoder), encoders within each (task, reducer),
    both only among what exists under both protocols."""
    by_fp = {p["fingerprint"]: p for p in protocols if p["fingerprint"] in fps}
    comparisons = []

    pairs = [((a, m), (b, m)) for a in fps for b in fps for m in PCC_MODES
             if by_fp[a]["protocol"].get("alpha") == "hest" and by_fp[b]["protocol"].get("alpha") == "cv"
             and _comparable(by_fp[a]["protocol"], by_fp[b]["protocol"])]
    pairs += [((fp, "pooled"), (fp, "per-sample")) for fp in fps]
    tasks = sorted({r["task"] for r in shown})
    encoders = sorted({r["encoder"] for r in shown})
    for (fa, ma), (fb, mb) in pairs:
        def score(fp: str, mode: str, red: str, enc: str, task: str) -> float | None:
            return _score(cells.get((fp, red, enc, task)), mode)

        reducer_rows, encoder_rows = [], []
        for task in tasks:
            for enc in encoders:
                both = {red: (score(fa, ma, red, enc, task), score(fb, mb, red, enc, task)) for red in reducers}
                both = {k: v for k, v in both.items() if v[0] is not None and v[1] is not None}
                if len(both) >= 2:
                    reducer_rows += _moves(both, task=task, encoder=enc, key="reducer")
            for red in reducers:
                both = {enc: (score(fa, ma, red, enc, task), score(fb, mb, red, enc, task)) for enc in encoders}
                both = {k: v for k, v in both.items() if v[0] is not None and v[1] is not None}
                if len(both) >= 2:
                    encoder_rows += _moves(both, task=task, reducer=red, key="encoder")
        if not reducer_rows and not encoder_rows:
            continue
        label_a = by_fp[fa]["label"] + ("" if ma == "pooled" else ", per-sample PCC")
        label_b = by_fp[fb]["label"] + ("" if mb == "pooled" else ", per-sample PCC")
        if fa == fb:
            label_a, label_b = f"{by_fp[fa]['label']}, pooled PCC", f"{by_fp[fa]['label']}, per-sample PCC"
        comparisons.append({"id": f"{fa}-{ma}-{fb}-{mb}", "from": {"protocol": fa, "mode": ma, "label": label_a},
                            "to": {"protocol": fb, "mode": mb, "label": label_b},
                            "reducer_rows": reducer_rows, "encoder_rows": encoder_rows})
    return comparisons


def _comparable(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two protocols that differ in their alpha rule only: the solver (and its dtype) follow the rule, and so may
    the intercept (each at its rule's default: the CV alpha fits one since protocol 3) or be the same in both."""
    def rest(p: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in p.items() if k not in ("alpha", "solver", "dtype", "intercept")}

    def default_intercept(p: dict[str, Any]) -> bool:
        return bool(p.get("intercept", str(p.get("alpha")) == "cv")) == (str(p.get("alpha")) == "cv")

    same = bool(a.get("intercept")) == bool(b.get("intercept")) or (default_intercept(a) and default_intercept(b))
    return same and rest(a) == rest(b)


def _moves(both: dict[str, tuple[float, float]], *, key: str, **where: str) -> list[dict[str, Any]]:
    ra = rank_desc({k: v[0] for k, v in both.items()})
    rb = rank_desc({k: v[1] for k, v in both.items()})
    return [{**where, key: k, "a": both[k][0], "rank_a": ra[k], "b": both[k][1], "rank_b": rb[k],
             "move": ra[k] - rb[k]}  # > 0: moves up (a better rank) under the second protocol
            for k in sorted(both, key=lambda k: (ra[k], k))]


# -- task pages -----------------------------------------------------------------------------------------

def _task_pages(cat: Catalog, board: Leaderboard) -> dict[str, dict[str, Any]]:
    """Per task: per-gene PCC of the shown runs (both PCC modes), their rankings with the paired tests between
    neighbours and Kendall's tau between alpha rules (`stbench.leaderboard.rankings`), the alpha-sensitivity
    curves of its sweep runs (`stbench.leaderboard.sweeps`) and every result set of the task."""
    from stbench.leaderboard.rankings import rank_taus, task_rankings
    from stbench.leaderboard.sweeps import alpha_curve, how_to_sweep

    shown = [r for r in board.included if r["shown"]]
    ids = [r["run_id"] for r in shown]
    per_gene = _per_gene(cat, ids)
    fold_gene = _per_fold_gene(cat, ids)
    sweep_ids = [r["run_id"] for r in shown if str(r["protocol"].get("alpha", "")).startswith("sweep:")]
    sweep_rows = _sweep_rows(cat, sweep_ids)
    by_fp = {p["fingerprint"]: p for p in board.protocols}
    pages: dict[str, dict[str, Any]] = {}
    for task in sorted({r["task"] for r in board.included}):
        runs = [r for r in board.included if r["task"] == task]
        t_shown = [r for r in runs if r["shown"]]
        genes: dict[str, Any] = {}
        for r in t_shown:
            genes.setdefault(r["protocol_fingerprint"], {m: {} for m in PCC_MODES})
            for mode in PCC_MODES:
                genes[r["protocol_fingerprint"]][mode].setdefault(r["encoder"], {})[r["reducer"]] = \
                    per_gene.get(r["run_id"], {}).get(mode, {})
        fps = [p["fingerprint"] for p in board.protocols if p["fingerprint"] in genes]
        curves = [c for c in (alpha_curve(r, sweep_rows.get(r["run_id"], [])) for r in sorted(
            t_shown, key=lambda r: (r["encoder"], reducer_sort_key(r["reducer"]))) if r["run_id"] in sweep_rows) if c]
        hest = [by_fp[fp] for fp in fps if by_fp[fp]["protocol"].get("alpha") == "hest"]
        searched = [by_fp[fp] for fp in fps if by_fp[fp]["protocol"].get("alpha") == "cv"
                    or str(by_fp[fp]["protocol"].get("alpha", "")).startswith("sweep:")]
        pages[task] = {
            "task": task, "synthetic": any(r["synthetic"] for r in runs),
            "encoders": sorted({r["encoder"] for r in t_shown}),
            "reducers": _ordered_reducers({r["reducer"] for r in t_shown}),
            "protocols": fps,
            "genes": genes,
            "rankings": task_rankings(t_shown, fold_gene, protocols=fps, modes=PCC_MODES),
            "taus": rank_taus(t_shown, [(a, b) for a in hest for b in searched
                                        if _comparable(a["protocol"], b["protocol"])], modes=PCC_MODES),
            "sweeps": curves,
            "sweep_hint": how_to_sweep(task, sorted({r["encoder_name"] for r in t_shown}),
                                       _ordered_reducers({r["reducer"] for r in t_shown})),
            "runs": [r["run_id"] for r in sorted(runs, key=lambda r: (r["protocol_fingerprint"] != board.default_protocol,
                                                                      r["encoder"], reducer_sort_key(r["reducer"]),
                                                                      not r["shown"], r["variant"]))],
        }
    return pages


def reducer_sort_key(name: str) -> tuple[int, str]:
    """The paper's column order (identity, pca, bpbooster-random, bpbooster-gp), then other reducers by name."""
    return (REDUCER_ORDER.index(name) if name in REDUCER_ORDER else len(REDUCER_ORDER), name)


def _per_fold_gene(cat: Catalog, run_ids: list[str]) -> dict[str, dict[str, dict[tuple[int, str], float]]]:
    """run -> mode -> (fold, gene) -> PCC (per-sample: mean over the fold's test samples); NaN where undefined."""
    out: dict[str, dict[str, dict[tuple[int, str], float]]] = defaultdict(lambda: {m: {} for m in PCC_MODES})
    if not run_ids:
        return out
    marks = ", ".join("?" * len(run_ids))
    for rid, fold, gene, v in cat.rows(f"SELECT run_id, fold, gene, pcc FROM gene_results WHERE run_id IN ({marks})",  # noqa: S608
                                       run_ids):
        out[rid]["pooled"][(int(fold), gene)] = math.nan if v is None else float(v)
    for rid, fold, gene, v in cat.rows(f"""
            SELECT run_id, fold, gene, avg(pcc) FILTER (WHERE NOT isnan(pcc)) FROM sample_gene_results
            WHERE run_id IN ({marks}) GROUP BY run_id, fold, gene""", run_ids):  # noqa: S608
        out[rid]["per-sample"][(int(fold), gene)] = math.nan if v is None else float(v)
    return out


def _sweep_rows(cat: Catalog, run_ids: list[str]) -> dict[str, list[tuple[int, str, float, float]]]:
    """run -> its ``alpha_sweep`` rows (fold, gene, alpha, pcc); empty for a store from before schema m006."""
    out: dict[str, list[tuple[int, str, float, float]]] = defaultdict(list)
    if not run_ids or not _table_exists(cat, "alpha_sweep"):
        return out
    for rid, fold, gene, alpha, pcc in cat.alpha_curves(run_ids).iter_rows():
        out[rid].append((fold, gene, alpha, pcc))
    return out


def _per_gene(cat: Catalog, run_ids: list[str]) -> dict[str, dict[str, dict[str, float | None]]]:
    """run -> mode -> gene -> mean over folds (per-sample: mean over a fold's samples first)."""
    if not run_ids:
        return {}
    marks = ", ".join("?" * len(run_ids))
    out: dict[str, dict[str, dict[str, float | None]]] = defaultdict(lambda: {m: {} for m in PCC_MODES})
    pooled = cat.rows(f"""
        SELECT run_id, gene, avg(pcc) FILTER (WHERE NOT isnan(pcc)) FROM gene_results
        WHERE run_id IN ({marks}) GROUP BY run_id, gene""", run_ids)  # noqa: S608
    for rid, gene, v in pooled:
        out[rid]["pooled"][gene] = finite(v)
    sample = cat.rows(f"""
        SELECT run_id, gene, avg(v) FROM (
            SELECT run_id, fold, gene, avg(pcc) FILTER (WHERE NOT isnan(pcc)) AS v FROM sample_gene_results
            WHERE run_id IN ({marks}) GROUP BY run_id, fold, gene)
        GROUP BY run_id, gene""", run_ids)  # noqa: S608
    for rid, gene, v in sample:
        out[rid]["per-sample"][gene] = finite(v)
    return out


# -- downloads -------------------------------------------------------------------------------------------

def _frames(cat: Catalog, board: Leaderboard) -> dict[str, pl.DataFrame]:
    """The rows behind every view, for the CSV downloads (included runs only)."""
    import polars as pl

    runs = board.included
    ids = [r["run_id"] for r in runs]
    marks = ", ".join("?" * len(ids)) or "NULL"
    labels = {p["fingerprint"]: p["label"] for p in board.protocols}
    results = pl.DataFrame([{
        "run_id": r["run_id"], "task": r["task"], "synthetic": r["synthetic"], "encoder": r["encoder"],
        "reducer": r["reducer"], "variant": r["variant"], "shown_in_main_views": r["shown"],
        "protocol": labels[r["protocol_fingerprint"]], "alpha_rule": r["alpha_rule"], "solver": r["solver"],
        "gene_rule": r["gene_rule"], "seed": r["seed"], "folds": r["folds"],
        "pcc_mean": r["scores"]["pooled"]["mean"], "pcc_std": r["scores"]["pooled"]["std"],
        "pcc_per_sample_mean": r["scores"]["per-sample"]["mean"], "pcc_per_sample_std": r["scores"]["per-sample"]["std"],
        "mse_mean": r["mse_mean"], "n_nan": r["n_nan"], "reducer_options": json.dumps(r["reducer_options"], sort_keys=True),
        "weights_fingerprint": r["weights_fingerprint"], "task_fingerprint": r["task_fingerprint"],
        "protocol_fingerprint": r["protocol_fingerprint"], "stbench_version": r["stbench_version"],
        "finished_at": r["finished_at"],
    } for r in runs], infer_schema_length=None)
    return {
        "results": results,
        "folds": cat._frame(f"SELECT * FROM fold_results WHERE run_id IN ({marks}) ORDER BY run_id, fold", ids),  # noqa: S608
        "genes": cat._frame(f"SELECT * FROM gene_results WHERE run_id IN ({marks}) ORDER BY run_id, fold, gene", ids),  # noqa: S608
        "sample_genes": cat._frame(f"SELECT * FROM sample_gene_results WHERE run_id IN ({marks}) "  # noqa: S608
                                   "ORDER BY run_id, fold, sample_id, gene", ids),
    }


def best_gene(board: Leaderboard, task: str, encoder: str, genes: list[str], *, protocol: str | None = None) -> str | None:
    """The best-predicted of ``genes`` for ``encoder`` on ``task``: the highest pooled PCC (mean over folds, as on the
    task page) averaged over the reducers shown under ``protocol`` (default: the task's first protocol with runs of
    the encoder); the first in name order among equals; None when no gene has a score."""
    per = board.tasks[task]["genes"]
    fps = [protocol] if protocol else [fp for fp in board.tasks[task]["protocols"]]
    for fp in fps:
        by_reducer = per.get(fp, {}).get("pooled", {}).get(encoder)
        if not by_reducer:
            continue
        means = {}
        for g in genes:
            vals = [v[g] for v in by_reducer.values() if v.get(g) is not None]
            if vals:
                means[g] = sum(vals) / len(vals)
        if means:
            return min(means, key=lambda g: (-means[g], g))
    return None
