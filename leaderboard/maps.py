"""Data for the two figure-like views: spatial maps (the BP-Booster paper's Figure 4: measured and predicted
expression at the spot coordinates, per reducer) and the embedding view (its Figure 5: a 2-D projection of
raw, PCA and BP-Booster embeddings of one task, coloured by k-means cluster or by a gene).

Both read only the store: spot predictions through `Catalog.spot_predictions`, the embedding view's layouts
from the store's layout cache (`stbench.leaderboard.layouts`, filled by the build's first step). Large
samples are subsampled with a fixed seed, and the page says so.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from stbench.leaderboard.data import finite, reducer_sort_key
from stbench.leaderboard.layouts import MAX_EMBEDDING_SPOTS, N_CLUSTERS, Layout, ViewPlan

if TYPE_CHECKING:
    import polars as pl
    from stbench.leaderboard.data import Leaderboard
    from stbench.stores import Catalog, Store

__all__ = ["MAX_MAP_SPOTS", "MAX_EMBEDDING_SPOTS", "SpatialMaps", "SpatialSample", "spatial_runs", "spatial_maps", "spatial_pcc",
           "embedding_view"]

MAX_MAP_SPOTS = 5000  # per sample on a spatial map


def _round(a: np.ndarray, digits: int) -> list:
    """JSON-ready list; NaN becomes None."""
    a = np.round(np.asarray(a, dtype=np.float64), digits)
    return [None if math.isnan(v) else v for v in a.tolist()]


def _subsample(n: int, cap: int, seed: int) -> np.ndarray:
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


# -- spatial maps -----------------------------------------------------------------------------------------

@dataclass
class SpatialSample:
    """One test sample of a spatial page: its shown spots (sorted by barcode, subsampled past the cap)."""

    id: str
    n_spots: int  # test spots stored for it
    barcodes: list[str]  # the spots shown
    x: np.ndarray
    y: np.ndarray
    truth: np.ndarray  # (genes, spots) float32, measured log1p expression; NaN where nothing is stored
    pred: np.ndarray  # (runs, genes, spots) float32, each run's prediction; NaN where the run has none

    @property
    def n_shown(self) -> int:
        return len(self.barcodes)


@dataclass
class SpatialMaps:
    """Measured and predicted expression of one (task, encoder) for its shown runs, as arrays."""

    task: str
    encoder: str
    genes: list[str]
    runs: list[dict[str, Any]]  # run_id, reducer, protocol (fingerprint), variant: the runs with predictions
    samples: list[SpatialSample]
    max_spots: int

    def has(self, run: int, sample: int) -> bool:
        return bool(np.isfinite(self.samples[sample].pred[run]).any())


def spatial_runs(board: Leaderboard, task: str, encoder: str) -> list[dict[str, Any]]:
    """The shown runs of ``encoder`` on ``task`` (every reducer, every protocol), in page order."""
    order = [p["fingerprint"] for p in board.protocols]
    return sorted((r for r in board.included if r["shown"] and r["task"] == task and r["encoder"] == encoder),
                  key=lambda r: (order.index(r["protocol_fingerprint"]), reducer_sort_key(r["reducer"])))


@dataclass
class _RunPart:
    """One run's stored predictions, compacted: rows index its own spot table and gene list."""

    spots: pl.DataFrame  # sample_id, barcode, x, y, local (row index)
    genes: list[str]
    local: np.ndarray  # per row: index into ``spots``
    gene: np.ndarray  # per row: index into ``genes``
    y_true: np.ndarray
    y_pred: np.ndarray


def _run_part(cat: Catalog, run_id: str) -> _RunPart | None:
    """One run's predictions as row -> (spot, gene) indices and values. Spots are told apart by a 64-bit hash of
    (sample, barcode), checked against the strings (on a collision they are joined on the strings instead): a
    join of millions of rows on two strings costs several times more."""
    import polars as pl

    df = cat.spot_predictions([run_id])
    if len(df) == 0:
        return None
    if df.select("sample_id", "fold").unique()["sample_id"].is_duplicated().any():
        # a sample tested in several folds (unusual splits): keep its first fold
        df = df.filter(pl.col("fold") == pl.col("fold").min().over("sample_id"))
    df = df.with_columns(pl.struct("sample_id", "barcode").hash(seed=0).alias("_key"))
    spots = df.unique(subset=["_key"], keep="first", maintain_order=True).select("sample_id", "barcode", "x", "y", "_key")
    keys = spots["_key"].to_numpy()
    order = np.argsort(keys, kind="stable")
    local = order[np.searchsorted(keys[order], df["_key"].to_numpy())]
    idx = pl.Series(local)
    if not ((df["sample_id"] == spots["sample_id"].gather(idx)).all() and (df["barcode"] == spots["barcode"].gather(idx)).all()):
        spots = df.unique(subset=["sample_id", "barcode"], keep="first", maintain_order=True).select(
            "sample_id", "barcode", "x", "y", "_key").with_row_index("local")  # two spots share a hash
        local = df.join(spots.select("sample_id", "barcode", "local"), on=["sample_id", "barcode"], how="left",
                        maintain_order="left")["local"].to_numpy()
        spots = spots.drop("local")
    genes = sorted(df["gene"].unique().to_list())
    gene = df["gene"].cast(pl.Enum(genes)).to_physical().to_numpy()
    return _RunPart(spots=spots.drop("_key").with_row_index("local"), genes=genes, local=local.astype(np.int32),
                    gene=gene.astype(np.int32), y_true=df["y_true"].to_numpy().astype(np.float32, copy=False),
                    y_pred=df["y_pred"].to_numpy().astype(np.float32, copy=False))  # 16 bytes a value


