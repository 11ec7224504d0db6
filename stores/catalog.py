"""The DuckDB catalog: what was computed, with which weights and protocol, and every result.

Tables (schema evolves by forward-only named migrations recorded in ``_stbench_migrations``):

- ``embeddings``: one row per embedding file (task, encoder, weights_fingerprint, sample_id) with its
  path, size and the fingerprint of the patch file it came from.
- ``runs``: one row per result set = (task data, encoder weights, reducer + options, protocol). Its
  ``run_id`` is a hash of exactly those, so the same computation always lands on the same id.
- ``fold_results``: per fold, the summary over genes (PCC mean/std, MSE, NaN count, PCC-10/50/200, alpha).
- ``gene_results``: per (fold, gene): PCC and MSE over the pooled test spots, with the columns needed
  to trace the number (task, encoder, reducer, options, alpha, seed, protocol fingerprint).
- ``sample_gene_results``: per (fold, test sample, gene): PCC and MSE within one test sample.
- ``spot_predictions``: per (fold, test spot, gene): coordinates, measured and predicted log1p expression. Since
  schema m004 each fold's predictions are a Parquet file, ``predictions/<run_id>/fold<i>-<token>.parquet``,
  named by ``fold_results.predictions_path`` (the table keeps rows written before); read both with
  `Catalog.spot_predictions`.
- ``gene_selections``: HVG/SVG selections per task fold, reused by trainable reducers.

A fold's rows are written in one transaction; a run is marked complete only after its last fold.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from stbench.errors import StoreError

if TYPE_CHECKING:
    import duckdb
    import polars as pl

log = logging.getLogger("stbench")
T = TypeVar("T")

__all__ = ["Catalog", "MIGRATIONS", "NO_CATALOG_ENV", "SCHEMA_VERSION", "FoldRecord"]

# Set in processes that must not open the catalog (the Ray executor's workers): one writer, the driver.
NO_CATALOG_ENV = "STBENCH_NO_CATALOG"

MIGRATIONS: list[tuple[str, str]] = [
    (
        "m001_initial",
        """
        CREATE TABLE embeddings (
            task TEXT, encoder TEXT, weights_fingerprint TEXT, sample_id TEXT,
            source_fingerprint TEXT, path TEXT, n_patches INTEGER, dim INTEGER,
            stbench_version TEXT, created_at TIMESTAMP,
            PRIMARY KEY (task, encoder, weights_fingerprint, sample_id));
        CREATE TABLE runs (
            run_id TEXT PRIMARY KEY, task TEXT, task_fingerprint TEXT, synthetic BOOLEAN,
            encoder TEXT, weights_fingerprint TEXT, reducer TEXT, reducer_options TEXT,
            protocol TEXT, protocol_fingerprint TEXT, seed INTEGER, solver TEXT, alpha_rule TEXT,
            gene_rule TEXT, n_folds INTEGER, status TEXT, error TEXT, stbench_version TEXT,
            started_at TIMESTAMP, finished_at TIMESTAMP);
        CREATE TABLE fold_results (
            run_id TEXT, fold INTEGER, n_train INTEGER, n_test INTEGER, n_features INTEGER,
            n_genes INTEGER, n_nan INTEGER, alpha DOUBLE, pcc_mean DOUBLE, pcc_std DOUBLE,
            mse_mean DOUBLE, pcc10 DOUBLE, pcc50 DOUBLE, pcc200 DOUBLE,
            train_samples TEXT, test_samples TEXT, genes TEXT, seconds DOUBLE,
            PRIMARY KEY (run_id, fold));
        CREATE TABLE gene_results (
            run_id TEXT, task TEXT, encoder TEXT, reducer TEXT, reducer_options TEXT, fold INTEGER,
            gene TEXT, pcc DOUBLE, mse DOUBLE, n_train INTEGER, n_test INTEGER, alpha DOUBLE,
            seed INTEGER, protocol_fingerprint TEXT,
            PRIMARY KEY (run_id, fold, gene));
        CREATE TABLE sample_gene_results (
            run_id TEXT, fold INTEGER, sample_id TEXT, gene TEXT, pcc DOUBLE, mse DOUBLE, n_spots INTEGER,
            PRIMARY KEY (run_id, fold, sample_id, gene));
        """,
    ),
    (
        "m002_reducer_state",
        # what a trainable reducer reported and where its fitted state lives; gene selections per fold
        """
        ALTER TABLE fold_results ADD COLUMN reducer_report TEXT;
        ALTER TABLE fold_results ADD COLUMN model_path TEXT;
        CREATE TABLE gene_selections (
            task TEXT, task_fingerprint TEXT, fold INTEGER, kind TEXT, key TEXT, value TEXT,
            stbench_version TEXT, created_at TIMESTAMP,
            PRIMARY KEY (task_fingerprint, fold, kind, key));
        """,
    ),
    (
        "m003_spot_predictions",
        # measured and predicted log1p expression of every test spot and gene: spatial maps, re-scoring
        """
        CREATE TABLE spot_predictions (
            run_id TEXT, fold INTEGER, sample_id TEXT, barcode TEXT, x DOUBLE, y DOUBLE, gene TEXT,
            y_true FLOAT, y_pred FLOAT);
        """,
    ),
    (
        "m004_prediction_files",
        # spot predictions move out of the catalog into one Parquet file per fold (the table keeps older rows)
        """
        ALTER TABLE fold_results ADD COLUMN predictions_path TEXT;
        """,
    ),
    (
        "m005_mse_baseline",
        # the MSE of predicting each gene's training mean, beside the model's MSE (issue 13)
        """
        ALTER TABLE fold_results ADD COLUMN mse_baseline DOUBLE;
        ALTER TABLE gene_results ADD COLUMN mse_baseline DOUBLE;
        """,
    ),
    (
        "m006_alpha_sweep",
        # --alpha sweep: the test PCC of every gene at every alpha of the grid (and HEST's), per fold (issue 13)
        """
        CREATE TABLE alpha_sweep (
            run_id TEXT, fold INTEGER, gene TEXT, alpha DOUBLE, pcc DOUBLE,
            PRIMARY KEY (run_id, fold, gene, alpha));
        """,
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)
PREDICTIONS_DIR = "predictions"  # under the store root


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass
class FoldRecord:
    """One fold's results, ready to insert."""

    fold: int
    n_train: int
    n_test: int
    n_features: int
    alpha: float
    genes: Sequence[str]
    pcc: Sequence[float]
    mse: Sequence[float]
    summary: Any  # metrics.FoldSummary
    per_sample: dict[str, tuple[Sequence[float], Sequence[float], int]]  # sample -> (pcc, mse, n_spots)
    train_samples: Sequence[str]
    test_samples: Sequence[str]
    seconds: float
    reducer_report: dict[str, Any] | None = None
    model_path: str | None = None
    predictions: dict[str, Any] | None = None  # sample_id, barcode (n,), coords (n, 2), y_true, y_pred (n, genes)
    mse_baseline: Sequence[float] | None = None  # per gene: MSE of predicting the training mean
    sweep: tuple[Sequence[float], Any] | None = None  # --alpha sweep: (alphas, test PCC (n_alphas, n_genes))


