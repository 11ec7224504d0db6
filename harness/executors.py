"""The Ray executor of a grid (``bench run --executor ray``): the same cells as the local executor, as Ray tasks.

The local executor (`stbench.grid.run_grid`'s default) runs everything in this process. This one sends the
work to a Ray instance, local or a cluster:

- extraction: one task per (encoder, sample) without embeddings in the store. The driver resolves the
  weights fingerprint (which names the file); the worker loads the encoder, checks it finds the same
  weights, and writes the HDF5 file atomically into the store's embeddings folder, at the path the local
  executor uses; the driver registers it in the catalog.
- cells: one task per (encoder, task, reducer, seed, fold) fit, which evaluates every protocol variant
  sharing that fit (`stbench.runner.compute_fold`, as the local executor does). The worker reads embeddings
  and counts from the shared folders, saves the fitted model file, and returns the fold's records and any
  new gene selections; the driver alone writes the catalog (run rows, fold rows, selections).

Extraction and trainable reducers (those that keep a fitted state, e.g. BP-Booster) declare ``num_gpus``
when the device is CUDA (``--device cuda``, or ``auto`` on a cluster with GPUs); everything else one CPU.
Workers set `stbench.stores.catalog.NO_CATALOG_ENV`, so a worker that tried to open the catalog would fail.
The store folder (and the data root) must be on a filesystem every node sees at the same path.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stbench.errors import StbenchError

if TYPE_CHECKING:
    from rich.progress import Progress

    from stbench.grid import Block, CellOutcome, GridPlan
    from stbench.reducers import Reducer
    from stbench.runner import CellFailure, ReducerPlan, RunResult
    from stbench.stores import Store

__all__ = ["EXECUTORS", "RAY_MISSING", "RemoteError", "require_ray", "run_grid_ray"]

log = logging.getLogger("stbench")

EXECUTORS = ("local", "ray")
RAY_MISSING = 'the Ray executor needs ray, an optional extra: pip install "stbench[ray]"'


def require_ray():  # noqa: ANN201
    """The ray module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise StbenchError(RAY_MISSING) from None
    return ray


class RemoteError(Exception):
    """A worker's error that could not travel back as itself; keeps its type's name and message."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name

    def __reduce__(self):  # noqa: ANN204
        return RemoteError, (self.type_name, str(self))


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives pickling as itself, else a `RemoteError` with the same message."""
    try:
        back = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes
        if type(back) is type(exc) and str(back) == str(exc):
            return exc
    except Exception:  # noqa: BLE001, S110 - any failure: send the text instead
        pass
    return RemoteError(type(exc).__name__, str(exc))


# -- what the workers run -------------------------------------------------------------------------------------


def _in_worker(threads: int) -> None:
    import torch

    from stbench.stores.catalog import NO_CATALOG_ENV

    os.environ[NO_CATALOG_ENV] = "1"  # this process only computes; the driver writes the catalog
    # The driver's torch thread count, not Ray's one per task: CPU kernels split their work by thread count,
    # so 1 thread embeds HER2ST ~5e-6 away from 2 threads, and 50 epochs of BP-Booster training amplify that
    # to 0.01 of PCC. With the same count the executors give bit-identical numbers on the same machine.
    torch.set_num_threads(threads)


def extract_remote(encoder, weights: str | None, fingerprint: str, task: str, sample, path: str, *,  # noqa: ANN001
                   device: str, batch_size: int | None, compile: bool, threads: int) -> tuple[dict | None, Exception | None]:
    """A worker: embed one sample into ``path``. Returns ``(embeddings row, None)`` or ``(None, error)``."""
    _in_worker(threads)
    try:
        from stbench.extract import prepare_pipeline, write_sample_embeddings

        loaded = encoder.load(weights)
        if loaded.fingerprint != fingerprint:
            raise StbenchError(f"{encoder.name}: this Ray node finds other weights ({loaded.fingerprint}) than the "
                               f"driver ({fingerprint}); make the same weights (or hub cache) visible to every node")
        pipeline = prepare_pipeline(loaded, device=device, batch_size=batch_size, compile=compile)
        return write_sample_embeddings(pipeline, sample, Path(path), task=task), None
    except Exception as exc:  # noqa: BLE001 - handed to the driver, which records it on the cells
        log.debug("%s/%s: extraction failed", task, getattr(sample, "id", sample), exc_info=True)
        return None, _portable(exc)


