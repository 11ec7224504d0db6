"""The embedding view's 2-D layouts, computed once per representation and kept in the store.

A *layout* is one representation of fold 0's test spots of a task under one encoder (its raw embeddings, PCA
fitted on fold 0's training spots, or a BP-Booster model that a run saved, applied unchanged), projected to 2-D
(scanpy: UMAP on a 15-NN graph of the top 50 PCs, or t-SNE) and clustered (k-means, k = 6, on the same 50
PCs). Computing one takes seconds; a build needs a few per task, so each is computed once and cached in
the store::

    <store>/cache/layouts/<key[:2]>/<key>.npz

``key`` is the sha256 of `layout_spec`'s JSON: everything the layout depends on. That means the content
digests (sha256) of the embedding files it projects (and of the training files PCA is fitted on), the
digest of the fitted model file, the subsample (cap and seed), the projection and its parameters, the
k-means settings, the seed, the versions of the libraries that compute it, and `LAYOUT_VERSION`, which is
bumped whenever this computation changes. A different input gives a different key, so nothing is ever
invalidated in place. A cached layout is exactly what recomputing it gives: the computation is seeded and
runs on one thread (BLAS included), whether in the build's child process or in the build itself. The
subsampled spots of a task (barcodes, coordinates) are cached the same way (``kind: "spots"``), so a build
whose layouts are all cached reads no embedding file.

This is the one place the leaderboard computes: the build runs it as a store step (`ensure_layouts`; in a
child process on a second CPU while it writes the spatial pages, `Background`), and ``bench leaderboard
layouts`` runs it alone; the pages then read the cached layouts like any other stored result. Files are
written aside and renamed into place. A store that cannot be written (read-only mount) still gets its
layouts, computed for this build only, and the build says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from stbench.leaderboard.data import reducer_sort_key

if TYPE_CHECKING:
    from stbench.leaderboard.data import Leaderboard
    from stbench.stores import Store

__all__ = ["LAYOUT_VERSION", "CACHE_DIR", "MAX_EMBEDDING_SPOTS", "N_CLUSTERS", "Layout", "ViewPlan", "LayoutReport",
           "plan_view", "ensure_layouts", "cached", "compute_layouts", "Background", "spare_cpu", "layout_spec", "layout_key",
           "cache_path", "compute_layout"]

log = logging.getLogger("stbench")

LAYOUT_VERSION = 1  # bump when the computation below changes (the cache key changes with it)
CACHE_DIR = Path("cache") / "layouts"  # under the store root
MAX_EMBEDDING_SPOTS = 3000  # per projection
N_CLUSTERS = 6
N_NEIGHBORS = 15
N_PCS = 50  # UMAP's graph, t-SNE and k-means run on this many principal components of a wider representation
PCA_COMPONENTS = 256  # the "pca" representation, as the pipeline's PCA reducer
_LIBRARIES = ("numpy", "scikit-learn", "scanpy", "anndata", "umap-learn", "pynndescent", "numba")


# -- what a task's view needs, from the catalog ------------------------------------------------------------

@dataclass
class ViewPlan:
    """One task's embedding view, resolved from the catalog: the files it reads and the representations."""

    task: str
    encoder: str  # the name views show (a random-weight control is labelled)
    encoder_name: str  # the registered name, which keys the store
    weights_fingerprint: str
    ref_run: str  # the run whose fold 0 defines the test and training samples
    test: list[tuple[str, Path]]  # (sample, embedding file), fold 0's test samples in order
    train: list[tuple[str, Path]]
    boosters: list[dict[str, Any]]  # reducer, run_id, fold, variant, path (None: missing)
    method: str = "umap"
    seed: int = 1
    max_spots: int = MAX_EMBEDDING_SPOTS
    reason: str | None = None  # why the view cannot be built (then nothing else is set)
    warnings: list[str] = field(default_factory=list)


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


def _existing(*candidates: Path | None) -> Path | None:
    return next((p for p in candidates if p is not None and p.exists()), None)


