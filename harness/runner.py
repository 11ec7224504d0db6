"""The runner: one task x one encoder x some reducers, under one or more protocols.

It only wires the pieces together: validate the task's files, make sure embeddings exist in the store,
then for each reducer and fold: fit the reducer on the training fold (once for every protocol with the same
seed), fit each protocol's ridge on the training fold, predict the test fold, score per gene, and write the
fold's rows in one transaction. A run already complete in the store for the same identity is reused unless
``force``. Grids of tasks x encoders (`stbench.grid`) call `run_cells` once per (encoder, task).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import stbench
from stbench import expression as ex
from stbench import metrics
from stbench.errors import DataError
from stbench.encoders.weights import encoder_label
from stbench.protocol import Protocol
from stbench.regression import CV_ALPHAS, cv_alpha, fit_ridge, hest_alpha, ridge_path
from stbench.tasks import PatchFile, Task

if TYPE_CHECKING:
    from anndata import AnnData
    from rich.progress import Progress

    from stbench.embeddings_import import ImportedEmbeddings
    from stbench.encoders import Encoder
    from stbench.extract import PipelineCache
    from stbench.reducers import Reducer
    from stbench.stores import Store
    from stbench.stores.catalog import FoldRecord

__all__ = ["CellFailure", "FittedFold", "FoldPrediction", "ReducerChoice", "ReducerPlan", "RunResult",
           "SnapshotSelections", "check_aliases", "check_task", "compute_fold", "eval_genes", "finish_runs", "fit_fold",
           "fit_predict_fold",
           "pending_runs", "plan_reducer", "predict_fold", "prepare_reducers", "run_cells", "run_id_for", "run_task",
           "start_runs", "write_folds"]

log = logging.getLogger("stbench")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # as the catalog stores times


@dataclass(frozen=True)
class ReducerChoice:
    """A reducer name and its options, as given on the command line."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """What one (task, encoder, reducer, protocol) produced, as read back from the store."""

    run_id: str
    task: str
    synthetic: bool
    encoder: str
    weights_fingerprint: str
    reducer: str
    reducer_options: str
    protocol: Protocol
    folds: list[dict]  # fold_results rows
    cached: bool
    sample_pcc: dict[int, dict[str, list[float]]] = field(default_factory=dict)  # fold -> test sample -> gene PCCs

    @property
    def encoder_label(self) -> str:
        """The encoder as tables name it ("resnet50 (random weights)" for the random-weight control)."""
        return encoder_label(self.encoder, self.weights_fingerprint)

    @property
    def pcc(self) -> tuple[float, float]:
        """Pooled PCC (HEST): mean and population std over folds of each fold's mean over genes."""
        return metrics.task_summary([f["pcc_mean"] for f in self.folds])

    @property
    def pcc_per_sample(self) -> tuple[float, float]:
        """Per-sample PCC: see `metrics.per_sample_task_summary`."""
        return metrics.per_sample_task_summary(self.sample_pcc)

    @property
    def mse(self) -> float:
        return float(np.mean([f["mse_mean"] for f in self.folds])) if self.folds else float("nan")

    @property
    def n_nan(self) -> int:
        return int(sum(f["n_nan"] for f in self.folds))


@dataclass
class _SampleData:
    X: np.ndarray
    counts: AnnData  # raw counts, rows in patch-file order
    coords: np.ndarray


def check_task(task: Task, genes: Sequence[str]) -> None:
    """Validate every file a run will read, before anything is written: patch files open and hold
    ``img``, barcodes are unique and all have a count row, the genes exist in every count file, counts are
    finite and non-negative (read in blocks), and no test sample is a training sample under another id."""
    import anndata as ad

    needed = {s for f in task.folds for s in (*f.train, *f.test)}
    for sid in sorted(needed):
        sample = task.samples[sid]
        with PatchFile(sample.patches) as pf:
            barcodes = pf.barcodes
        if not sample.adata.exists():
            raise DataError(sample.adata, "count file does not exist")
        try:
            backed = ad.read_h5ad(sample.adata, backed="r")
        except Exception as exc:  # noqa: BLE001 - h5py/anndata raise many types for broken files
            raise DataError(sample.adata, f"cannot read as h5ad, truncated or corrupt? ({type(exc).__name__}: {exc})") from exc
        try:
            obs, var = backed.obs_names, backed.var_names
            if not obs.is_unique:
                raise DataError(sample.adata, f"duplicate barcode {obs[obs.duplicated()][0]!r} in obs_names")
            known = set(obs)
            missing = [b for b in barcodes if b not in known]
            if missing:
                raise DataError(
                    sample.adata,
                    f"{len(missing)} of {len(barcodes)} barcodes of {sample.patches.name} have no count row (first: {missing[0]!r})",
                )
            if genes:
                ex.check_genes_present(backed, genes, path=sample.adata)
            ex.check_counts(backed.file["X"], sample.adata, obs_names=obs, var_names=var)
        finally:
            backed.file.close()
    check_aliases(task)