def _reads(fn: Callable[..., T]) -> Callable[..., T]:
    """Run a method inside a read session (shared lock) unless the caller holds a session."""
    @functools.wraps(fn)
    def wrapper(self: Catalog, *args: Any, **kwargs: Any) -> T:
        with self.session():
            return fn(self, *args, **kwargs)
    return wrapper


def _writes(fn: Callable[..., T]) -> Callable[..., T]:
    """Run a method inside a write session (exclusive lock) unless the caller holds one."""
    @functools.wraps(fn)
    def wrapper(self: Catalog, *args: Any, **kwargs: Any) -> T:
        with self.session(write=True):
            return fn(self, *args, **kwargs)
    return wrapper


_GENE_COLUMNS = ("run_id", "task", "encoder", "reducer", "reducer_options", "fold", "gene", "pcc", "mse", "n_train",
                 "n_test", "alpha", "seed", "protocol_fingerprint", "mse_baseline")  # gene_results, as _insert_fold fills it
_SAMPLE_GENE_COLUMNS = ("run_id", "fold", "sample_id", "gene", "pcc", "mse", "n_spots")  # sample_gene_results
_SWEEP_COLUMNS = ("run_id", "fold", "gene", "alpha", "pcc")  # alpha_sweep
_DICTIONARY_COLUMNS = ("run_id", "sample_id", "barcode", "gene", "x", "y", "y_true")  # see _write_predictions


