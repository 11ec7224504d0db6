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
- ``spot_predictions``: per (fold, test spot, gene): coordinates, measured and predicted log1p expression.
- ``gene_selections``: HVG/SVG selections per task fold, reused by trainable reducers.

A fold's rows are written in one transaction; a run is marked complete only after its last fold.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stbench.errors import StoreError

if TYPE_CHECKING:
    import duckdb
    import polars as pl

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
]
SCHEMA_VERSION = len(MIGRATIONS)


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


class Catalog:
    """A connection to ``<store>/catalog.duckdb``, migrated to the current schema on open."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        import duckdb

        if os.environ.get(NO_CATALOG_ENV):
            raise StoreError(f"this process may not open the catalog {path} ({NO_CATALOG_ENV} is set: it is a "
                             "worker, and only the driver writes the catalog)")
        self.path = Path(path)
        if read_only and not self.path.exists():
            raise StoreError(f"no catalog at {self.path}: run `bench run` first or pass --store")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con: duckdb.DuckDBPyConnection = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            raise StoreError(f"cannot open the catalog {self.path}: {exc} (is another bench process writing it?)") from exc
        if not read_only:
            self._migrate()
        self._check_version()

    def close(self) -> None:
        self.con.close()

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
        return int(self._one("SELECT count(*) FROM _stbench_migrations")[0])

    # -- embeddings -----------------------------------------------------------------------------------
    def embedding(self, task: str, encoder: str, weights_fingerprint: str, sample_id: str) -> dict | None:
        row = self._one(
            "SELECT path, source_fingerprint, n_patches, dim FROM embeddings "
            "WHERE task=? AND encoder=? AND weights_fingerprint=? AND sample_id=?",
            [task, encoder, weights_fingerprint, sample_id],
        )
        return None if row is None else dict(zip(("path", "source_fingerprint", "n_patches", "dim"), row))

    def add_embedding(self, *, task: str, encoder: str, weights_fingerprint: str, sample_id: str,
                      source_fingerprint: str, path: str, n_patches: int, dim: int, stbench_version: str) -> None:
        self.con.execute(
            "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [task, encoder, weights_fingerprint, sample_id, source_fingerprint, path, n_patches, dim,
             stbench_version, _now()],
        )

    # -- runs -----------------------------------------------------------------------------------------
    def run_status(self, run_id: str) -> str | None:
        row = self._one("SELECT status FROM runs WHERE run_id=?", [run_id])
        return None if row is None else row[0]

    def start_run(self, run: dict, *, force: bool = False) -> None:
        """Insert (or reset) the run row; with ``force`` its old results are deleted first."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            if force:
                for table in ("fold_results", "gene_results", "sample_gene_results", "spot_predictions"):
                    self.con.execute(f"DELETE FROM {table} WHERE run_id=?", [run["run_id"]])  # noqa: S608
            self.con.execute("DELETE FROM runs WHERE run_id=?", [run["run_id"]])
            cols = list(run) + ["status", "started_at"]
            self.con.execute(
                f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",  # noqa: S608
                [*run.values(), "running", _now()],
            )
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise

    def folds_done(self, run_id: str) -> set[int]:
        return {r[0] for r in self.con.execute("SELECT fold FROM fold_results WHERE run_id=?", [run_id]).fetchall()}

    def write_fold(self, run: dict, rec: FoldRecord) -> None:
        """All rows of one fold in one transaction."""
        s = rec.summary
        rid = run["run_id"]
        gene_rows = [
            (rid, run["task"], run["encoder"], run["reducer"], run["reducer_options"], rec.fold, g, float(p), float(m),
             rec.n_train, rec.n_test, rec.alpha, run["seed"], run["protocol_fingerprint"])
            for g, p, m in zip(rec.genes, rec.pcc, rec.mse)
        ]
        sample_rows = [
            (rid, rec.fold, sid, g, float(p), float(m), n)
            for sid, (pccs, mses, n) in rec.per_sample.items()
            for g, p, m in zip(rec.genes, pccs, mses)
        ]
        self.con.execute("BEGIN TRANSACTION")
        try:
            values = {
                "run_id": rid, "fold": rec.fold, "n_train": rec.n_train, "n_test": rec.n_test,
                "n_features": rec.n_features, "n_genes": s.n_genes, "n_nan": s.n_nan, "alpha": rec.alpha,
                "pcc_mean": s.pcc_mean, "pcc_std": s.pcc_std, "mse_mean": s.mse_mean, "pcc10": s.pcc_top.get(10),
                "pcc50": s.pcc_top.get(50), "pcc200": s.pcc_top.get(200),
                "train_samples": json.dumps(list(rec.train_samples)), "test_samples": json.dumps(list(rec.test_samples)),
                "genes": json.dumps(list(rec.genes)), "seconds": rec.seconds,
                "reducer_report": json.dumps(rec.reducer_report) if rec.reducer_report else None,
                "model_path": rec.model_path,
            }
            self.con.execute(
                f"INSERT OR REPLACE INTO fold_results ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",  # noqa: S608
                list(values.values()),
            )
            self.con.executemany("INSERT OR REPLACE INTO gene_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", gene_rows)
            if sample_rows:
                self.con.executemany("INSERT OR REPLACE INTO sample_gene_results VALUES (?, ?, ?, ?, ?, ?, ?)", sample_rows)
            if rec.predictions is not None:
                self._write_predictions(rid, rec)
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise

    def _write_predictions(self, run_id: str, rec: FoldRecord) -> None:
        """Long format through an Arrow table (one insert, not one statement per value)."""
        import numpy as np
        import pyarrow as pa

        p = rec.predictions
        n, g = np.asarray(p["y_pred"]).shape
        coords = np.asarray(p["coords"], dtype=np.float64)
        table = pa.table({
            "run_id": pa.array([run_id] * (n * g)),
            "fold": pa.array(np.full(n * g, rec.fold, dtype=np.int32)),
            "sample_id": pa.array(np.repeat(np.asarray(p["sample_id"], dtype=str), g)),
            "barcode": pa.array(np.repeat(np.asarray(p["barcode"], dtype=str), g)),
            "x": pa.array(np.repeat(coords[:, 0], g)), "y": pa.array(np.repeat(coords[:, 1], g)),
            "gene": pa.array(np.tile(np.asarray(list(rec.genes), dtype=str), n)),
            "y_true": pa.array(np.asarray(p["y_true"], dtype=np.float32).ravel()),
            "y_pred": pa.array(np.asarray(p["y_pred"], dtype=np.float32).ravel()),
        })
        self.con.execute("DELETE FROM spot_predictions WHERE run_id=? AND fold=?", [run_id, rec.fold])
        self.con.register("_stbench_predictions", table)
        try:
            self.con.execute("INSERT INTO spot_predictions SELECT * FROM _stbench_predictions")
        finally:
            self.con.unregister("_stbench_predictions")

    def finish_run(self, run_id: str, *, error: str | None = None) -> None:
        self.con.execute(
            "UPDATE runs SET status=?, error=?, finished_at=? WHERE run_id=?",
            ["failed" if error else "complete", error, _now(), run_id],
        )

    # -- gene selections (HVG/SVG per fold) ---------------------------------------------------------------
    def selection(self, task_fingerprint: str, fold: int, kind: str, key: dict[str, Any]) -> dict[str, Any] | None:
        row = self._one("SELECT value FROM gene_selections WHERE task_fingerprint=? AND fold=? AND kind=? AND key=?",
                        [task_fingerprint, fold, kind, json.dumps(key, sort_keys=True)])
        return None if row is None else json.loads(row[0])

    def selections(self, task_fingerprint: str, fold: int) -> dict[tuple[str, str], dict[str, Any]]:
        """Every stored selection of one task fold: ``{(kind, key as canonical JSON): value}``."""
        rows = self.con.execute("SELECT kind, key, value FROM gene_selections WHERE task_fingerprint=? AND fold=?",
                                [task_fingerprint, fold]).fetchall()
        return {(kind, key): json.loads(value) for kind, key, value in rows}

    def add_selection(self, *, task: str, task_fingerprint: str, fold: int, kind: str, key: dict[str, Any],
                      value: dict[str, Any], stbench_version: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO gene_selections VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         [task, task_fingerprint, fold, kind, json.dumps(key, sort_keys=True), json.dumps(value),
                          stbench_version, _now()])

    # -- queries --------------------------------------------------------------------------------------
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
                   avg(f.mse_mean) AS mse_mean, sum(f.n_nan) AS n_nan, avg(f.alpha) AS alpha_mean,
                   r.stbench_version, r.finished_at
            FROM runs r LEFT JOIN fold_results f USING (run_id)
            WHERE {' AND '.join(where)}
            GROUP BY ALL ORDER BY r.task, r.encoder, r.reducer, r.alpha_rule, r.gene_rule
        """  # noqa: S608
        return self._frame(sql, params)

    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        """The first row or None. DuckDB 2 wants every result read to the end before the next statement."""
        rows = self.con.execute(sql, list(params)).fetchall()
        return rows[0] if rows else None

    def _frame(self, sql: str, params: Sequence[Any] = ()) -> pl.DataFrame:
        return self.con.sql(sql, params=list(params) or None).pl()

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

    def embedding_paths(self, task: str, encoder: str, weights_fingerprint: str) -> dict[str, str]:
        rows = self.con.execute("SELECT sample_id, path FROM embeddings WHERE lower(task)=lower(?) AND encoder=? "
                                "AND weights_fingerprint=?", [task, encoder, weights_fingerprint]).fetchall()
        return dict(rows)

    def fold_table(self, run_id: str) -> pl.DataFrame:
        return self._frame("SELECT * FROM fold_results WHERE run_id=? ORDER BY fold", [run_id])

    def sample_pccs(self, run_id: str) -> dict[int, dict[str, list[float]]]:
        """Per-gene PCC within each test sample: ``{fold: {sample_id: [pcc, ...]}}`` (genes in name order)."""
        rows = self.con.execute("SELECT fold, sample_id, pcc FROM sample_gene_results WHERE run_id=? "
                                "ORDER BY fold, sample_id, gene", [run_id]).fetchall()
        out: dict[int, dict[str, list[float]]] = {}
        for fold, sid, pcc in rows:
            out.setdefault(fold, {}).setdefault(sid, []).append(float("nan") if pcc is None else pcc)
        return out

    def gene_table(self, *, run_ids: Sequence[str] | None = None) -> pl.DataFrame:
        if run_ids is None:
            return self._frame("SELECT * FROM gene_results ORDER BY run_id, fold, gene")
        marks = ", ".join("?" * len(run_ids)) or "NULL"
        return self._frame(f"SELECT * FROM gene_results WHERE run_id IN ({marks}) ORDER BY run_id, fold, gene", run_ids)  # noqa: S608
