"""Data for the two figure-like views: spatial maps (the BP-Booster paper's Figure 4: measured and predicted
expression at the spot coordinates, per reducer) and the embedding view (its Figure 5: a 2-D projection of
raw, PCA and BP-Booster embeddings of one task, coloured by k-means cluster or by a gene).

Both read only the store. Arrays are rounded (3 decimals for expression, 4 for projections) to keep the
pages small; large samples are subsampled with a fixed seed, and the page says so.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stbench.leaderboard.data import finite, reducer_sort_key

if TYPE_CHECKING:
    from stbench.leaderboard.data import Leaderboard
    from stbench.stores import Store

__all__ = ["MAX_MAP_SPOTS", "MAX_EMBEDDING_SPOTS", "spatial_maps", "embedding_view"]

MAX_MAP_SPOTS = 5000  # per sample on a spatial map
MAX_EMBEDDING_SPOTS = 3000  # per projection
N_CLUSTERS = 6


def _round(a: np.ndarray, digits: int) -> list:
    """JSON-ready list; NaN becomes None."""
    a = np.round(np.asarray(a, dtype=np.float64), digits)
    return [None if math.isnan(v) else v for v in a.tolist()]


def _subsample(n: int, cap: int, seed: int) -> np.ndarray:
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


# -- spatial maps -----------------------------------------------------------------------------------------

def spatial_maps(store: Store, board: Leaderboard, task: str, encoder: str, *, seed: int = 1,
                 max_spots: int = MAX_MAP_SPOTS) -> dict[str, Any] | None:
    """Measured and predicted log1p expression of every test spot of ``task``, for each shown run of
    ``encoder`` (every reducer, every protocol), or None when the store holds no predictions for them.

    Returns ``{"samples": [...], "genes": [...], "runs": [...], "truth": {sample: [[gene values]...]},
    "pred": {run_id: {sample: [[...]]}}, "pcc": {run_id: {sample: {gene: per-sample PCC}}}}``; the
    matrices are gene-major (one list of spot values per gene, in ``genes`` order).
    """
    import polars as pl

    if not board.has_spot_predictions:
        return None
    order = [p["fingerprint"] for p in board.protocols]
    runs = sorted((r for r in board.included if r["shown"] and r["task"] == task and r["encoder"] == encoder),
                  key=lambda r: (order.index(r["protocol_fingerprint"]), reducer_sort_key(r["reducer"])))
    if not runs:
        return None
    ids = [r["run_id"] for r in runs]
    marks = ", ".join("?" * len(ids))
    df = store.catalog.spot_predictions(ids)
    if len(df) == 0:
        return None
    # a sample tested in several folds (unusual splits): keep its first fold
    first = df.group_by(["run_id", "sample_id"]).agg(pl.col("fold").min().alias("_first"))
    df = df.join(first, on=["run_id", "sample_id"]).filter(pl.col("fold") == pl.col("_first")).drop("_first")
    genes = sorted(df["gene"].unique().to_list())
    gene_idx = {g: i for i, g in enumerate(genes)}
    samples, truth, pred = [], {}, {rid: {} for rid in ids}
    for sid in sorted(df["sample_id"].unique().to_list()):
        spots = (df.filter(pl.col("sample_id") == sid).select("barcode", "x", "y").unique("barcode", keep="first")
                 .sort("barcode"))
        n_total = len(spots)
        spots = spots[_subsample(n_total, max_spots, seed)]
        bidx = {b: i for i, b in enumerate(spots["barcode"].to_list())}
        samples.append({"id": sid, "x": _round(spots["x"].to_numpy(), 2), "y": _round(spots["y"].to_numpy(), 2),
                        "n_spots": n_total, "n_shown": len(spots),
                        "barcodes": spots["barcode"].to_list()})
        sub = df.filter((pl.col("sample_id") == sid) & pl.col("barcode").is_in(list(bidx)))
        for rid in ids:
            part = sub.filter(pl.col("run_id") == rid)
            if len(part) == 0:
                continue
            rows = np.array([bidx[b] for b in part["barcode"].to_list()])
            cols = np.array([gene_idx[g] for g in part["gene"].to_list()])
            mat = np.full((len(genes), len(bidx)), np.nan)
            mat[cols, rows] = part["y_pred"].to_numpy()
            pred[rid][sid] = [_round(row, 3) for row in mat]
            if sid not in truth:
                t = np.full((len(genes), len(bidx)), np.nan)
                t[cols, rows] = part["y_true"].to_numpy()
                truth[sid] = [_round(row, 3) for row in t]
    pcc_rows = store.catalog.rows(f"SELECT run_id, sample_id, gene, avg(pcc) FROM sample_gene_results "  # noqa: S608
                                  f"WHERE run_id IN ({marks}) GROUP BY run_id, sample_id, gene", ids)
    pcc: dict[str, dict[str, dict[str, float | None]]] = {rid: {} for rid in ids}
    for rid, sid, gene, v in pcc_rows:
        pcc[rid].setdefault(sid, {})[gene] = None if finite(v) is None else round(float(v), 4)
    return {
        "samples": samples, "genes": genes, "truth": truth, "pred": pred, "pcc": pcc,
        "runs": [{"run_id": r["run_id"], "reducer": r["reducer"], "protocol": r["protocol_fingerprint"],
                  "variant": r["variant"]} for r in runs if pred[r["run_id"]]],
        "max_spots": max_spots,
    }


# -- embedding view ---------------------------------------------------------------------------------------

def _resolve(recorded: Path | None, canonical: Path | None = None) -> Path | None:
    """The file where the store layout puts it, else where the catalog recorded it (`Store.resolve`)."""
    if canonical is not None and canonical.exists():
        return canonical
    if recorded is not None and recorded.exists():
        return recorded
    return None


def _pick_encoder(board: Leaderboard, task: str) -> tuple[str, list[dict[str, Any]]] | None:
    """The encoder with the most BP-Booster runs that kept a fitted model for fold 0 (default protocol
    first; trained weights before random-weight controls), and those runs; else the first encoder of the
    task with no booster."""
    shown = [r for r in board.included if r["shown"] and r["task"] == task]
    if not shown:
        return None
    order = {p["fingerprint"]: i for i, p in enumerate(board.protocols)}
    boosters = [r for r in shown if r["reducer"].startswith("bpbooster") and r["model_paths"]]
    if boosters:
        by_enc: dict[str, list[dict[str, Any]]] = {}
        for r in boosters:
            by_enc.setdefault(r["encoder"], []).append(r)
        def random(e: str) -> bool:  # a random-weight control is shown only when no trained encoder qualifies
            return any(str(r["weights_fingerprint"]).startswith("random:") for r in by_enc[e])

        enc = min(by_enc, key=lambda e: (-len({r["reducer"] for r in by_enc[e]}), random(e), e))
        chosen: dict[str, dict[str, Any]] = {}
        for r in sorted(by_enc[enc], key=lambda r: order.get(r["protocol_fingerprint"], 99)):
            chosen.setdefault(r["reducer"], r)
        return enc, sorted(chosen.values(), key=lambda r: reducer_sort_key(r["reducer"]))
    return min(r["encoder"] for r in shown), []


def _project(Z: np.ndarray, *, method: str, seed: int) -> np.ndarray:
    """2-D coordinates through scanpy: UMAP on a 15-NN graph (of the top 50 PCs when wider), or t-SNE."""
    import anndata as ad
    import scanpy as sc

    n, d = Z.shape
    a = ad.AnnData(np.asarray(Z, dtype=np.float32))
    rep = "X"
    if d > 50 and n > 3:
        sc.pp.pca(a, n_comps=min(50, n - 1, d - 1), random_state=seed)
        rep = "X_pca"
    if method == "tsne":
        sc.tl.tsne(a, use_rep=rep, random_state=seed, perplexity=max(2.0, min(30.0, (n - 1) / 3)))
        return np.asarray(a.obsm["X_tsne"])
    sc.pp.neighbors(a, n_neighbors=max(2, min(15, n - 1)), use_rep=rep, random_state=seed)
    sc.tl.umap(a, random_state=seed)
    return np.asarray(a.obsm["X_umap"])


def _kmeans(Z: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    k = min(N_CLUSTERS, len(Z))
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(np.asarray(Z, dtype=np.float64))


def embedding_view(store: Store, board: Leaderboard, task: str, *, method: str = "umap", seed: int = 1,
                   max_spots: int = MAX_EMBEDDING_SPOTS) -> dict[str, Any]:
    """Raw, PCA and BP-Booster embeddings of fold 0's test spots of one encoder, projected to 2-D.

    PCA is fitted here (StandardScaler then PCA up to 256 components, as the pipeline does) on fold 0's
    training spots; BP-Booster is the model saved by the run for fold 0, applied unchanged. Returns a dict
    with ``available: False`` and a ``reason`` when the store lacks what is needed.
    """
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler
    from stbench.stores import embedding_path, read_embeddings

    picked = _pick_encoder(board, task)
    if picked is None:
        return {"available": False, "reason": "no result sets for this task"}
    encoder, boosters = picked
    runs = [r for r in board.included if r["shown"] and r["task"] == task and r["encoder"] == encoder]
    ref = boosters[0] if boosters else runs[0]
    test, train = ref["test_samples"][0], ref["train_samples"][0]
    name = ref["encoder_name"]  # the registered name keys the store; ``encoder`` may be a label
    recorded = store.catalog.embedding_paths(task, name, ref["weights_fingerprint"])

    def load(samples: list[str]) -> tuple[np.ndarray, list[tuple[str, str]], np.ndarray] | None:
        parts = []
        for s in samples:
            path = _resolve(store.resolve(recorded[s]) if s in recorded else None,
                            embedding_path(store.root, task, name, ref["weights_fingerprint"], s))
            if path is None:
                return None
            parts.append((s, read_embeddings(path)))
        X = np.concatenate([p.embeddings for _, p in parts]).astype(np.float32)
        keys = [(s, b) for s, p in parts for b in p.barcodes]
        coords = np.concatenate([np.asarray(p.coords, dtype=np.float64) for _, p in parts])
        return X, keys, coords

    loaded = load(test)
    fitted = load(train) if train else None
    if loaded is None or fitted is None:
        return {"available": False, "reason": f"the embedding files of {encoder} for this task are not in the store "
                                              f"(rerun `bench run --task {task} --encoder {name}` to recompute them)"}
    X, keys, coords = loaded
    keep = _subsample(len(X), max_spots, seed)
    X, keys, coords = X[keep], [keys[i] for i in keep], coords[keep]
    X_train = fitted[0]
    n_pcs = min(256, X_train.shape[0], X_train.shape[1])
    scaler = StandardScaler().fit(X_train)
    pca = PCA(n_components=n_pcs, random_state=seed).fit(scaler.transform(X_train))
    reps: list[tuple[str, str, np.ndarray]] = [
        ("raw", f"raw embeddings ({X.shape[1]}-d)", X),
        ("pca", f"PCA-{n_pcs} (fitted at build time)", pca.transform(scaler.transform(X))),
    ]
    notes: list[str] = []  # what the page should say about its inputs
    warnings: list[str] = []  # what is missing (also printed by the build)
    for r in boosters:
        fold = min(r["model_paths"])
        path = _resolve(store.resolve(r["model_paths"][fold]))
        if path is None:
            warnings.append(f"{r['reducer']}: the fitted model of run {r['run_id']} is missing from the store")
            continue
        from stbench.reducers.bpbooster import load_booster

        Z = load_booster(path).transform(X)
        reps.append((r["reducer"], f"{r['reducer']} latent ({Z.shape[1]}-d)", Z))
        notes.append(f"{r['reducer']}: the model saved by run {r['run_id']} for fold {fold}"
                     + (f" (variant {r['variant']})" if r["variant"] else ""))
    if not boosters:
        warnings.append("no BP-Booster run of this task kept a fitted model: run `bench run --reducer bpbooster-gp` to add it")
    out_reps = []
    for name, label, Z in reps:
        xy = _project(Z, method=method, seed=seed)
        out_reps.append({"name": name, "label": label, "x": _round(xy[:, 0], 4), "y": _round(xy[:, 1], 4),
                         "cluster": _kmeans(Z, seed).astype(int).tolist()})
    return {
        "available": True, "encoder": encoder, "method": method, "seed": seed, "fold": 0, "samples": test,
        "n_spots": len(loaded[0]), "n_shown": len(X), "max_spots": max_spots, "k": min(N_CLUSTERS, len(X)),
        "spot_sample": [s for s, _ in keys], "spot_x": _round(coords[:, 0], 2), "spot_y": _round(coords[:, 1], 2),
        "reps": out_reps, "genes": _measured(store, board, task, keys), "notes": notes,
        "warnings": warnings,
    }


def _measured(store: Store, board: Leaderboard, task: str, keys: list[tuple[str, str]]) -> dict[str, list]:
    """Measured log1p expression of the shown spots, per gene, from any shown run's stored predictions."""
    if not board.has_spot_predictions:
        return {}
    import polars as pl

    samples = sorted({s for s, _ in keys})
    ids = [r["run_id"] for r in board.included if r["shown"] and r["task"] == task]
    # the measured values are the same in every run of the task: one per (sample, barcode, gene)
    df = (store.catalog.spot_predictions(ids, samples=samples).group_by(["sample_id", "barcode", "gene"])
          .agg(pl.col("y_true").first().alias("y")))
    if len(df) == 0:
        return {}
    pos = {k: i for i, k in enumerate(keys)}
    df = df.with_columns(pl.struct("sample_id", "barcode").map_elements(
        lambda s: pos.get((s["sample_id"], s["barcode"]), -1), return_dtype=pl.Int64).alias("i")).filter(pl.col("i") >= 0)
    out = {}
    for gene, part in df.group_by("gene"):
        v = np.full(len(keys), np.nan)
        v[part["i"].to_numpy()] = part["y"].to_numpy()
        out[gene[0]] = _round(v, 3)
    return dict(sorted(out.items()))
