"""The runner: one task x one encoder x some reducers, under one protocol.

It only wires the pieces together: validate the task's files, make sure embeddings exist in the store,
then for each reducer and fold: fit the reducer on the training fold, fit the ridge on the training
fold, predict the test fold, score per gene, and write the fold's rows in one transaction.
A run already complete in the store for the same identity is reused unless ``force``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import stbench
from stbench import expression as ex
from stbench import metrics
from stbench.errors import DataError
from stbench.protocol import Protocol
from stbench.regression import CV_ALPHAS, cv_alpha, fit_ridge
from stbench.tasks import PatchFile, Task

if TYPE_CHECKING:
    from anndata import AnnData
    from rich.progress import Progress

    from stbench.reducers import Reducer
    from stbench.stores import Store

__all__ = ["FoldPrediction", "ReducerChoice", "RunResult", "check_task", "fit_predict_fold", "run_id_for", "run_task"]

log = logging.getLogger("stbench")


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

    @property
    def pcc(self) -> tuple[float, float]:
        return metrics.task_summary([f["pcc_mean"] for f in self.folds])

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
    ``img``, barcodes are unique and all have a count row, and the genes exist in every count file."""
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
        finally:
            backed.file.close()


def run_id_for(task: Task, encoder: str, weights_fingerprint: str, reducer: Reducer, protocol: Protocol) -> str:
    """The identity of a result set: the same inputs always give the same id."""
    key = json.dumps(
        [task.name, task.fingerprint, encoder, weights_fingerprint, reducer.name, reducer.options_key(), protocol.fingerprint]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _load_samples(task: Task, paths: dict[str, str]) -> dict[str, _SampleData]:
    from stbench.stores import read_embeddings

    out = {}
    for sid, path in paths.items():
        emb = read_embeddings(Path(path))
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


def fit_predict_fold(
    reducer: Reducer, protocol: Protocol, genes: list[str], data: dict[str, _SampleData], fold, task: Task,  # noqa: ANN001
    encoder: str, *, device: str | None = None, cache=None, progress=None,  # noqa: ANN001
) -> FoldPrediction:
    """Fit the reducer and the ridge on the training samples of ``fold``, predict its test samples.
    Reads only the training samples' expression: the test expression is used for ``Y_test`` alone."""
    start = time.perf_counter()
    train = _train_fold(data, fold.train, seed=protocol.seed, task=task.name, encoder=encoder, fold=fold.index,
                        device=device, cache=cache, progress=progress)
    X_test, _, test_groups = _stack(data, fold.test)
    reducer.fit(train)
    Z_train, Z_test = reducer.transform(train.X), reducer.transform(X_test)
    Y_train = np.concatenate([ex.log1p_dense(data[s].counts, genes) for s in fold.train])
    alpha = protocol.alpha_for(Z_train.shape[1], len(genes))
    if alpha is None:
        alpha, _ = cv_alpha(Z_train, Y_train, train.sample_ids, intercept=protocol.intercept)
        if alpha in (CV_ALPHAS[0], CV_ALPHAS[-1]):
            log.warning("fold %d: cross-validated alpha %.3g is at the edge of the grid %.0e..%.0e",
                        fold.index, alpha, CV_ALPHAS[0], CV_ALPHAS[-1])
    ridge = fit_ridge(Z_train, Y_train, alpha=alpha, solver=protocol.solver, intercept=protocol.intercept)
    Y_test = np.concatenate([ex.log1p_dense(data[s].counts, genes) for s in fold.test])
    return FoldPrediction(reducer, len(Z_train), Z_train.shape[1], float(alpha), Y_test, ridge.predict(Z_test),
                          np.asarray(test_groups), time.perf_counter() - start)


def _evaluate_fold(
    reducer: Reducer, protocol: Protocol, genes: list[str], data: dict[str, _SampleData], fold, task: Task, encoder: str,  # noqa: ANN001
    *, device: str | None = None, cache=None, progress=None,  # noqa: ANN001
) -> dict[str, Any]:
    """Fit, predict and score one fold per gene (pooled and per test sample). Pure of the store."""
    fp = fit_predict_fold(reducer, protocol, genes, data, fold, task, encoder, device=device, cache=cache,
                          progress=progress)
    Y_test, pred = fp.Y_test, fp.pred
    pcc, mse = metrics.pearson_per_gene(Y_test, pred), metrics.mse_per_gene(Y_test, pred)
    per_sample = {}
    for sid in fold.test:
        m = fp.test_groups == sid
        per_sample[sid] = (metrics.pearson_per_gene(Y_test[m], pred[m]), metrics.mse_per_gene(Y_test[m], pred[m]), int(m.sum()))
    _, coords, _ = _stack(data, fold.test)
    barcodes = [b for s in fold.test for b in data[s].counts.obs_names]
    return {
        "n_train": fp.n_train, "n_test": len(Y_test), "n_features": fp.n_features, "alpha": fp.alpha,
        "pcc": pcc, "mse": mse, "per_sample": per_sample, "seconds": fp.seconds,
        "predictions": {"sample_id": fp.test_groups, "barcode": barcodes, "coords": coords, "y_true": Y_test, "y_pred": pred},
    }


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
    ``runs``, ``fold_results``, ``gene_results`` and ``sample_gene_results`` tables.
    """
    from stbench.encoders import get_encoder
    from stbench.extract import ensure_embeddings
    from stbench.reducers import create_reducer

    encoder = get_encoder(encoder_name)
    reducers = [create_reducer(c.name, **c.options) for c in reducer_choices]  # option errors before any work
    for r in reducers:  # paper defaults per task/encoder, gene-set files: settled before identity and extraction
        r.resolve(task=task.name, encoder=encoder.name)
    check_task(task, task.genes if protocol.genes == "task" else protocol.gene_list)
    fingerprint, paths = ensure_embeddings(task, encoder, store, weights=weights, batch_size=batch_size,
                                          device=device, compile=compile, progress=progress)

    loaded: dict[str, _SampleData] = {}

    def data() -> dict[str, _SampleData]:  # read counts and embeddings only if some fold must be computed
        if not loaded:
            loaded.update(_load_samples(task, paths))
        return loaded

    results = []
    for reducer in reducers:
        run_id = run_id_for(task, encoder.name, fingerprint, reducer, protocol)
        cached = store.catalog.run_status(run_id) == "complete" and not force
        if not cached:
            run = {
                "run_id": run_id, "task": task.name, "task_fingerprint": task.fingerprint, "synthetic": task.synthetic,
                "encoder": encoder.name, "weights_fingerprint": fingerprint, "reducer": reducer.name,
                "reducer_options": reducer.options_key(), "protocol": json.dumps(protocol.to_dict(), sort_keys=True),
                "protocol_fingerprint": protocol.fingerprint, "seed": protocol.seed, "solver": protocol.solver,
                "alpha_rule": protocol.alpha, "gene_rule": protocol.genes, "n_folds": len(task.folds),
                "stbench_version": stbench.__version__,
            }
            _compute_run(run, reducer, protocol, task, data, store, force=force, progress=progress, device=device)
        folds = store.catalog.fold_table(run_id).to_dicts()
        results.append(RunResult(run_id, task.name, task.synthetic, encoder.name, fingerprint, reducer.name,
                                 reducer.options_key(), protocol, folds, cached))
    return results


def _compute_run(run: dict, reducer: Reducer, protocol: Protocol, task: Task, data, store: Store, *,  # noqa: ANN001
                 force: bool, progress: Progress | None, device: str | None = None) -> None:
    """Compute the folds of one result set that the store lacks; each fold is committed on its own, so a
    run killed mid-way resumes at the first missing fold."""
    from stbench.stores.catalog import FoldRecord

    run_id = run["run_id"]
    status = store.catalog.run_status(run_id)
    done = set() if force or status is None else store.catalog.folds_done(run_id)
    if status is None or force:
        store.catalog.start_run(run, force=force)
    elif done:
        log.info("%s/%s/%s: resuming, folds %s already stored", task.name, run["encoder"], reducer.name, sorted(done))
    bar = progress.add_task(f"{reducer.name} folds", total=len(task.folds)) if progress else None
    try:
        for fold in task.folds:
            if fold.index not in done:
                genes = _fold_genes(protocol, task, data(), fold.train)
                out = _evaluate_fold(reducer, protocol, genes, data(), fold, task, run["encoder"], device=device,
                                     cache=_StoreSelections(store, task, fold.index), progress=progress)
                model = reducer.save(store.model_path(run_id, fold.index))
                report = reducer.report()
                if report:
                    log.info("%s %s fold %d: %s", task.name, reducer.name, fold.index, reducer.describe_report())
                store.catalog.write_fold(run, FoldRecord(
                    fold=fold.index, n_train=out["n_train"], n_test=out["n_test"], n_features=out["n_features"],
                    alpha=out["alpha"], genes=genes, pcc=out["pcc"], mse=out["mse"],
                    summary=metrics.summarise_fold(out["pcc"], out["mse"]), per_sample=out["per_sample"],
                    train_samples=fold.train, test_samples=fold.test, seconds=out["seconds"],
                    reducer_report=report or None, model_path=None if model is None else str(model),
                    predictions=out["predictions"],
                ))
            if progress is not None:
                progress.advance(bar)
    except Exception as exc:
        store.catalog.finish_run(run_id, error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if progress is not None:
            progress.remove_task(bar)
    store.catalog.finish_run(run_id)