class Catalog:
    """``<store>/catalog.duckdb``, migrated to the current schema on open.

    Several processes share one catalog: each method opens it for one short session (readers under a
    shared lock, writers under an exclusive one, ``<catalog>.lock``) and closes it, so no process holds it
    for a whole run. A busy catalog is waited for up to ``lock_timeout`` seconds, saying who holds it.
    ``with catalog.session(write=...)`` groups several calls into one session (one snapshot, one lock).
    """

    def __init__(self, path: Path, *, read_only: bool = False, lock_timeout: float | None = None) -> None:
        from stbench.stores.locks import lock_timeout as default_timeout

        if os.environ.get(NO_CATALOG_ENV):
            raise StoreError(f"this process may not open the catalog {path} ({NO_CATALOG_ENV} is set: it is a "
                             "worker, and only the driver writes the catalog)")
        self.path = Path(path)
        self.read_only = read_only
        self.lock_timeout = default_timeout(lock_timeout)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._con_writes = False
        self._held: Any = None  # the session `con` opened for callers outside any session
        self._created: list[Path] = []  # files written for the transaction in progress
        self._released: list[Path] = []  # files it stops referring to
        if read_only and not self.path.exists():
            raise StoreError(f"no catalog at {self.path}: run `bench run` first or pass --store")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.session(write=not read_only):
            if not read_only:
                self._migrate()
            self._check_version()

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """The catalog open under a lock for the calls inside; reentrant (an inner session reuses it)."""
        from stbench.stores.locks import FileLock

        if self._con is not None:
            if write and not self._con_writes:
                raise RuntimeError("a write session cannot start inside a read session")
            yield self._con
            return
        if write and self.read_only:
            raise StoreError(f"{self.path} is open read-only")
        lock = FileLock(self.lock_path, what=f"the catalog {self.path}", shared=not write)
        lock.acquire(self.lock_timeout)
        try:
            self._con, self._con_writes = self._connect(write), write
            try:
                yield self._con
            finally:
                con, self._con = self._con, None
                con.close()
        finally:
            lock.release()

    def _connect(self, write: bool) -> duckdb.DuckDBPyConnection:
        """Open the DuckDB file; a lock held by a program other than stbench (the duckdb shell) is waited
        for like our own; a file DuckDB cannot read is a one-line error naming it."""
        import duckdb

        start = time.monotonic()
        told = False
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=not write)
            except duckdb.Error as exc:
                text = str(exc)
                if "lock" not in text.lower():
                    raise StoreError(f"{self.path}: not a readable stbench catalog ({text.splitlines()[0]}); restore "
                                     "it from a copy, or move it aside and rerun (embedding files are reused, "
                                     "results are recomputed)") from exc
                waited = time.monotonic() - start
                if waited >= self.lock_timeout:
                    raise StoreError(f"the catalog {self.path} is still busy after {waited:.0f} s: {text.splitlines()[0]}; "
                                     "try again later or wait longer with --lock-timeout SECONDS") from exc
                if not told and waited >= 1.0:
                    log.warning("waiting for the catalog %s: %s", self.path, text.splitlines()[0])
                    told = True
                time.sleep(0.2)

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The open connection; outside any session this opens one that is held until `close` (for
        interactive use and tests: it keeps other processes waiting)."""
        if self._con is None:
            self._held = self.session(write=not self.read_only)
            self._held.__enter__()
        return self._con

    def close(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.__exit__(None, None, None)

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------------------
    def _migrate(self) -> None:
        self.con.execute("CREATE TABLE IF NOT EXISTS _stbench_migrations (name TEXT PRIMARY KEY, applied_at TIMESTAMP)")
        done = {r[0] for r in self.con.execute("SELECT name FROM _stbench_migrations").fetchall()}
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            self.con.execute("BEGIN TRANSACTION")
            try:
                self.con.execute(sql)
                self.con.execute("INSERT INTO _stbench_migrations VALUES (?, ?)", [name, _now()])
                self.con.execute("COMMIT")
            except Exception:
                self.con.execute("ROLLBACK")
                raise

    def _check_version(self) -> None:
        names = [r[0] for r in self.con.execute("SELECT name FROM _stbench_migrations").fetchall()]
        unknown = set(names) - {n for n, _ in MIGRATIONS}
        if unknown:
            raise StoreError(f"{self.path} was written by a newer stbench (migrations {sorted(unknown)}); upgrade stbench")

    @property
    def schema_version(self) -> int:
        return int(self._one("SELECT count(*) FROM _stbench_migrations")[0])  # type: ignore[index]

    # -- embeddings -----------------------------------------------------------------------------------
    @_reads
    def embedding(self, task: str, encoder: str, weights_fingerprint: str, sample_id: str) -> dict | None:
        row = self._one(
            "SELECT path, source_fingerprint, n_patches, dim FROM embeddings "
            "WHERE task=? AND encoder=? AND weights_fingerprint=? AND sample_id=?",
            [task, encoder, weights_fingerprint, sample_id],
        )
        return None if row is None else dict(zip(("path", "source_fingerprint", "n_patches", "dim"), row))

    @_writes
    def add_embedding(self, *, task: str, encoder: str, weights_fingerprint: str, sample_id: str,
                      source_fingerprint: str, path: str, n_patches: int, dim: int, stbench_version: str) -> None:
        self.con.execute(
            "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [task, encoder, weights_fingerprint, sample_id, source_fingerprint, path, n_patches, dim,
             stbench_version, _now()],
        )

    # -- runs -----------------------------------------------------------------------------------------
    @_reads
    def run_status(self, run_id: str) -> str | None:
        row = self._one("SELECT status FROM runs WHERE run_id=?", [run_id])
        return None if row is None else row[0]

    @_writes
    def start_run(self, run: dict, *, force: bool = False) -> None:
        """Insert (or reset) the run row; with ``force`` its old results are deleted first."""
        with self._transaction():
            if force:
                self._drop_results(run["run_id"])
            self.con.execute("DELETE FROM runs WHERE run_id=?", [run["run_id"]])
            cols = list(run) + ["status", "started_at"]
            self.con.execute(
                f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",  # noqa: S608
                [*run.values(), "running", _now()],
            )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction. Files written for it (`_created`) are removed if it rolls back; files it stops
        referring to (`_released`) are removed only once it has committed."""
        self._created, self._released = [], []
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            for path in self._created:
                path.unlink(missing_ok=True)
            raise
        finally:
            released, self._created, self._released = self._released, [], []
        if released:  # a fit's model file can be shared by the runs of its group: keep what is still referred to
            kept = {self._store_file(f) for row in self.con.execute(
                "SELECT model_path, predictions_path FROM fold_results").fetchall() for f in row if f}
            for path in set(released) - kept:
                path.unlink(missing_ok=True)

    def _store_file(self, recorded: str | None) -> Path | None:
        if not recorded:
            return None
        return Path(recorded) if Path(recorded).is_absolute() else self.path.parent / recorded

    def _drop_results(self, run_id: str, fold: int | None = None) -> None:
        """Delete a run's result rows (one fold, or all) inside a transaction; their files go once it commits."""
        where, params = ("run_id=?", [run_id]) if fold is None else ("run_id=? AND fold=?", [run_id, fold])
        for model, preds in self.con.execute(f"SELECT model_path, predictions_path FROM fold_results WHERE {where}",  # noqa: S608
                                             params).fetchall():
            self._released += [p for p in (self._store_file(model), self._store_file(preds)) if p is not None]
        for table in ("fold_results", "gene_results", "sample_gene_results", "spot_predictions", "alpha_sweep"):
            self.con.execute(f"DELETE FROM {table} WHERE {where}", params)  # noqa: S608

    @_reads
    def finished_since(self, run_id: str, since: datetime) -> bool:
        """Whether the run was completed at or after ``since`` (naive UTC)."""
        row = self._one("SELECT finished_at FROM runs WHERE run_id=? AND status='complete'", [run_id])
        return row is not None and row[0] is not None and row[0] >= since

    @_reads
    def folds_done(self, run_id: str) -> set[int]:
        return {r[0] for r in self.con.execute("SELECT fold FROM fold_results WHERE run_id=?", [run_id]).fetchall()}

    @_writes
    def write_fold(self, run: dict, rec: FoldRecord) -> None:
        """All rows of one fold in one transaction, checked against each other before the commit."""
        with self._transaction():
            self._drop_results(run["run_id"], rec.fold)  # a fold written again replaces the old one whole
            self._insert_fold(run, rec)

    @_writes
    def replace_run(self, run: dict, records: Sequence[FoldRecord]) -> None:
        """Replace a run's stored result with a complete new one (every fold), in one transaction: until it
        commits, readers see the previous result; if anything fails, the previous result stays."""
        rid = run["run_id"]
        with self._transaction():
            self._drop_results(rid)
            self.con.execute("DELETE FROM runs WHERE run_id=?", [rid])
            cols = list(run) + ["status", "started_at"]
            self.con.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",  # noqa: S608
                             [*run.values(), "running", _now()])
            for rec in records:
                self._insert_fold(run, rec)
            self.con.execute("UPDATE runs SET status='complete', error=NULL, finished_at=? WHERE run_id=?", [_now(), rid])

    def _insert_fold(self, run: dict, rec: FoldRecord) -> None:
        """Insert one fold's rows (inside the caller's transaction) and check them against each other."""
        s = rec.summary
        rid = run["run_id"]
        base = [None] * len(rec.genes) if rec.mse_baseline is None else [float(b) for b in rec.mse_baseline]
        gene_rows = [
            (rid, run["task"], run["encoder"], run["reducer"], run["reducer_options"], rec.fold, g, float(p), float(m),
             rec.n_train, rec.n_test, rec.alpha, run["seed"], run["protocol_fingerprint"], b)
            for g, p, m, b in zip(rec.genes, rec.pcc, rec.mse, base)
        ]
        sample_rows = [
            (rid, rec.fold, sid, g, float(p), float(m), n)
            for sid, (pccs, mses, n) in rec.per_sample.items()
            for g, p, m in zip(rec.genes, pccs, mses)
        ]
        values = {
            "run_id": rid, "fold": rec.fold, "n_train": rec.n_train, "n_test": rec.n_test,
            "n_features": rec.n_features, "n_genes": s.n_genes, "n_nan": s.n_nan, "alpha": rec.alpha,
            "pcc_mean": s.pcc_mean, "pcc_std": s.pcc_std, "mse_mean": s.mse_mean, "pcc10": s.pcc_top.get(10),
            "pcc50": s.pcc_top.get(50), "pcc200": s.pcc_top.get(200),
            "train_samples": json.dumps(list(rec.train_samples)), "test_samples": json.dumps(list(rec.test_samples)),
            "genes": json.dumps(list(rec.genes)), "seconds": rec.seconds,
            "reducer_report": json.dumps(rec.reducer_report) if rec.reducer_report else None,
            "model_path": rec.model_path,
            "predictions_path": None if rec.predictions is None else self._write_predictions(rid, rec),
            "mse_baseline": None if rec.mse_baseline is None else sum(map(float, rec.mse_baseline)) / len(rec.genes),
        }
        self.con.execute(
            f"INSERT OR REPLACE INTO fold_results ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",  # noqa: S608
            list(values.values()),
        )
        self._insert_rows("gene_results", _GENE_COLUMNS, gene_rows, key=(0, 5, 6))
        self._insert_rows("sample_gene_results", _SAMPLE_GENE_COLUMNS, sample_rows, key=(0, 1, 2, 3))
        if rec.sweep is not None:
            alphas, curve = rec.sweep
            self._insert_rows("alpha_sweep", _SWEEP_COLUMNS, [
                (rid, rec.fold, g, float(a), float(curve[i][j])) for i, a in enumerate(alphas)
                for j, g in enumerate(rec.genes)], key=(0, 1, 2, 3))
        problems = self.inconsistencies(run_ids=[rid], fold=rec.fold, runs=False)
        if problems:  # what was about to be stored contradicts itself: keep none of it
            raise StoreError(f"{self.path}: refusing to store an inconsistent fold: {problems[0]}")

    def _insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[tuple], *, key: tuple[int, ...]) -> None:
        """``INSERT OR REPLACE`` of many rows as one Arrow batch, inside the caller's transaction. DuckDB's
        ``executemany`` runs one statement a row, 1-3 ms each: a fold's 50 gene rows, 50 per test sample and
        50 per swept alpha cost seconds that way and milliseconds as a batch (issue 12). The values are the
        same Python numbers either way (floats as DOUBLE, NaN kept as NaN). Where a key (the columns at
        ``key``) repeats, the last row wins, as it did row by row."""
        if not rows:
            return
        import pyarrow as pa

        rows = list({tuple(r[i] for i in key): r for r in rows}.values())
        batch = pa.table({c: pa.array(list(v)) for c, v in zip(columns, zip(*rows))})
        cols = ", ".join(columns)
        name = "_stbench_insert_rows"
        self.con.register(name, batch)
        try:
            self.con.execute(f"INSERT OR REPLACE INTO {table} ({cols}) SELECT {cols} FROM {name}")  # noqa: S608
        finally:
            self.con.unregister(name)

    def _write_predictions(self, run_id: str, rec: FoldRecord) -> str:
        """One Parquet file per fold, long format (spot x gene), zstd-compressed; returns its path relative to the
        store root. Written aside and renamed into place. Columns that repeat (ids, coordinates: one row per gene;
        measured log1p values: few distinct counts) are dictionary-encoded; the predictions, all distinct, are
        split by byte stream instead (pyarrow applies that only to columns without a dictionary). On a real
        HER2ST fold (14,150 rows): 63.6 KB, against 88.5 KB with dictionaries everywhere (where the split was a
        no-op) and 66.3 KB with no dictionary for any number."""
        import uuid

        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        from stbench.tempfiles import temp_path

        p = rec.predictions
        n, g = np.asarray(p["y_pred"]).shape
        coords = np.asarray(p["coords"], dtype=np.float64).reshape(n, 2)
        table = pa.table({
            "run_id": pa.array([run_id] * (n * g)).dictionary_encode(),
            "fold": pa.array(np.full(n * g, rec.fold, dtype=np.int32)),
            "sample_id": pa.array(np.repeat(np.asarray(p["sample_id"], dtype=str), g)).dictionary_encode(),
            "barcode": pa.array(np.repeat(np.asarray(p["barcode"], dtype=str), g)),
            "x": pa.array(np.repeat(coords[:, 0], g)), "y": pa.array(np.repeat(coords[:, 1], g)),
            "gene": pa.array(np.tile(np.asarray(list(rec.genes), dtype=str), n)).dictionary_encode(),
            "y_true": pa.array(np.asarray(p["y_true"], dtype=np.float32).ravel()),
            "y_pred": pa.array(np.asarray(p["y_pred"], dtype=np.float32).ravel()),
        })
        rel = f"{PREDICTIONS_DIR}/{run_id}/fold{rec.fold}-{uuid.uuid4().hex[:8]}.parquet"
        path = self.path.parent / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
        try:
            pq.write_table(table, tmp, compression="zstd", use_dictionary=list(_DICTIONARY_COLUMNS),
                           use_byte_stream_split=["y_pred"])
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        self._created.append(path)
        return rel

    @_reads
    def spot_predictions(self, run_ids: Sequence[str], *, samples: Sequence[str] | None = None,
                         genes: Sequence[str] | None = None) -> pl.DataFrame:
        """Measured and predicted expression of every test spot and gene of ``run_ids``: columns run_id, fold,
        sample_id, barcode, x, y, gene, y_true, y_pred (from the folds' Parquet files and older table rows)."""
        import polars as pl

        cols = ["run_id", "fold", "sample_id", "barcode", "x", "y", "gene", "y_true", "y_pred"]
        marks = ", ".join("?" * len(run_ids)) or "NULL"
        files = [self._store_file(f) for (f,) in self.con.execute(
            f"SELECT predictions_path FROM fold_results WHERE run_id IN ({marks}) AND predictions_path IS NOT NULL "  # noqa: S608
            "ORDER BY run_id, fold", list(run_ids)).fetchall()]
        missing = [f for f in files if not f.exists()]
        if missing:
            raise StoreError(f"{missing[0]}: spot predictions file missing; run `bench store verify --repair`, then "
                             "rerun `bench run` to recompute the result")
        parts = [pl.read_parquet(files).select(cols)] if files else []
        legacy = self._frame(f"SELECT {', '.join(cols)} FROM spot_predictions WHERE run_id IN ({marks})", run_ids)  # noqa: S608
        frames = [f.with_columns(pl.col(c).cast(pl.Utf8) for c in ("run_id", "sample_id", "gene"))
                  .with_columns(pl.col("fold").cast(pl.Int32), pl.col("x").cast(pl.Float64), pl.col("y").cast(pl.Float64),
                                pl.col("y_true").cast(pl.Float32), pl.col("y_pred").cast(pl.Float32))
                  for f in [*parts, legacy] if len(f)]
        out = pl.concat(frames) if frames else legacy
        if samples is not None:
            out = out.filter(pl.col("sample_id").is_in(list(samples)))
        if genes is not None:
            out = out.filter(pl.col("gene").is_in(list(genes)))
        return out

    @_writes
    def forget_embedding(self, task: str, encoder: str, weights_fingerprint: str, sample_id: str) -> None:
        """Drop an embedding row (its file is gone or broken): the next run recomputes it."""
        self.con.execute("DELETE FROM embeddings WHERE task=? AND encoder=? AND weights_fingerprint=? AND sample_id=?",
                         [task, encoder, weights_fingerprint, sample_id])

    @_writes
    def forget_run(self, run_id: str, *, why: str = "its results were removed by `bench store verify --repair`") -> None:
        """Drop a run's results and mark it failed, in one transaction: the next run recomputes it."""
        with self._transaction():
            self._drop_results(run_id)
            self.con.execute("UPDATE runs SET status='failed', error=?, finished_at=? WHERE run_id=?", [why, _now(), run_id])

    @_writes
    def finish_run(self, run_id: str, *, error: str | None = None) -> None:
        self.con.execute(
            "UPDATE runs SET status=?, error=?, finished_at=? WHERE run_id=?",
            ["failed" if error else "complete", error, _now(), run_id],
        )

    # -- gene selections (HVG/SVG per fold) ---------------------------------------------------------------
    @_reads
    def selection(self, task_fingerprint: str, fold: int, kind: str, key: dict[str, Any]) -> dict[str, Any] | None:
        row = self._one("SELECT value FROM gene_selections WHERE task_fingerprint=? AND fold=? AND kind=? AND key=?",
                        [task_fingerprint, fold, kind, json.dumps(key, sort_keys=True)])
        return None if row is None else json.loads(row[0])

    @_reads
    def selections(self, task_fingerprint: str, fold: int) -> dict[tuple[str, str], dict[str, Any]]:
        """Every stored selection of one task fold: ``{(kind, key as canonical JSON): value}``."""
        rows = self.con.execute("SELECT kind, key, value FROM gene_selections WHERE task_fingerprint=? AND fold=?",
                                [task_fingerprint, fold]).fetchall()
        return {(kind, key): json.loads(value) for kind, key, value in rows}

    @_writes
    def add_selection(self, *, task: str, task_fingerprint: str, fold: int, kind: str, key: dict[str, Any],
                      value: dict[str, Any], stbench_version: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO gene_selections VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         [task, task_fingerprint, fold, kind, json.dumps(key, sort_keys=True), json.dumps(value),
                          stbench_version, _now()])

    # -- queries --------------------------------------------------------------------------------------
    @_reads
    def summary(self, *, run_ids: Sequence[str] | None = None, task: str | None = None, encoder: str | None = None,
                reducer: str | None = None, include_incomplete: bool = False) -> pl.DataFrame:
        """One row per run: mean and population std over folds of the fold PCC, mean MSE, NaN genes."""
        where, params = ["1=1"], []
        if not include_incomplete:
            where.append("r.status = 'complete'")
        for col, val in (("r.task", task), ("r.encoder", encoder), ("r.reducer", reducer)):
            if val:
                where.append(f"lower({col}) = lower(?)")
                params.append(val)
        if run_ids is not None:
            where.append(f"r.run_id IN ({', '.join('?' * len(run_ids)) or 'NULL'})")
            params.extend(run_ids)
        sql = f"""
            SELECT r.run_id, r.task, r.synthetic, r.encoder, r.weights_fingerprint, r.reducer, r.reducer_options,
                   r.solver, r.alpha_rule, r.gene_rule, r.seed, r.protocol_fingerprint, r.status,
                   count(f.fold) AS folds, avg(f.pcc_mean) AS pcc_mean, stddev_pop(f.pcc_mean) AS pcc_std,
                   avg(f.mse_mean) AS mse_mean, avg(f.mse_baseline) AS mse_baseline, sum(f.n_nan) AS n_nan,
                   avg(f.alpha) AS alpha_mean,
                   r.stbench_version, r.finished_at
            FROM runs r LEFT JOIN fold_results f USING (run_id)
            WHERE {' AND '.join(where)}
            GROUP BY ALL ORDER BY r.task, r.encoder, r.reducer, r.alpha_rule, r.gene_rule
        """  # noqa: S608
        return self._frame(sql, params)

    @_reads
    def inconsistencies(self, *, run_ids: Sequence[str] | None = None, fold: int | None = None,
                        runs: bool = True) -> list[str]:
        """Every stored summary that disagrees with the rows beneath it (`stbench.stores.consistency`):
        fold rows against their gene rows and, with ``runs``, run summaries against their fold rows.
        Empty when the catalog is consistent. ``write_fold`` checks each fold before committing it."""
        from stbench.stores.consistency import fold_problems, run_problems

        where, params = ["1=1"], []
        if run_ids is not None:
            where.append(f"run_id IN ({', '.join('?' * len(run_ids)) or 'NULL'})")
            params.extend(run_ids)
        if fold is not None:
            where.append("fold = ?")
            params.append(fold)
        cond = " AND ".join(where)
        folds = self._frame(f"SELECT * FROM fold_results WHERE {cond} ORDER BY run_id, fold", params).to_dicts()  # noqa: S608
        genes: dict[tuple[str, int], list[dict]] = {}
        for g in self._frame(f"SELECT run_id, fold, gene, pcc, mse, mse_baseline, n_train, n_test, alpha FROM gene_results "  # noqa: S608
                             f"WHERE {cond}", params).iter_rows(named=True):
            genes.setdefault((g["run_id"], g["fold"]), []).append(g)
        problems = [p for f in folds for p in fold_problems(f, genes.pop((f["run_id"], f["fold"]), []))]
        problems += [f"run {r} fold {i}: gene rows without a fold row" for r, i in sorted(genes)]
        if runs:
            by_run: dict[str, list[dict]] = {}
            for f in folds:
                by_run.setdefault(f["run_id"], []).append(f)
            summary = self.summary(run_ids=run_ids, include_incomplete=True)
            n_folds = dict(self.con.execute("SELECT run_id, n_folds FROM runs").fetchall())
            for run in summary.iter_rows(named=True):
                problems += run_problems({**run, "n_folds": n_folds.get(run["run_id"])}, by_run.pop(run["run_id"], []))
            problems += [f"run {r}: fold rows without a run row" for r in sorted(by_run)]
        return problems

    @_reads
    def query(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        """A read-only SQL query as a polars frame, in its own read session (or the caller's)."""
        return self._frame(sql, params)

    @_reads
    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """A read-only SQL query as tuples, in its own read session (or the caller's)."""
        return self.con.execute(sql, list(params)).fetchall()

    @_reads
    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        """The first row or None. DuckDB 2 wants every result read to the end before the next statement."""
        rows = self.con.execute(sql, list(params)).fetchall()
        return rows[0] if rows else None

    @_reads
    def _frame(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        return self.con.sql(sql, params=list(params) or None).pl()

    @_reads
    def fitted_models(self, *, task: str, encoder: str, reducer: str, fold: int) -> pl.DataFrame:
        """Complete runs with a saved reducer state for ``fold``, newest first."""
        sql = """
            SELECT r.run_id, r.task, r.encoder, r.weights_fingerprint, r.reducer, r.reducer_options, r.protocol,
                   r.seed, r.alpha_rule, r.synthetic, r.stbench_version, r.finished_at, f.fold, f.model_path,
                   f.reducer_report, f.train_samples, f.test_samples, f.pcc_mean
            FROM runs r JOIN fold_results f USING (run_id)
            WHERE r.status = 'complete' AND lower(r.task) = lower(?) AND lower(r.encoder) = lower(?)
              AND r.reducer = ? AND f.fold = ? AND f.model_path IS NOT NULL
            ORDER BY r.finished_at DESC
        """
        return self._frame(sql, [task, encoder, reducer, fold])

    @_reads
    def embedding_paths(self, task: str, encoder: str, weights_fingerprint: str) -> dict[str, str]:
        rows = self.con.execute("SELECT sample_id, path FROM embeddings WHERE lower(task)=lower(?) AND encoder=? "
                                "AND weights_fingerprint=?", [task, encoder, weights_fingerprint]).fetchall()
        return dict(rows)

    @_reads
    def imported_sets(self, *, task: str | None = None, encoder: str | None = None) -> list[tuple[str, str, str]]:
        """Embeddings imported with `bench embeddings import`: distinct ``(task, encoder, weights_fingerprint)``
        whose fingerprint starts with ``imported:``, optionally of one task (any case) and encoder."""
        rows = self.con.execute(
            "SELECT DISTINCT task, encoder, weights_fingerprint FROM embeddings WHERE weights_fingerprint LIKE "
            "'imported:%' AND (? IS NULL OR lower(task) = lower(?)) AND (? IS NULL OR encoder = ?) ORDER BY ALL",
            [task, task, encoder, encoder]).fetchall()
        return [tuple(r) for r in rows]

    @_reads
    def fold_table(self, run_id: str) -> pl.DataFrame:
        return self._frame("SELECT * FROM fold_results WHERE run_id=? ORDER BY fold", [run_id])

    @_reads
    def alpha_curves(self, run_ids: Sequence[str]) -> pl.DataFrame:
        """``--alpha sweep`` results: one row per (run, fold, gene, alpha) with the test PCC."""
        marks = ", ".join("?" * len(run_ids)) or "NULL"
        return self._frame(f"SELECT run_id, fold, gene, alpha, pcc FROM alpha_sweep WHERE run_id IN ({marks}) "  # noqa: S608
                           "ORDER BY run_id, fold, gene, alpha", run_ids)

    @_reads
    def sample_pccs(self, run_id: str) -> dict[int, dict[str, list[float]]]:
        """Per-gene PCC within each test sample: ``{fold: {sample_id: [pcc, ...]}}`` (genes in name order)."""
        rows = self.con.execute("SELECT fold, sample_id, pcc FROM sample_gene_results WHERE run_id=? "
                                "ORDER BY fold, sample_id, gene", [run_id]).fetchall()
        out: dict[int, dict[str, list[float]]] = {}
        for fold, sid, pcc in rows:
            out.setdefault(fold, {}).setdefault(sid, []).append(float("nan") if pcc is None else pcc)
        return out

    @_reads
    def gene_table(self, *, run_ids: Sequence[str] | None = None) -> pl.DataFrame:
        if run_ids is None:
            return self._frame("SELECT * FROM gene_results ORDER BY run_id, fold, gene")
        marks = ", ".join("?" * len(run_ids)) or "NULL"
        return self._frame(f"SELECT * FROM gene_results WHERE run_id IN ({marks}) ORDER BY run_id, fold, gene", run_ids)  # noqa: S608