def check_aliases(task: Task) -> None:
    """Refuse a fold whose test sample has the same patch or count file, by content, as one of its training
    samples under another id (a copy or a link): it would leak the test fold into training. Content digests
    are `file_digest`'s, cached, and the task's fingerprint needs them anyway."""
    from stbench.hashing import file_digest

    for fold in task.folds:
        seen: dict[tuple[str, str], tuple[str, Path]] = {}
        for sid in fold.train:
            s = task.samples[sid]
            seen.update({(kind, file_digest(p)): (sid, p) for kind, p in (("patch", s.patches), ("count", s.adata))})
        for sid in fold.test:
            s = task.samples[sid]
            for kind, path in (("patch", s.patches), ("count", s.adata)):
                if (hit := seen.get((kind, file_digest(path)))) is not None:
                    raise DataError(task.path / "splits" / f"test_{fold.index}.csv",
                                    f"test sample {sid!r} of fold {fold.index} has the same {kind} file content as "
                                    f"training sample {hit[0]!r} ({path.name} = {hit[1].name}): one sample under two "
                                    "ids leaks the test fold into training; remove the copy")


def run_id_for(task: Task, encoder: str, weights_fingerprint: str, reducer: Reducer, protocol: Protocol) -> str:
    """The identity of a result set: the same inputs always give the same id."""
    parts = [task.name, task.fingerprint, encoder, weights_fingerprint, reducer.name, reducer.options_key(), protocol.fingerprint]
    if reducer.version != 1:  # version 1 ids predate the field and stay as they were
        parts.append(f"{reducer.name}@{reducer.version}")
    key = json.dumps(parts)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _load_samples(task: Task, paths: dict[str, str]) -> dict[str, _SampleData]:
    from stbench.stores import read_embeddings

    out = {}
    for sid, path in paths.items():
        emb = read_embeddings(Path(path))  # refuses NaN or infinite values, naming the file
        counts = ex.counts_for_barcodes(ex.read_counts(task.samples[sid].adata), emb.barcodes, path=task.samples[sid].adata)
        out[sid] = _SampleData(emb.embeddings, counts, emb.coords)
    return out