def plan_view(store: Store, board: Leaderboard, task: str, *, method: str = "umap", seed: int = 1,
              max_spots: int = MAX_EMBEDDING_SPOTS) -> ViewPlan:
    """What the embedding view of ``task`` shows and reads. Reads: the catalog's ``embeddings`` rows of the
    chosen encoder (file paths); the runs' ``fold_results.model_path`` (through ``board``)."""
    from stbench.stores import embedding_path

    picked = _pick_encoder(board, task)
    plan = ViewPlan(task=task, encoder="", encoder_name="", weights_fingerprint="", ref_run="", test=[], train=[],
                    boosters=[], method=method, seed=seed, max_spots=max_spots)
    if picked is None:
        plan.reason = "no result sets for this task"
        return plan
    encoder, boosters = picked
    runs = [r for r in board.included if r["shown"] and r["task"] == task and r["encoder"] == encoder]
    ref = boosters[0] if boosters else runs[0]
    name, fp = ref["encoder_name"], ref["weights_fingerprint"]  # the registered name keys the store
    plan.encoder, plan.encoder_name, plan.weights_fingerprint, plan.ref_run = encoder, name, fp, ref["run_id"]
    recorded = store.catalog.embedding_paths(task, name, fp)

    def files(samples: list[str]) -> list[tuple[str, Path]] | None:
        out = []
        for s in samples:
            path = _existing(embedding_path(store.root, task, name, fp, s),
                             store.resolve(recorded[s]) if s in recorded else None)
            if path is None:
                return None
            out.append((s, path))
        return out

    test, train = files(ref["test_samples"][0]), files(ref["train_samples"][0])
    if not test or train is None or not train:
        plan.reason = (f"the embedding files of {encoder} for this task are not in the store (rerun `bench run --task "
                       f"{task} --encoder {name}` to recompute them)")
        return plan
    plan.test, plan.train = test, train
    for r in boosters:
        fold = min(r["model_paths"])
        path = _existing(store.resolve(r["model_paths"][fold]))
        if path is None:
            plan.warnings.append(f"{r['reducer']}: the fitted model of run {r['run_id']} is missing from the store")
            continue
        plan.boosters.append({"reducer": r["reducer"], "run_id": r["run_id"], "fold": fold, "variant": r["variant"],
                              "path": path})
    if not boosters:
        plan.warnings.append("no BP-Booster run of this task kept a fitted model: run `bench run --reducer "
                             "bpbooster-gp` to add it")
    return plan


# -- keys and the cache ----------------------------------------------------------------------------------

def _versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    out = {}
    for lib in (*_LIBRARIES, *extra):
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "absent"
    return out


def _projection(method: str, seed: int) -> dict[str, Any]:
    if method == "tsne":
        return {"method": "tsne", "n_pcs": N_PCS, "perplexity": "min(30, (n-1)/3), at least 2", "seed": seed}
    return {"method": "umap", "n_pcs": N_PCS, "n_neighbors": N_NEIGHBORS, "umap": "scanpy defaults", "seed": seed}