def spatial_maps(store: Store, board: Leaderboard, task: str, encoder: str, *, seed: int = 1,
                 max_spots: int = MAX_MAP_SPOTS) -> SpatialMaps | None:
    """Measured and predicted log1p expression of every test spot of ``task``, for each shown run of
    ``encoder`` (every reducer, every protocol), or None when the store holds no predictions for them.

    Runs are read one at a time and kept as index arrays (a task of 40,000 spots has 2 million values per run).
    A sample's spots are the union over runs, sorted by barcode; past ``max_spots`` a fixed-seed subset is shown. The measured
    values are the first run's (in page order) that has the spot: every run of a task stores the same ones.
    Reads: ``Catalog.spot_predictions`` of those runs.
    """
    import polars as pl

    if not board.has_spot_predictions:
        return None
    runs = spatial_runs(board, task, encoder)
    if not runs:
        return None
    parts: list[tuple[dict[str, Any], _RunPart]] = []
    with store.catalog.session():
        for r in runs:
            part = _run_part(store.catalog, r["run_id"])
            if part is not None:
                parts.append((r, part))
    if not parts:
        return None
    genes = sorted({g for _, p in parts for g in p.genes})
    gene_idx = {g: i for i, g in enumerate(genes)}
    union = (pl.concat([p.spots.select("sample_id", "barcode", "x", "y") for _, p in parts])
             .group_by("sample_id", "barcode").agg(pl.col("x").min(), pl.col("y").min()).sort("sample_id", "barcode"))
    sample_ids = union["sample_id"].to_list()
    starts = [0] + [i for i in range(1, len(sample_ids)) if sample_ids[i] != sample_ids[i - 1]] + [len(sample_ids)]
    keep, shown_ranges, offset = [], [], 0
    for a, b in itertools.pairwise(starts):
        chosen = a + _subsample(b - a, max_spots, seed)
        shown_ranges.append((sample_ids[a], b - a, offset, len(chosen)))
        keep.append(chosen)
        offset += len(chosen)
    keep_all = np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
    spot_of = np.full(len(union), -1, dtype=np.int64)  # union row -> shown spot index (-1: not shown)
    spot_of[keep_all] = np.arange(len(keep_all))
    union = union.with_columns(pl.Series("spot", spot_of))
    shown = union[keep_all]
    n_runs, n_genes, n_shown = len(parts), len(genes), len(keep_all)
    pred = np.full((n_runs, n_genes, n_shown), np.nan, dtype=np.float32)
    truth = np.full((n_genes, n_shown), np.nan, dtype=np.float32)
    for j in reversed(range(n_runs)):  # the first run's measured values are written last
        part = parts[j][1]
        to_spot = (part.spots.join(union.select("sample_id", "barcode", "spot"), on=["sample_id", "barcode"], how="left")
                   .sort("local")["spot"].to_numpy())
        to_gene = np.array([gene_idx[g] for g in part.genes], dtype=np.int64)
        s, g = to_spot[part.local], to_gene[part.gene]
        ok = s >= 0
        pred[j, g[ok], s[ok]] = part.y_pred[ok]
        truth[g[ok], s[ok]] = part.y_true[ok]
    samples = []
    xs, ys, barcodes = shown["x"].to_numpy(), shown["y"].to_numpy(), shown["barcode"].to_list()
    for sid, n_total, start, n in shown_ranges:
        cut = slice(start, start + n)
        samples.append(SpatialSample(id=sid, n_spots=n_total, barcodes=barcodes[cut], x=xs[cut], y=ys[cut],
                                     truth=truth[:, cut], pred=pred[:, :, cut]))
    return SpatialMaps(task=task, encoder=encoder, genes=genes, samples=samples, max_spots=max_spots,
                       runs=[{"run_id": r["run_id"], "reducer": r["reducer"], "protocol": r["protocol_fingerprint"],
                              "variant": r["variant"]} for r, _ in parts])