def _stack(data: dict[str, _SampleData], ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.concatenate([data[s].X for s in ids])
    coords = np.concatenate([data[s].coords for s in ids])
    groups = np.concatenate([[s] * len(data[s].X) for s in ids])
    return X, coords, groups


def _fold_genes(protocol: Protocol, task: Task, data: dict[str, _SampleData], train: Sequence[str]) -> list[str]:
    if protocol.genes == "task":
        return list(task.genes)
    if protocol.genes == "file":
        return list(protocol.gene_list)
    # train-hvg: HEST's rule on the training samples only; candidates limited to genes every sample has,
    # so the test fold can be scored (gene names, not values, of the test samples are consulted).
    common = set.intersection(*(set(d.counts.var_names) for d in data.values()))
    adatas = [data[s].counts[:, [g for g in data[s].counts.var_names if g in common]] for s in train]
    return ex.hest_gene_rule(adatas, n_top=protocol.n_genes)


def _train_fold(data: dict[str, _SampleData], ids: Sequence[str], *, seed: int, task: str, encoder: str, fold: int,  # noqa: ANN202
                device: str | None = None, cache=None, progress=None):  # noqa: ANN001
    import anndata as ad

    from stbench.reducers import TrainFold

    X, coords, groups = _stack(data, ids)
    expr = ad.concat([data[s].counts for s in ids], join="inner", label="sample_id", keys=list(ids), index_unique="-")
    return TrainFold(X=X, expression=expr, coords=coords, sample_ids=groups, seed=seed, task=task, encoder=encoder,
                     fold=fold, device=device, cache=cache, progress=progress)


class _StoreSelections:
    """The reducers' gene-selection cache for one (task, fold), kept in the store's catalog."""

    def __init__(self, store: Store, task: Task, fold: int) -> None:
        self.store, self.task, self.fold = store, task, fold

    def get(self, kind: str, key: dict[str, Any]) -> dict[str, Any] | None:
        return self.store.catalog.selection(self.task.fingerprint, self.fold, kind, key)

    def put(self, kind: str, key: dict[str, Any], value: dict[str, Any]) -> None:
        self.store.catalog.add_selection(task=self.task.name, task_fingerprint=self.task.fingerprint, fold=self.fold,
                                         kind=kind, key=key, value=value, stbench_version=stbench.__version__)


class SnapshotSelections:
    """A gene-selection cache that reads a snapshot of the catalog's selections for one (task, fold) and
    keeps what is added in ``new``, for the one process that writes the catalog to store (Ray workers)."""

    def __init__(self, snapshot: dict[tuple[str, str], dict[str, Any]] | None = None) -> None:
        self.snapshot = dict(snapshot or {})
        self.new: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    @staticmethod
    def key(kind: str, key: dict[str, Any]) -> tuple[str, str]:
        return kind, json.dumps(key, sort_keys=True)

    def get(self, kind: str, key: dict[str, Any]) -> dict[str, Any] | None:
        return self.snapshot.get(self.key(kind, key))

    def put(self, kind: str, key: dict[str, Any], value: dict[str, Any]) -> None:
        self.snapshot[self.key(kind, key)] = value
        self.new.append((kind, key, value))


@dataclass
class FittedFold:
    """A reducer fitted on one fold's training samples and the features it gives both parts of the fold;
    nothing in it comes from the test samples' expression. One fit serves every ridge setting."""

    reducer: Reducer
    Z_train: np.ndarray
    Z_test: np.ndarray
    train_groups: np.ndarray
    test_groups: np.ndarray
    seconds: float


@dataclass
class FoldPrediction:
    """One fold fitted and predicted: the fitted reducer, the ridge's alpha, test truth and predictions."""

    reducer: Reducer
    n_train: int
    n_features: int
    alpha: float
    Y_test: np.ndarray
    pred: np.ndarray
    test_groups: np.ndarray
    seconds: float
    train_mean: np.ndarray | None = None  # each gene's mean over the training spots: the baseline prediction
    sweep: tuple[list[float], np.ndarray] | None = None  # --alpha sweep: alphas and test PCC (n_alphas, n_genes)


def fit_fold(
    reducer: Reducer, data: dict[str, _SampleData], fold, task: Task, encoder: str, *, seed: int,  # noqa: ANN001
    device: str | None = None, cache=None, progress=None,  # noqa: ANN001
) -> FittedFold:
    """Fit the reducer on the training samples of ``fold`` and transform both parts of it."""
    start = time.perf_counter()
    train = _train_fold(data, fold.train, seed=seed, task=task.name, encoder=encoder, fold=fold.index,
                        device=device, cache=cache, progress=progress)
    X_test, _, test_groups = _stack(data, fold.test)
    Z_train = reducer.fit_transform(train)  # PCA: scikit-learn's fit_transform scores, as HEST
    Z_test = reducer.transform(X_test)
    return FittedFold(reducer, Z_train, Z_test, np.asarray(train.sample_ids), np.asarray(test_groups),
                      time.perf_counter() - start)


def predict_fold(fitted: FittedFold, protocol: Protocol, genes: list[str], data: dict[str, _SampleData],
                 fold) -> FoldPrediction:  # noqa: ANN001
    """Fit the ridge of ``protocol`` on the fitted fold's training features and predict its test samples.
    Reads only the training samples' expression: the test expression is used for ``Y_test`` alone."""
    start = time.perf_counter()
    Z_train, Z_test = fitted.Z_train, fitted.Z_test
    Y_train = np.concatenate([ex.log1p_dense(data[s].counts, genes) for s in fold.train])
    alpha = protocol.alpha_for(Z_train.shape[1], len(genes))
    if alpha is None:
        grid = protocol.sweep_alphas() if protocol.is_sweep else CV_ALPHAS
        alpha, _ = cv_alpha(Z_train, Y_train, fitted.train_groups, alphas=grid, intercept=protocol.intercept)
        if alpha in (grid[0], grid[-1]):
            log.warning("fold %d: cross-validated alpha %.3g is at the edge of the grid %.0e..%.0e",
                        fold.index, alpha, grid[0], grid[-1])
    ridge = fit_ridge(Z_train, Y_train, alpha=alpha, solver=protocol.solver, intercept=protocol.intercept,
                      dtype=protocol.dtype)
    Y_test = np.concatenate([ex.log1p_dense(data[s].counts, genes) for s in fold.test])
    sweep = None
    if protocol.is_sweep:  # the test PCC at every alpha (and at HEST's), for the sensitivity curve only
        alphas = sorted({*protocol.sweep_alphas(), hest_alpha(Z_train.shape[1], len(genes))})
        curve = [metrics.pearson_per_gene(Y_test, pred) for _, pred in
                 ridge_path(Z_train, Y_train, Z_test, alphas, intercept=protocol.intercept)]
        sweep = (alphas, np.asarray(curve))
    # a cell's time is what it would cost alone: the (shared) reducer fit plus its own ridge
    return FoldPrediction(fitted.reducer, len(Z_train), Z_train.shape[1], float(alpha), Y_test, ridge.predict(Z_test),
                          fitted.test_groups, fitted.seconds + time.perf_counter() - start,
                          Y_train.astype(np.float64).mean(axis=0), sweep)


def fit_predict_fold(
    reducer: Reducer, protocol: Protocol, genes: list[str], data: dict[str, _SampleData], fold, task: Task,  # noqa: ANN001
    encoder: str, *, device: str | None = None, cache=None, progress=None,  # noqa: ANN001
) -> FoldPrediction:
    """Fit the reducer and the ridge on the training samples of ``fold``, predict its test samples.
    Reads only the training samples' expression: the test expression is used for ``Y_test`` alone."""
    fitted = fit_fold(reducer, data, fold, task, encoder, seed=protocol.seed, device=device, cache=cache,
                      progress=progress)
    return predict_fold(fitted, protocol, genes, data, fold)


def _evaluate_fold(
    reducer: Reducer, protocol: Protocol, genes: list[str], data: dict[str, _SampleData], fold, task: Task, encoder: str,  # noqa: ANN001
    *, device: str | None = None, cache=None, progress=None, fitted: FittedFold | None = None,  # noqa: ANN001
) -> dict[str, Any]:
    """Fit (unless ``fitted`` is given), predict and score one fold per gene (pooled and per test sample).
    Pure of the store."""
    if fitted is None:
        fp = fit_predict_fold(reducer, protocol, genes, data, fold, task, encoder, device=device, cache=cache,
                              progress=progress)
    else:
        fp = predict_fold(fitted, protocol, genes, data, fold)
    Y_test, pred = fp.Y_test, fp.pred
    pcc, mse = metrics.pearson_per_gene(Y_test, pred), metrics.mse_per_gene(Y_test, pred)
    per_sample = {}
    for sid in fold.test:
        m = fp.test_groups == sid
        per_sample[sid] = (metrics.pearson_per_gene(Y_test[m], pred[m]), metrics.mse_per_gene(Y_test[m], pred[m]), int(m.sum()))
    _, coords, _ = _stack(data, fold.test)
    barcodes = [b for s in fold.test for b in data[s].counts.obs_names]
    # MSE of predicting each gene's training mean: what a model must beat for its MSE to mean anything
    baseline = None if fp.train_mean is None else metrics.mse_per_gene(Y_test, np.broadcast_to(fp.train_mean, Y_test.shape))
    return {
        "n_train": fp.n_train, "n_test": len(Y_test), "n_features": fp.n_features, "alpha": fp.alpha,
        "pcc": pcc, "mse": mse, "mse_baseline": baseline, "per_sample": per_sample, "seconds": fp.seconds,
        "sweep": fp.sweep,
        "predictions": {"sample_id": fp.test_groups, "barcode": barcodes, "coords": coords, "y_true": Y_test, "y_pred": pred},
    }


def error_message(exc: BaseException) -> str:
    """How a failure is stored in ``runs.error`` and shown in a grid's summary (an error that came back
    from another process under another type keeps its original type's name, ``type_name``)."""
    return f"{getattr(exc, 'type_name', None) or type(exc).__name__}: {exc}"


def prepare_reducers(task: Task, encoder: str, choices: Sequence[ReducerChoice]) -> list[Reducer]:
    """Reducer instances with their options checked and their task/encoder defaults settled (paper defaults,
    gene-set files): everything that can be wrong with a choice fails here, before any work."""
    from stbench.reducers import create_reducer

    reducers = [create_reducer(c.name, **c.options) for c in choices]
    for r in reducers:
        r.resolve(task=task.name, encoder=encoder)
    return reducers


def eval_genes(task: Task, protocol: Protocol) -> Sequence[str]:
    """The genes a protocol evaluates that must exist in every sample (none to check for train-hvg)."""
    return task.genes if protocol.genes == "task" else protocol.gene_list


def run_task(
    task: Task,
    encoder_name: str,
    reducer_choices: Sequence[ReducerChoice],
    protocol: Protocol,
    store: Store,
    *,
    weights: str | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    compile: bool = False,
    force: bool = False,
    progress: Progress | None = None,
) -> list[RunResult]:
    """Run every reducer on every fold of ``task`` with one encoder; returns one result per reducer.

    Reads: the task folder; embeddings in the store. Writes: embedding files and the ``embeddings``,
    ``runs``, ``fold_results``, ``gene_results`` and ``sample_gene_results`` tables. The first failure is
    raised, its run row marked failed.
    """
    from stbench.embeddings_import import encoder_for

    encoder = encoder_for(encoder_name)  # a free name: embeddings imported under it
    reducers = prepare_reducers(task, encoder.name, reducer_choices)
    check_task(task, eval_genes(task, protocol))
    out = run_cells(task, encoder, reducers, [protocol], store, weights=weights, batch_size=batch_size, device=device,
                    compile=compile, force=force, progress=progress, keep_going=False)
    return [r for r in out if isinstance(r, RunResult)]


@dataclass
class CellFailure:
    """One (task, encoder, reducer, protocol) that failed; its run row, when it has one, says the same."""

    task: str
    encoder: str
    reducer: str
    reducer_options: str
    protocol: Protocol
    run_id: str | None  # None when it failed before a run id existed (extraction)
    error: Exception

    @property
    def message(self) -> str:
        return error_message(self.error)

    @property
    def encoder_label(self) -> str:
        return self.encoder


def _run_row(task: Task, encoder: str, fingerprint: str, reducer: Reducer, protocol: Protocol, run_id: str) -> dict:
    return {
        "run_id": run_id, "task": task.name, "task_fingerprint": task.fingerprint, "synthetic": task.synthetic,
        "encoder": encoder, "weights_fingerprint": fingerprint, "reducer": reducer.name,
        "reducer_options": reducer.options_key(), "protocol": json.dumps(protocol.to_dict(), sort_keys=True),
        "protocol_fingerprint": protocol.fingerprint, "seed": protocol.seed, "solver": protocol.solver,
        "alpha_rule": protocol.alpha, "gene_rule": protocol.genes, "n_folds": len(task.folds),
        "stbench_version": stbench.__version__,
    }


def run_cells(
    task: Task,
    encoder: Encoder | ImportedEmbeddings,
    reducers: Sequence[Reducer],
    protocols: Sequence[Protocol],
    store: Store,
    *,
    weights: str | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    compile: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    pipelines: PipelineCache | None = None,
    keep_going: bool = True,
    on_start: Callable[[Reducer], None] | None = None,
    on_cell: Callable[[RunResult | CellFailure], None] | None = None,
) -> list[RunResult | CellFailure]:
    """Every reducer under every protocol on ``task`` with one encoder (checked reducers: `prepare_reducers`;
    the task: `check_task`), in reducer-major order, sharing what does not depend on the cell: embeddings are
    ensured once, counts and embeddings read once, and each reducer is fitted once per fold and seed for all
    protocols (ridge settings, evaluation genes) with that seed.

    A cell complete in the store is read back unless ``force``. With ``keep_going`` a failing cell comes back
    as a `CellFailure` (its run row marked failed) and the others go on; otherwise the first failure is
    raised. ``on_start(reducer)`` is called before a reducer's cells, ``on_cell(outcome)`` after each cell.
    """
    from stbench.embeddings_import import select_embeddings
    from stbench.extract import ensure_embeddings

    def report(outcome: RunResult | CellFailure) -> RunResult | CellFailure:
        if on_cell is not None:
            on_cell(outcome)
        return outcome

    def failed_all(exc: Exception) -> list[RunResult | CellFailure]:
        if not keep_going:
            raise exc
        return [report(CellFailure(task.name, encoder.name, r.name, r.options_key(), p, None, exc))
                for r in reducers for p in protocols]

    try:
        encoder = select_embeddings(encoder, weights, store, task)  # imported embeddings: no model behind them
        fingerprint = encoder.fingerprint(weights)
    except Exception as exc:  # noqa: BLE001 - every cell fails with it
        return failed_all(exc)
    # The cache is checked first: a fully stored block loads no model and reads no patch or embedding.
    plans = [plan_reducer(task, encoder.name, fingerprint, r, protocols, store, force=force) for r in reducers]
    paths: dict[str, str] = {}
    loaded: dict[str, _SampleData] = {}

    def data() -> dict[str, _SampleData]:  # read counts and embeddings only if some fold must be computed
        if not loaded:
            loaded.update(_load_samples(task, paths))
        return loaded

    if any(plan.groups for plan in plans):
        try:
            fingerprint, paths = ensure_embeddings(task, encoder, store, weights=weights, batch_size=batch_size,
                                                  device=device, compile=compile, progress=progress, pipelines=pipelines)
            data()  # read and checked (finite embeddings, counts) before any run row is written
        except Exception as exc:  # noqa: BLE001
            log.debug("%s/%s: extraction or reading failed", task.name, encoder.name, exc_info=True)
            return failed_all(exc)

    out: list[RunResult | CellFailure] = []
    errors: list[dict[str, Exception]] = [{} for _ in plans]
    left = [len(plan.groups) for plan in plans]
    emitted = 0

    def emit_ready() -> None:  # outcomes go out in reducer order, each reducer once all its groups are done
        nonlocal emitted
        while emitted < len(plans) and left[emitted] == 0:
            if on_start is not None:
                on_start(plans[emitted].reducer)
            out.extend(report(o) for o in plans[emitted].outcomes(store, errors[emitted]))
            emitted += 1

    def needed(run: dict) -> bool:
        """Whether this process must still compute ``run`` (another may have done it meanwhile)."""
        status = store.catalog.run_status(run["run_id"])
        if force:  # recomputed unless another process finished it after this one started
            return status != "complete" or not store.catalog.finished_since(run["run_id"], started)
        return status != "complete"

    def compute(i: int, seed: int, group: list[tuple[dict, Protocol]], *, wait: bool) -> list[tuple[dict, Protocol]]:
        """Compute the runs of ``group`` that no other process is computing (each run is locked in the
        store while it is computed); returns the runs another process holds. With ``wait``, waits for them."""
        plan = plans[i]
        held, busy = [], []
        for run, p in group:
            lock = store.lock("run", run["run_id"], what=f"the result set {run['run_id']} ({task.name}/{encoder.name}/"
                                                         f"{plan.reducer.name}) being computed by another process")
            (held if lock.acquire(None if wait else 0) else busy).append((run, p, lock))
        try:
            todo = [(run, p) for run, p, _ in held if needed(run)]
            for run_id in {run["run_id"] for run, _, _ in held} - {run["run_id"] for run, _ in todo}:
                plan.todo.pop(run_id, None)  # computed by another process: read back as stored
            if todo:
                if on_start is not None:
                    on_start(plan.reducer)
                errors[i].update(_compute_runs(todo, plan.reducer, task, data, store, seed=seed, force=force,
                                               progress=progress, device=device))
        finally:
            for _, _, lock in held:
                lock.release()
        return [(run, p) for run, p, _ in busy]

    def group_done(i: int) -> None:
        left[i] -= 1
        if errors[i] and not keep_going:
            raise next(iter(errors[i].values()))
        emit_ready()

    started = _utcnow()
    emit_ready()
    deferred = []
    for i, plan in enumerate(plans):
        for seed, group in plan.groups:
            busy = compute(i, seed, group, wait=False)
            if busy:
                deferred.append((i, seed, busy))
            else:
                group_done(i)
    for i, seed, busy in deferred:  # one run at a time, in a fixed order: no two processes wait on each other
        for run in sorted(busy, key=lambda rp: rp[0]["run_id"]):
            compute(i, seed, [run], wait=True)
        group_done(i)
    return out


@dataclass
class ReducerPlan:
    """One reducer's cells under every protocol of an (encoder, task): which must be computed, grouped by
    seed (one reducer fit per fold and seed serves every protocol of the group)."""

    task: Task
    encoder: str
    fingerprint: str
    reducer: Reducer
    cells: list[tuple[Protocol, str]]  # (protocol, run id), in protocol order
    todo: dict[str, Protocol]  # run id -> protocol, for the cells not complete in the store (all with force)
    groups: list[tuple[int, list[tuple[dict, Protocol]]]]  # (seed, [(run row, protocol)])

    def outcome(self, store: Store, protocol: Protocol, run_id: str, error: Exception | None) -> RunResult | CellFailure:
        """The cell read back from the store, or its failure."""
        r = self.reducer
        if error is not None:
            return CellFailure(self.task.name, self.encoder, r.name, r.options_key(), protocol, run_id, error)
        return RunResult(run_id, self.task.name, self.task.synthetic, self.encoder, self.fingerprint, r.name,
                         r.options_key(), protocol, store.catalog.fold_table(run_id).to_dicts(),
                         run_id not in self.todo, store.catalog.sample_pccs(run_id))

    def outcomes(self, store: Store, errors: dict[str, Exception]) -> list[RunResult | CellFailure]:
        return [self.outcome(store, p, rid, errors.get(rid)) for p, rid in self.cells]


def plan_reducer(task: Task, encoder: str, fingerprint: str, reducer: Reducer, protocols: Sequence[Protocol],
                 store: Store, *, force: bool) -> ReducerPlan:
    """The cells of one reducer and the groups of them that must be computed (reads the catalog)."""
    cells = [(p, run_id_for(task, encoder, fingerprint, reducer, p)) for p in protocols]
    todo = {rid: p for p, rid in cells if force or store.catalog.run_status(rid) != "complete"}
    groups = [(seed, [(_run_row(task, encoder, fingerprint, reducer, p, rid), p) for rid, p in todo.items() if p.seed == seed])
              for seed in dict.fromkeys(p.seed for p in todo.values())]
    return ReducerPlan(task, encoder, fingerprint, reducer, cells, todo, groups)


def start_runs(runs: Sequence[tuple[dict, Protocol]], task: Task, reducer: Reducer, store: Store, *,
               force: bool) -> dict[str, set[int]]:
    """Insert (or, with ``force``, reset) the run rows; returns the folds each run already has stored.

    A complete result recomputed under ``force`` is not touched: its new folds are kept aside
    (``store.replacing``) and replace it in one transaction only once all of them succeeded (`finish_runs`)."""
    done: dict[str, set[int]] = {}
    for run, _ in runs:
        run_id = run["run_id"]
        status = store.catalog.run_status(run_id)
        done[run_id] = set() if force or status is None else store.catalog.folds_done(run_id)
        if force and status == "complete":
            store.replacing[run_id] = []
        elif status is None or force:
            store.catalog.start_run(run, force=force)
        elif done[run_id]:
            log.info("%s/%s/%s: resuming, folds %s already stored", task.name, run["encoder"], reducer.name,
                     sorted(done[run_id]))
    return done


def pending_runs(runs: Sequence[tuple[dict, Protocol]], done: dict[str, set[int]], errors: dict[str, Exception],
                 fold: int) -> list[tuple[dict, Protocol]]:
    """The runs that still need ``fold``: not stored yet, and not failed on an earlier fold."""
    return [(run, p) for run, p in runs if run["run_id"] not in errors and fold not in done[run["run_id"]]]


def compute_fold(reducer: Reducer, runs: Sequence[tuple[dict, Protocol]], task: Task,
                 data: Callable[[], dict[str, _SampleData]], fold, *, seed: int, model_path: Callable[[str, int], Path],  # noqa: ANN001
                 device: str | None = None, cache=None, progress=None,  # noqa: ANN001
                 ) -> tuple[dict[str, FoldRecord], dict[str, Exception]]:
    """Fit ``reducer`` once on the training samples of ``fold`` and evaluate every run of ``runs`` (same
    reducer, options and seed; they differ in the ridge or the evaluation genes) on it. Pure of the catalog:
    returns each run's `FoldRecord` or its error (a failed fit fails every run); writes only the fitted
    model files (``model_path(run_id, fold)``). Both executors call this, the local one in process and the
    Ray one in a worker."""
    from stbench.stores.catalog import FoldRecord

    try:
        fitted = fit_fold(reducer, data(), fold, task, runs[0][0]["encoder"], seed=seed, device=device, cache=cache,
                          progress=progress)
        report = reducer.report()
        if report:
            log.info("%s %s fold %d: %s", task.name, reducer.name, fold.index, reducer.describe_report())
    except Exception as exc:  # noqa: BLE001 - recorded on every run that needed this fit
        log.debug("%s %s fold %d: fit failed", task.name, reducer.name, fold.index, exc_info=True)
        return {}, {run["run_id"]: exc for run, _ in runs}
    records: dict[str, FoldRecord] = {}
    errors: dict[str, Exception] = {}
    saved: list[Path | None] = []  # the fit's state, saved once and shared by every run of the group
    for run, protocol in runs:
        run_id = run["run_id"]
        try:
            genes = _fold_genes(protocol, task, data(), fold.train)
            out = _evaluate_fold(reducer, protocol, genes, data(), fold, task, run["encoder"], device=device,
                                 cache=cache, progress=progress, fitted=fitted)
            if not saved:
                saved.append(reducer.save(model_path(run_id, fold.index)))
            model = saved[0]
            records[run_id] = FoldRecord(
                fold=fold.index, n_train=out["n_train"], n_test=out["n_test"], n_features=out["n_features"],
                alpha=out["alpha"], genes=genes, pcc=out["pcc"], mse=out["mse"],
                summary=metrics.summarise_fold(out["pcc"], out["mse"]), per_sample=out["per_sample"],
                train_samples=fold.train, test_samples=fold.test, seconds=out["seconds"],
                reducer_report=report or None, model_path=None if model is None else str(model),
                predictions=out["predictions"], mse_baseline=out["mse_baseline"], sweep=out["sweep"],
            )
        except Exception as exc:  # noqa: BLE001 - recorded on this run; the others go on
            log.debug("%s %s fold %d: failed", task.name, run_id, fold.index, exc_info=True)
            errors[run_id] = exc
    return records, errors


def write_folds(runs: Sequence[tuple[dict, Protocol]], records: dict[str, FoldRecord], store: Store,
                errors: dict[str, Exception]) -> None:
    """Write each run's fold record (one transaction each; a run being replaced keeps it aside); a write
    that fails is that run's error."""
    for run, _ in runs:
        rec = records.get(run["run_id"])
        if rec is None:
            continue
        if rec.model_path is not None:  # recorded relative to the store root, wherever the file was written
            rec.model_path = store.relative(rec.model_path)
        if run["run_id"] in store.replacing:
            store.replacing[run["run_id"]].append(rec)
            continue
        try:
            store.catalog.write_fold(run, rec)
        except Exception as exc:  # noqa: BLE001 - recorded on this run; the others go on
            log.debug("%s fold %d: write failed", run["run_id"], rec.fold, exc_info=True)
            errors.setdefault(run["run_id"], exc)


def finish_runs(runs: Sequence[tuple[dict, Protocol]], store: Store, errors: dict[str, Exception]) -> None:
    """Mark each run complete or failed; a run recomputed under --force replaces its previous result only
    now, and only if every fold succeeded (else the previous result stays as it was)."""
    for run, _ in runs:
        run_id = run["run_id"]
        exc = errors.get(run_id)
        if run_id in store.replacing:
            records = store.replacing.pop(run_id)
            if exc is None:
                try:
                    store.catalog.replace_run(run, records)
                    continue
                except Exception as write_exc:  # noqa: BLE001 - the previous result stays
                    log.debug("%s: replacing failed", run_id, exc_info=True)
                    errors[run_id] = exc = write_exc
            log.warning("%s/%s/%s: the recomputation failed; the previous result is kept (%s)", run["task"],
                        run["encoder"], run["reducer"], error_message(exc))
            continue
        store.catalog.finish_run(run_id, error=None if exc is None else error_message(exc))


def _compute_runs(runs: Sequence[tuple[dict, Protocol]], reducer: Reducer, task: Task, data, store: Store, *,  # noqa: ANN001
                  seed: int, force: bool, progress: Progress | None, device: str | None = None) -> dict[str, Exception]:
    """Compute, in this process, the folds the store lacks of result sets that share one reducer fit per
    fold (`compute_fold`). Each fold of each run is committed on its own, so a run killed mid-way resumes
    at its first missing fold. Returns the runs that failed, with their error (their rows are marked
    failed); a failed fit fails every run that needed it."""
    done = start_runs(runs, task, reducer, store, force=force)
    errors: dict[str, Exception] = {}
    bar = progress.add_task(f"{task.name} · {reducer.name} folds", total=len(task.folds), log="steps",
                            unit="fold") if progress else None  # log: a line per fold without a terminal
    try:
        for fold in task.folds:
            pending = pending_runs(runs, done, errors, fold.index)
            if pending:
                records, failed = compute_fold(reducer, pending, task, data, fold, seed=seed, device=device,
                                               cache=_StoreSelections(store, task, fold.index), progress=progress,
                                               model_path=store.model_path)
                errors.update(failed)
                write_folds(pending, records, store, errors)
            if progress is not None:
                progress.advance(bar)
    finally:
        if progress is not None:
            progress.remove_task(bar)
    finish_runs(runs, store, errors)
    return errors
