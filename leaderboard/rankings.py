"""A task page's rankings with the evidence behind each step, computed at build time from per-gene rows.

Per (protocol, PCC mode), encoders are ranked within each reducer and reducers within each encoder, by the
task score (mean over folds of the mean PCC over genes; the main views' number). Each entry is compared with
the next one down, paired over (fold, gene) (`stbench.leaderboard.stats.compare`: Wilcoxon signed-rank and a
bootstrap interval of the mean difference); the p-values of every neighbour pair shown for one (protocol, mode)
are Holm-corrected together. A pair counts as told apart only when `stats.verdict` says so (adjusted p, an
interval clear of zero, enough folds, every fold agreeing); entries joined by pairs that cannot be told apart
share a rank range ("1–3") instead of a rank each. Each task also gets Kendall's tau between its rankings
under the HEST alpha and under a cross-validated alpha (same genes, seed and expression).

Pure: plain dicts in, plain dicts out (JSON-able, NaN as None).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from stbench.leaderboard import stats

__all__ = ["Scores", "rank_taus", "task_rankings"]

# run_id -> mode -> {(fold, gene): pcc}
Scores = Mapping[str, Mapping[str, Mapping[tuple[int, str], float]]]


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _ranking(entries: list[tuple[str, dict[str, Any]]], mode: str, scores: Scores) -> dict[str, Any]:
    """Entries ``(name, run)`` ranked best first; the comparisons with the next entry (p not yet adjusted)."""
    scored = [(n, r) for n, r in entries if r["scores"][mode]["mean"] is not None]
    unscored = [(n, r) for n, r in entries if r["scores"][mode]["mean"] is None]
    scored.sort(key=lambda e: (-e[1]["scores"][mode]["mean"], e[0]))
    rows = []
    for i, (name, run) in enumerate(scored + unscored):
        sc = run["scores"][mode]
        rows.append({"name": name, "run_id": run["run_id"], "mean": sc["mean"], "std": sc["std"],
                     "folds": sc["folds"], "position": i + 1 if sc["mean"] is not None else None, "next": None})
    for i in range(len(scored) - 1):
        a, b = scored[i][1]["run_id"], scored[i + 1][1]["run_id"]
        sa, sb = scores.get(a, {}).get(mode, {}), scores.get(b, {}).get(mode, {})
        c = stats.compare(sa, sb)
        rows[i]["next"] = {"vs": scored[i + 1][0], "n": c.n, "mean_diff": _num(c.mean_diff),
                           "ci": [_num(c.ci_low), _num(c.ci_high)], "p": _num(c.p), "p_holm": None,
                           "fold_diffs": stats.fold_differences(sa, sb), "_c": c}
    return {"rows": rows}


def _tiers(rows: list[dict[str, Any]]) -> None:
    """``rank``: a position, or the range of positions joined by neighbours that cannot be told apart."""
    i = 0
    while i < len(rows):
        if rows[i]["position"] is None:
            rows[i]["rank"], rows[i]["tied"] = None, False
            i += 1
            continue
        j = i
        while rows[j]["next"] is not None and not rows[j]["next"]["apart"]:
            j += 1
        label = str(rows[i]["position"]) if i == j else f"{rows[i]['position']}–{rows[j]['position']}"
        for k in range(i, j + 1):
            rows[k]["rank"], rows[k]["tied"] = label, i != j
        i = j + 1


def task_rankings(runs: list[dict[str, Any]], scores: Scores, *, protocols: list[str],
                  modes: tuple[str, ...]) -> dict[str, Any]:
    """``{protocol: {mode: {"encoders": {reducer: ranking}, "reducers": {encoder: ranking}, "n_pairs": int}}}`` for
    the task's shown runs (one per protocol, encoder and reducer)."""
    out: dict[str, Any] = {}
    for fp in protocols:
        mine = [r for r in runs if r["protocol_fingerprint"] == fp]
        reducers = list(dict.fromkeys(r["reducer"] for r in mine))
        encoders = sorted({r["encoder"] for r in mine})
        out[fp] = {}
        for mode in modes:
            by_reducer = {red: _ranking([(r["encoder"], r) for r in mine if r["reducer"] == red], mode, scores)
                          for red in reducers}
            by_encoder = {enc: _ranking([(r["reducer"], r) for r in mine if r["encoder"] == enc], mode, scores)
                          for enc in encoders}
            pairs = [row["next"] for rk in [*by_reducer.values(), *by_encoder.values()] for row in rk["rows"]
                     if row["next"] is not None]
            adjusted = stats.holm([p["p"] if p["p"] is not None else math.nan for p in pairs])
            for pair, p_adj in zip(pairs, adjusted):
                c = pair.pop("_c")
                pair["p_holm"] = _num(p_adj)
                pair["reason"] = stats.verdict(c, p_adj, pair["fold_diffs"])
                pair["apart"] = pair["reason"] == ""
                pair["fold_diffs"] = list(pair["fold_diffs"].values())
            for rk in [*by_reducer.values(), *by_encoder.values()]:
                _tiers(rk["rows"])
            out[fp][mode] = {"encoders": by_reducer, "reducers": by_encoder, "n_pairs": len(pairs)}
    return out


def rank_taus(runs: list[dict[str, Any]], pairs: list[tuple[dict[str, Any], dict[str, Any]]], *,
              modes: tuple[str, ...]) -> list[dict[str, Any]]:
    """Kendall's tau between the task's ranking of its (encoder, reducer) entries under a HEST-alpha protocol and
    under a cross-validated one, per pair of protocols ``(hest, cv)`` given as `Leaderboard.protocols` entries."""
    out = []
    def score(fp: str, mode: str) -> dict[str, float]:
        return {f"{r['encoder']} · {r['reducer']}": r["scores"][mode]["mean"] for r in runs
                if r["protocol_fingerprint"] == fp and r["scores"][mode]["mean"] is not None}

    for a, b in pairs:
        for mode in modes:
            sa, sb = score(a["fingerprint"], mode), score(b["fingerprint"], mode)
            common = sorted(set(sa) & set(sb))
            if not common:
                continue
            out.append({"from": a["fingerprint"], "to": b["fingerprint"], "from_label": a["label"], "to_label": b["label"],
                        "mode": mode, "n": len(common), "tau": _num(stats.kendall_tau(sa, sb)), "entries": common})
    return out