def fit_remote(reducer: Reducer, runs: list, task, paths: dict[str, str], fold, *, seed: int, device: str | None,  # noqa: ANN001
               snapshot: dict, store_root: str, threads: int) -> tuple[dict, dict[str, Exception], list]:
    """A worker: one reducer fit on ``fold`` and every run sharing it (`stbench.runner.compute_fold`).
    Returns ``(records by run id, errors by run id, new gene selections)``."""
    _in_worker(threads)
    from stbench.runner import SnapshotSelections, _load_samples, compute_fold
    from stbench.stores import Store

    loaded: dict = {}

    def data() -> dict:
        if not loaded:
            loaded.update(_load_samples(task, paths))
        return loaded

    cache = SnapshotSelections(snapshot)
    records, errors = compute_fold(reducer, runs, task, data, fold, seed=seed, device=device, cache=cache,
                                   model_path=Store(Path(store_root)).model_path)
    return records, {rid: _portable(e) for rid, e in errors.items()}, cache.new


# -- the driver -------------------------------------------------------------------------------------------------


def _crashed_fit(run_ids: list[str], exc: Exception) -> tuple[dict, dict[str, Exception], list]:
    """What `fit_remote` would have returned had it failed for every run it computes."""
    return {}, dict.fromkeys(run_ids, exc), []


def _trains(reducer: Reducer) -> bool:
    """Whether a reducer trains a model (it keeps a fitted state): its fits get a GPU."""
    from stbench.reducers import Reducer

    return type(reducer).save is not Reducer.save


def _placement(ray, device: str | None, gpus_per_task: float) -> tuple[str, dict[str, Any]]:  # noqa: ANN001
    """The device workers use and the resources a GPU task declares (CPU-only tasks: one CPU)."""
    gpus = float(ray.cluster_resources().get("GPU", 0))
    dev = (device or "auto").lower()
    if dev.startswith("cuda"):
        if gpus <= 0:
            raise StbenchError(f"--device {device}: the Ray cluster has no GPU; use --device cpu (or auto)")
        if dev != "cuda":
            log.warning("--device %s under Ray: each task uses the GPU Ray assigns it", device)
        dev = "cuda"
    elif dev == "auto":
        dev = "cuda" if gpus > 0 else "cpu"
    if dev == "cuda":
        if not 0 < gpus_per_task <= max(gpus, 1):
            raise StbenchError(f"--gpus-per-task {gpus_per_task}: expected a number in (0, {gpus:g}]")
        return dev, {"num_cpus": 1, "num_gpus": gpus_per_task}
    return dev, {"num_cpus": 1}


@dataclass
class _Group:
    """The runs of one reducer and seed: fits in flight and each run's errors by fold."""

    runs: list
    left: int = 0
    errors: dict[str, dict[int, Exception]] = field(default_factory=dict)


@dataclass
class _ReducerState:
    block: int
    index: int  # the reducer's position in its block
    plan: ReducerPlan
    groups_left: int
    errors: dict[str, Exception] = field(default_factory=dict)