def spatial_pcc(store: Store, run_ids: list[str], samples: list[str], genes: list[str]) -> np.ndarray:
    """(runs, samples, genes): each run's PCC within each test sample, mean over the folds testing it; NaN where
    undefined. Reads: ``sample_gene_results``."""
    pcc = np.full((len(run_ids), len(samples), len(genes)), np.nan)
    if not run_ids:
        return pcc
    marks = ", ".join("?" * len(run_ids))
    rows = store.catalog.rows(f"SELECT run_id, sample_id, gene, avg(pcc) FROM sample_gene_results "  # noqa: S608
                              f"WHERE run_id IN ({marks}) GROUP BY run_id, sample_id, gene", run_ids)
    run_idx = {r: i for i, r in enumerate(run_ids)}
    sample_idx = {s: i for i, s in enumerate(samples)}
    gene_idx = {g: i for i, g in enumerate(genes)}
    for rid, sid, gene, v in rows:
        if sid in sample_idx and gene in gene_idx and finite(v) is not None:
            pcc[run_idx[rid], sample_idx[sid], gene_idx[gene]] = float(v)
    return pcc


# -- embedding view ---------------------------------------------------------------------------------------

def embedding_view(store: Store, plan: ViewPlan, layouts: dict[str, Layout], board: Leaderboard) -> dict[str, Any]:
    """The embedding view of ``plan.task`` from its cached layouts (`stbench.leaderboard.layouts.ensure_layouts`)
    and the measured expression of its spots (stored predictions of the reference run). Returns a dict
    with ``available: False`` and a ``reason`` when the store lacks what is needed."""
    if plan.reason is not None:
        return {"available": False, "reason": plan.reason}
    spots = layouts["spots"]
    samples = spots.meta["samples"]
    keys = [(samples[int(i)], str(b)) for i, b in zip(spots.arrays["sample"], spots.arrays["barcode"])]
    coords = spots.arrays["coords"]
    reps, notes = [], []
    for name, layout in layouts.items():
        if name == "spots":
            continue
        xy = layout.arrays["xy"]
        reps.append({"name": name, "label": layout.meta["label"], "x": _round(xy[:, 0], 4), "y": _round(xy[:, 1], 4),
                     "cluster": layout.arrays["cluster"].astype(int).tolist()})
    for b in plan.boosters:
        notes.append(f"{b['reducer']}: the model saved by run {b['run_id']} for fold {b['fold']}"
                     + (f" (variant {b['variant']})" if b["variant"] else ""))
    return {
        "available": True, "encoder": plan.encoder, "method": plan.method, "seed": plan.seed, "fold": 0,
        "samples": samples, "n_spots": int(spots.meta["n_spots"]), "n_shown": len(keys), "max_spots": plan.max_spots,
        "k": min(N_CLUSTERS, len(keys)), "spot_sample": [s for s, _ in keys], "spot_x": _round(coords[:, 0], 2),
        "spot_y": _round(coords[:, 1], 2), "reps": reps, "genes": _measured(store, board, plan, keys), "notes": notes,
        "warnings": list(plan.warnings), "layout_keys": {n: lay.key for n, lay in layouts.items()},
    }


def _measured(store: Store, board: Leaderboard, plan: ViewPlan, keys: list[tuple[str, str]]) -> dict[str, list]:
    """Measured log1p expression of the shown spots, per gene, from the reference run's stored predictions
    (its fold 0 tests exactly these samples; every run of the task stores the same measured values)."""
    if not board.has_spot_predictions or not keys:
        return {}
    import polars as pl

    samples = sorted({s for s, _ in keys})
    df = store.catalog.spot_predictions([plan.ref_run], samples=samples)
    if len(df) == 0:
        return {}
    df = df.filter(pl.col("fold") == pl.col("fold").min().over("sample_id"))
    pos = pl.DataFrame({"sample_id": [s for s, _ in keys], "barcode": [b for _, b in keys],
                        "i": np.arange(len(keys), dtype=np.int64)})
    df = df.join(pos, on=["sample_id", "barcode"])
    out = {}
    for gene, part in sorted(df.group_by("gene"), key=lambda t: t[0][0]):
        v = np.full(len(keys), np.nan)
        v[part["i"].to_numpy()] = part["y_true"].to_numpy()
        out[gene[0]] = _round(v, 3)
    return out