def layout_spec(kind: str, *, test: list[tuple[str, str]], max_spots: int, seed: int, method: str | None = None,
                train: list[tuple[str, str]] | None = None, model: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything a cached entry depends on. ``kind``: ``spots`` (the subsampled test spots), ``raw``, ``pca``
    or ``booster``; ``test``/``train``: (sample, sha256 of its embedding file) in order; ``model``: the fitted
    model file's digest and what applies it."""
    spec: dict[str, Any] = {"layout_version": LAYOUT_VERSION, "kind": kind, "test": [list(t) for t in test],
                            "subsample": {"max_spots": max_spots, "seed": seed, "rule": "sorted choice without replacement"}}
    if kind == "spots":
        spec["versions"] = {"numpy": _versions()["numpy"]}  # the subsample's generator
        return spec
    spec["projection"] = _projection(str(method), seed)
    spec["kmeans"] = {"k": N_CLUSTERS, "n_init": 10, "on": f"top {N_PCS} PCs", "seed": seed}
    if kind == "pca":
        spec["pca"] = {"fit": "fold 0 training spots", "scaler": "StandardScaler", "n_components": PCA_COMPONENTS,
                       "seed": seed, "train": [list(t) for t in train or []]}
    if kind == "booster":
        spec["model"] = model
    spec["versions"] = _versions(("torch",) if kind == "booster" else ())
    return spec


def layout_key(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cache_path(store_root: Path, key: str) -> Path:
    return Path(store_root) / CACHE_DIR / key[:2] / f"{key}.npz"


@dataclass
class Layout:
    """A cached entry: arrays plus the JSON ``meta`` (its spec, label and what it was computed from)."""

    key: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


def _read(path: Path, key: str) -> Layout | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError) as exc:  # missing, or damaged: recomputed and replaced
        if path.exists():
            log.warning("layout cache %s unreadable (%s); recomputing it", path, exc)
        return None
    return Layout(key, arrays, meta)


def _write(path: Path, layout: Layout) -> bool:
    """Write aside, rename into place; False (and nothing left) where the store cannot be written."""
    from stbench.tempfiles import temp_path

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
        try:
            with tmp.open("wb") as fh:
                np.savez(fh, meta=np.array(json.dumps(layout.meta, sort_keys=True)), **layout.arrays)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        log.debug("layout cache %s not writable (%s)", path, exc)
        return False
    return True


# -- computing ---------------------------------------------------------------------------------------------

def _subsample(n: int, cap: int, seed: int) -> np.ndarray:
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


def compute_layout(Z: np.ndarray, *, method: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(2-D coordinates, k-means labels) of the rows of ``Z``: the top 50 PCs when wider (scanpy), then UMAP
    on their 15-NN graph (or t-SNE), and k-means (k = 6, 10 starts) on the same PCs."""
    import anndata as ad
    import scanpy as sc
    from sklearn.cluster import KMeans

    n, d = Z.shape
    a = ad.AnnData(np.asarray(Z, dtype=np.float32))
    rep, feats = "X", np.asarray(a.X)
    if d > N_PCS and n > 3:
        sc.pp.pca(a, n_comps=min(N_PCS, n - 1, d - 1), random_state=seed)
        rep, feats = "X_pca", np.asarray(a.obsm["X_pca"])
    if method == "tsne":
        sc.tl.tsne(a, use_rep=rep, random_state=seed, perplexity=max(2.0, min(30.0, (n - 1) / 3)))
        xy = np.asarray(a.obsm["X_tsne"], dtype=np.float64)
    else:
        sc.pp.neighbors(a, n_neighbors=max(2, min(N_NEIGHBORS, n - 1)), use_rep=rep, random_state=seed)
        sc.tl.umap(a, random_state=seed)
        xy = np.asarray(a.obsm["X_umap"], dtype=np.float64)
    k = min(N_CLUSTERS, n)
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(np.asarray(feats, dtype=np.float64))
    return xy, labels.astype(np.int16)


@dataclass
class LayoutReport:
    computed: list[str] = field(default_factory=list)  # "<task>: <kind>" per layout computed by this build
    reused: list[str] = field(default_factory=list)
    unwritable: bool = False  # the cache could not be written (read-only store)


@dataclass
class _Inputs:
    """Embeddings loaded on the first cache miss of a task, then shared by its representations."""

    plan: ViewPlan
    X: np.ndarray | None = None  # the subsampled test rows
    X_train: np.ndarray | None = None


def _load(files: list[tuple[str, Path]]) -> tuple[np.ndarray, list[tuple[str, str]], np.ndarray]:
    from stbench.stores import read_embeddings

    parts = [(s, read_embeddings(p)) for s, p in files]
    X = np.concatenate([e.embeddings for _, e in parts]).astype(np.float32)
    keys = [(s, b) for s, e in parts for b in e.barcodes]
    coords = np.concatenate([np.asarray(e.coords, dtype=np.float64).reshape(-1, 2) for _, e in parts])
    return X, keys, coords


def ensure_layouts(store: Store, plan: ViewPlan, report: LayoutReport | None = None) -> dict[str, Layout]:
    """The cached spots and layouts of one task's view (``"spots"``, ``"raw"``, ``"pca"``, then one per
    booster reducer), computing and storing the missing ones.

    Reads: the embedding files of ``plan`` (only on a cache miss; their digests always, from the digest cache),
    the fitted model files, ``<store>/cache/layouts/``. Writes: ``<store>/cache/layouts/<key[:2]>/<key>.npz``.
    """
    from stbench.hashing import file_digest

    report = report if report is not None else LayoutReport()
    test = [(s, file_digest(p)) for s, p in plan.test]
    train = [(s, file_digest(p)) for s, p in plan.train]
    inputs = _Inputs(plan)
    out: dict[str, Layout] = {}

    def get(name: str, spec: dict[str, Any], compute: Any) -> Layout:
        key = layout_key(spec)
        path = cache_path(store.root, key)
        hit = _read(path, key)
        counted = name != "spots"  # the subsample: an input of the layouts, not one
        if hit is not None and hit.meta.get("spec") == spec:
            if counted:
                report.reused.append(f"{plan.task}: {name}")
            return hit
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # one BLAS thread wherever it runs: the same bits in a child or here
            arrays, meta = compute()
        layout = Layout(key, arrays, {"spec": spec, **meta})
        if not _write(path, layout):
            report.unwritable = True
        if counted:
            report.computed.append(f"{plan.task}: {name}")
        return layout

    sub = {"max_spots": plan.max_spots, "seed": plan.seed}

    def spots() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        X, keys, coords = _load(plan.test)
        keep = _subsample(len(X), plan.max_spots, plan.seed)
        inputs.X = X[keep]
        samples = [s for s, _ in plan.test]
        return ({"sample": np.array([samples.index(keys[i][0]) for i in keep], dtype=np.int32),
                 "barcode": np.array([keys[i][1] for i in keep], dtype=str).reshape(-1),
                 "coords": coords[keep]},
                {"samples": samples, "n_spots": len(X), "dim": int(X.shape[1])})

    out["spots"] = get("spots", layout_spec("spots", test=test, **sub), spots)

    def test_rows() -> np.ndarray:
        if inputs.X is None:
            X, _, _ = _load(plan.test)
            inputs.X = X[_subsample(len(X), plan.max_spots, plan.seed)]
        return inputs.X

    def project(Z: np.ndarray, label: str, **meta: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        xy, cluster = compute_layout(Z, method=plan.method, seed=plan.seed)
        return {"xy": xy, "cluster": cluster}, {"label": label, **meta}

    def raw() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        X = test_rows()
        return project(X, f"raw embeddings ({X.shape[1]}-d)")

    common = {"test": test, "method": plan.method, **sub}
    out["raw"] = get("raw", layout_spec("raw", **common), raw)

    def pca() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler

        X_train, _, _ = _load(plan.train)
        n_pcs = min(PCA_COMPONENTS, X_train.shape[0], X_train.shape[1])
        scaler = StandardScaler().fit(X_train)
        model = PCA(n_components=n_pcs, random_state=plan.seed).fit(scaler.transform(X_train))
        return project(model.transform(scaler.transform(test_rows())), f"PCA-{n_pcs} (fitted at build time)")

    out["pca"] = get("pca", layout_spec("pca", train=train, **common), pca)
    for b in plan.boosters:
        model = _model(b)

        def booster(b: dict[str, Any] = b) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
            from stbench.reducers.bpbooster import load_booster

            Z = load_booster(b["path"]).transform(test_rows())
            return project(Z, f"{b['reducer']} latent ({Z.shape[1]}-d)", run_id=b["run_id"], fold=b["fold"])

        out[b["reducer"]] = get(b["reducer"], layout_spec("booster", model=model, **common), booster)
    return out


def cached(store: Store, plan: ViewPlan) -> bool:
    """Whether every entry of ``plan``'s view is in the cache (digests from the digest cache, then file checks)."""
    from stbench.hashing import file_digest

    test = [(s, file_digest(p)) for s, p in plan.test]
    sub = {"max_spots": plan.max_spots, "seed": plan.seed}
    common = {"test": test, "method": plan.method, **sub}
    specs = [layout_spec("spots", test=test, **sub), layout_spec("raw", **common),
             layout_spec("pca", train=[(s, file_digest(p)) for s, p in plan.train], **common)]
    specs += [layout_spec("booster", model=_model(b), **common) for b in plan.boosters]
    return all(cache_path(store.root, layout_key(spec)).is_file() for spec in specs)


def _model(b: dict[str, Any]) -> dict[str, Any]:
    from stbench.hashing import file_digest

    return {"file_sha256": file_digest(b["path"]), "reducer": b["reducer"], "applied_by": "load_booster(path).transform",
            "reducer_version": _reducer_version(b["reducer"])}


def _reducer_version(name: str) -> Any:
    from stbench.reducers import reducers

    try:
        return getattr(reducers.get(name), "version", None)
    except Exception:  # noqa: BLE001 - a plugin reducer no longer installed: its model cannot be applied anyway
        return None


def compute_layouts(store_root: Path, *, include_synthetic: bool = False, method: str = "umap", seed: int = 1,
                    tasks: list[str] | None = None) -> LayoutReport:
    """The layouts of every task (or of ``tasks``) into the store's cache: what ``bench leaderboard layouts`` runs,
    and what a build runs in the background (`Background`). Reads the catalog like the site; writes
    ``<store>/cache/layouts/``."""
    from stbench.leaderboard.data import load_leaderboard
    from stbench.stores import Store

    board = load_leaderboard(Path(store_root), include_synthetic=include_synthetic)
    report = LayoutReport()
    with Store(Path(store_root), read_only=True) as st:
        for task in board.tasks:
            if tasks is not None and task not in tasks:
                continue
            with st.catalog.session():
                plan = plan_view(st, board, task, method=method, seed=seed)
            if plan.reason is None:
                ensure_layouts(st, plan, report)
    return report


def spare_cpu() -> bool:
    """Whether this process may use a second CPU (affinity, cgroup quota, ``STBENCH_THREADS``)."""
    threads = os.environ.get("STBENCH_THREADS", "").strip()
    if threads.isdigit():
        return int(threads) >= 2
    try:
        from stbench.threads import available_cpus

        return available_cpus()[0] >= 2
    except ImportError:
        return len(os.sched_getaffinity(0)) >= 2 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) >= 2