class _RayGrid:
    def __init__(self, ray, plan: GridPlan, store: Store, *, progress: Progress | None,  # noqa: ANN001
                 on_cell: Callable[[CellOutcome], None] | None, keep_going: bool, weights: dict[str, str] | None = None,
                 batch_size: int | None = None, device: str | None = None, compile: bool = False, force: bool = False,
                 gpus_per_task: float = 1.0) -> None:
        self.ray, self.plan, self.store, self.progress, self.on_cell = ray, plan, store, progress, on_cell
        self.keep_going, self.batch_size, self.compile, self.force = keep_going, batch_size, compile, force
        self.weights = dict(weights or {})  # encoder -> weight file or random[:SEED]
        import torch

        self.device, gpu = _placement(ray, device, gpus_per_task)
        self.threads = torch.get_num_threads()  # workers compute with the driver's (see _in_worker)
        # CPU tasks reserve the cores their threads use (capped by the cluster's), so they do not oversubscribe
        nodes = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive", True)]
        cores = max(1, int(max(nodes, default=1)))  # a task must fit on one node
        # a task whose worker dies is not retried: its cells fail, and rerunning the command retries them
        cpu = {"num_cpus": min(self.threads, cores), "max_retries": 0}
        gpu = {**gpu, "max_retries": 0} if self.device == "cuda" else cpu
        self.extract = ray.remote(extract_remote).options(**gpu)
        self.fit_gpu, self.fit_cpu = ray.remote(fit_remote).options(**gpu), ray.remote(fit_remote).options(**cpu)
        # in flight: ref -> (what to do with its result, the result that stands for the task's crash)
        self.futures: dict[Any, tuple[Callable[[Any], None], Callable[[Exception], Any]]] = {}
        self.outcomes: dict[int, CellOutcome] = {}
        self.offsets = [sum(len(b.cells) for b in plan.blocks[:i]) for i in range(len(plan.blocks))]
        self.bar = progress.add_task("grid (ray)", total=plan.n_cells) if progress is not None else None

    def run(self) -> list[CellOutcome]:
        try:
            for i, block in enumerate(self.plan.blocks):
                self._extract(i, block)
            while self.futures:
                ready, _ = self.ray.wait(list(self.futures), num_returns=1)
                for ref in ready:
                    handle, crashed = self.futures.pop(ref)
                    try:
                        result = self.ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - the worker died (out of memory, a crash): its cells fail
                        log.debug("a Ray task failed", exc_info=True)
                        result = crashed(_portable(exc))
                    handle(result)
        finally:
            for ref in self.futures:  # only after a failure with keep_going off, or an interrupt
                self.ray.cancel(ref)
            if self.progress is not None and self.bar is not None:
                self.progress.remove_task(self.bar)
        return [self.outcomes[i] for i in sorted(self.outcomes)]

    # -- extraction --
    def _extract(self, index: int, block: Block) -> None:
        from stbench.embeddings_import import select_embeddings
        from stbench.extract import cached_embedding
        from stbench.grid import block_encoder

        task, store = block.task, self.store
        try:
            weights = self.weights.get(block.encoder)
            encoder = select_embeddings(block_encoder(block.encoder, self.plan.spec.precision), weights, store,
                                        task)  # imported: no model
            fingerprint = encoder.fingerprint(weights)
        except Exception as exc:  # noqa: BLE001 - every cell of the block fails with it
            self._block_failed(index, block, exc)
            return
        from stbench.runner import plan_reducer

        if not any(plan_reducer(task, block.encoder, fingerprint, r, block.protocols, store, force=self.force).groups
                   for r in block.reducers):  # every cell stored: no embedding is needed
            self._submit_cells(index, block, fingerprint, {})
            return
        paths: dict[str, str] = {}
        waiting: set[str] = set()
        errors: dict[str, Exception] = {}
        for sid in sorted(task.samples):
            cached = cached_embedding(store, task, encoder.name, fingerprint, task.samples[sid])
            if cached:
                paths[sid] = cached
                continue
            path = store.embedding_path(task.name, encoder.name, fingerprint, sid)
            ref = self.extract.remote(encoder, weights, fingerprint, task.name, task.samples[sid], str(path),
                                      device=self.device, batch_size=self.batch_size, compile=self.compile,
                                      threads=self.threads)
            waiting.add(sid)
            self.futures[ref] = (partial(self._extracted, index, block, fingerprint, sid, paths, waiting, errors),
                                 lambda exc: (None, exc))
        if not waiting:
            self._submit_cells(index, block, fingerprint, paths)

    def _extracted(self, index: int, block: Block, fingerprint: str, sid: str, paths: dict[str, str],  # noqa: PLR0913
                   waiting: set[str], errors: dict[str, Exception], result: tuple) -> None:
        row, exc = result
        if exc is None:  # recorded relative to the store root, at the path the driver gave the worker
            path = self.store.embedding_path(block.task.name, block.encoder, fingerprint, sid)
            self.store.catalog.add_embedding(**{**row, "path": self.store.relative(path)})
            paths[sid] = str(path)
        else:
            errors[sid] = exc
        waiting.discard(sid)
        if waiting:
            return
        if errors:
            self._block_failed(index, block, errors[min(errors)])
        else:
            self._submit_cells(index, block, fingerprint, paths)

    def _block_failed(self, index: int, block: Block, exc: Exception) -> None:
        from stbench.runner import CellFailure

        for i, (r, p) in enumerate((r, p) for r in block.reducers for p in block.protocols):
            self._emit(index, i, CellFailure(block.task.name, block.encoder, r.name, r.options_key(), p, None, exc))

    # -- cells --
    def _submit_cells(self, index: int, block: Block, fingerprint: str, paths: dict[str, str]) -> None:
        from stbench.runner import plan_reducer, pending_runs, start_runs

        task, store = block.task, self.store
        for r_index, reducer in enumerate(block.reducers):
            plan = plan_reducer(task, block.encoder, fingerprint, reducer, block.protocols, store, force=self.force)
            state = _ReducerState(index, r_index, plan, len(plan.groups))
            if not plan.groups:
                self._reducer_done(state)
                continue
            trains = _trains(reducer)
            fit = self.fit_gpu if trains and self.device == "cuda" else self.fit_cpu
            device = self.device if trains else "cpu"
            for seed, runs in plan.groups:
                group = _Group(runs)
                done = start_runs(runs, task, reducer, store, force=self.force)
                for fold in task.folds:
                    pending = pending_runs(runs, done, {}, fold.index)
                    if not pending:
                        continue
                    ref = fit.remote(reducer, pending, task, paths, fold, seed=seed, device=device,
                                     snapshot=store.catalog.selections(task.fingerprint, fold.index),
                                     store_root=str(store.root), threads=self.threads)
                    group.left += 1
                    self.futures[ref] = (partial(self._fitted, state, group, fold.index),
                                         partial(_crashed_fit, [run["run_id"] for run, _ in pending]))
                if not group.left:
                    self._group_done(state, group)

    def _fitted(self, state: _ReducerState, group: _Group, fold: int, result: tuple) -> None:
        import stbench
        from stbench.runner import write_folds

        records, errors, selections = result
        task = state.plan.task
        for kind, key, value in selections:  # gene selections a worker computed: stored here, the one writer
            self.store.catalog.add_selection(task=task.name, task_fingerprint=task.fingerprint, fold=fold, kind=kind,
                                             key=key, value=value, stbench_version=stbench.__version__)
        errors = dict(errors)
        write_folds(group.runs, records, self.store, errors)
        for rid, exc in errors.items():
            group.errors.setdefault(rid, {})[fold] = exc
        group.left -= 1
        if not group.left:
            self._group_done(state, group)

    def _group_done(self, state: _ReducerState, group: _Group) -> None:
        from stbench.runner import finish_runs

        # as in the local executor, a run's error is that of its first failing fold
        errors = {rid: by_fold[min(by_fold)] for rid, by_fold in group.errors.items()}
        finish_runs(group.runs, self.store, errors)
        state.errors.update(errors)
        state.groups_left -= 1
        if not state.groups_left:
            self._reducer_done(state)

    def _reducer_done(self, state: _ReducerState) -> None:
        n = len(self.plan.blocks[state.block].protocols)
        for i, outcome in enumerate(state.plan.outcomes(self.store, state.errors)):
            self._emit(state.block, state.index * n + i, outcome)

    def _emit(self, block: int, index: int, result: RunResult | CellFailure) -> None:
        from stbench.grid import CellOutcome

        b = self.plan.blocks[block]
        outcome = CellOutcome(b.cells[index], result)
        self.outcomes[self.offsets[block] + index] = outcome
        if self.progress is not None and self.bar is not None:
            self.progress.update(self.bar, advance=1, description=f"{b.encoder} · {b.task.name} · {result.reducer}")
        if self.on_cell is not None:
            self.on_cell(outcome)
        if outcome.status == "failed" and not self.keep_going:
            raise result.error  # type: ignore[union-attr]


def run_grid_ray(plan: GridPlan, store: Store, *, progress: Progress | None = None,
                 on_cell: Callable[[CellOutcome], None] | None = None, keep_going: bool = True,
                 address: str | None = None, gpus_per_task: float = 1.0, num_cpus: int | None = None,
                 **run_kw: Any) -> list[CellOutcome]:
    """`stbench.grid.run_grid` on Ray (``run_kw``: weights by encoder, batch_size, device, compile, force). Connects to
    ``address`` (``auto``, ``ray://host:10001``) or, when Ray is not initialised in this process yet, starts
    a local instance (``num_cpus``: all cores) that is shut down at the end. Outcomes come back in the plan's
    order; ``on_cell`` is told of each as it completes."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
        started = True
    try:
        return _RayGrid(ray, plan, store, progress=progress, on_cell=on_cell, keep_going=keep_going,
                        gpus_per_task=gpus_per_task, **run_kw).run()
    finally:
        if started:
            ray.shutdown()