class Background:
    """`compute_layouts` of some tasks in a child process, on one CPU, while the build writes the spatial pages on
    the other; the build then reads the layouts from the cache (and computes any the child did not store)."""

    def __init__(self, store_root: Path, tasks: list[str], *, include_synthetic: bool, method: str, seed: int) -> None:
        import subprocess
        import sys
        import tempfile

        args = {"store": str(store_root), "tasks": tasks, "include_synthetic": include_synthetic, "method": method,
                "seed": seed}
        one = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                                "STBENCH_THREADS")}
        # its output goes to files: a pipe nobody reads until the end could fill up and stall it
        self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "stbench.leaderboard.layouts", json.dumps(args)],
                                     stdout=self.out, stderr=self.err, text=True, env={**os.environ, **one})

    def finish(self) -> LayoutReport | None:
        """The child's report; None (logged) when it failed: the build then computes what is missing itself."""
        self.proc.wait()
        self.out.seek(0)
        self.err.seek(0)
        lines, err = self.out.read().strip().splitlines(), self.err.read().strip().splitlines()
        self.out.close()
        self.err.close()
        if self.proc.returncode != 0 or not lines:
            log.warning("computing the layouts in the background failed (exit %s): %s", self.proc.returncode,
                        (err or ["no output"])[-1])
            return None
        try:
            return LayoutReport(**json.loads(lines[-1]))
        except (ValueError, TypeError):
            return None

    def stop(self) -> None:
        """End the child if it still runs (the build failed or was interrupted)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()
        self.out.close()
        self.err.close()


if __name__ == "__main__":  # the child of `Background`
    import sys
    from dataclasses import asdict

    _args = json.loads(sys.argv[1])
    _report = compute_layouts(Path(_args["store"]), include_synthetic=_args["include_synthetic"], method=_args["method"],
                              seed=_args["seed"], tasks=_args["tasks"])
    print(json.dumps(asdict(_report)))
