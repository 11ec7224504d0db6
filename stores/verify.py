"""`bench store verify`: does every catalog row have its file, every file its row, every checksum match?

What it checks, and what ``repair`` does about each finding:

- an embedding row whose file is missing, unreadable, fails its checksum or disagrees with the row (patches,
  dimension): the file and the row are removed, so the next `bench run` recomputes them;
- an embedding file without a row (e.g. a catalog restored from an older copy): registered again when it is
  intact (its attributes say what it is), removed otherwise;
- a fold whose fitted model or spot-predictions file is missing, or a result that contradicts the rows beneath it
  (`Catalog.inconsistencies`): the run's results are removed, so the next `bench run` recomputes them;
- a fitted model or spot-predictions file no result refers to (a killed --force recomputation): removed;
- temporary files of writers that are gone (`stbench.tempfiles`): removed; those of live writers are kept.

Runs that are incomplete (killed, failed) are listed; `bench run` resumes them. Files that another process is
writing right now (its lock is held) are never touched.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from stbench.errors import StoreError
from stbench.stores import Store
from stbench.stores.embeddings import ENCODING_TYPE, embedding_checksum_ok
from stbench.tempfiles import clean_stale, is_temp_name, stale_temps

__all__ = ["Finding", "VerifyReport", "verify_store"]


@dataclass
class Finding:
    kind: str  # short category, e.g. "corrupt embedding"
    what: str  # the file (relative to the store) or the run
    detail: str
    repaired: str = ""  # what --repair did, empty if nothing


@dataclass
class VerifyReport:
    store: Path
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)  # what was looked at, by kind
    incomplete_runs: int = 0

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if not f.repaired]

    def add(self, kind: str, what: str, detail: str) -> Finding:
        f = Finding(kind, what, detail)
        self.findings.append(f)
        return f


def _attrs(path: Path) -> dict | None:
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            attrs = dict(h5.attrs)
            attrs["_shape"] = tuple(h5["embeddings"].shape)
        return attrs if attrs.get("stbench-encoding-type") == ENCODING_TYPE else None
    except (OSError, KeyError):
        return None


def _embed_lock(store: Store, task: str, encoder: str, fingerprint: str, sample: str):  # noqa: ANN202
    # the key `stbench.extract.ensure_embeddings` holds while it computes and registers a sample
    return store.lock("embed", json.dumps([task, encoder, fingerprint, sample]), what="")


def _file_problem(path: Path, row: dict | None) -> str | None:
    """Why an embedding file cannot be used, or None when it is intact (and matches ``row``, if given)."""
    if not path.exists():
        return "file missing"
    try:
        ok = embedding_checksum_ok(path)
    except StoreError as exc:
        return str(exc).split(": ", 1)[-1]
    if ok is False:
        return "checksum mismatch"
    attrs = _attrs(path)
    if attrs is None:
        return "not an embedding file"
    if row is not None and attrs["_shape"] != (row["n_patches"], row["dim"]):
        return f"holds {attrs['_shape']}, the catalog says ({row['n_patches']}, {row['dim']})"
    return None


def verify_store(store: Store, *, repair: bool = False) -> VerifyReport:
    """Check ``store`` (see the module docstring); with ``repair``, fix what is found. Reads every file."""
    cat = store.catalog
    report = VerifyReport(store.root)
    rows = cat.query("SELECT task, encoder, weights_fingerprint, sample_id, source_fingerprint, path, n_patches, dim, "
                     "stbench_version FROM embeddings").to_dicts()
    report.checked["embedding rows"] = len(rows)
    known: set[Path] = set()
    for row in rows:
        path = store.embedding_path(row["task"], row["encoder"], row["weights_fingerprint"], row["sample_id"])
        known.add(path)
        problem = _file_problem(path, row)
        if problem is None:
            continue
        f = report.add("broken embedding", store.relative(path), problem)
        if repair:
            key = (row["task"], row["encoder"], row["weights_fingerprint"], row["sample_id"])
            lock = _embed_lock(store, *key)
            if lock.acquire(0):
                try:
                    path.unlink(missing_ok=True)
                    cat.forget_embedding(*key)
                    f.repaired = "removed; the next run recomputes it"
                finally:
                    lock.release()
    files = sorted(p for p in (store.root / "embeddings").rglob("*.h5") if not is_temp_name(p.name))
    report.checked["embedding files"] = len(files)
    for path in files:
        if path in known:
            continue
        attrs = _attrs(path)
        problem = _file_problem(path, None)
        f = report.add("unregistered embedding", store.relative(path), problem or "intact, but no catalog row")
        if not repair:
            continue
        keys = [str(attrs.get(k, "")) for k in ("task", "encoder", "weights_fingerprint", "sample_id")] if attrs else []
        lock = _embed_lock(store, *keys) if keys and all(keys) else None
        if lock is not None and not lock.acquire(0):
            f.detail += " (being written by another process: left alone)"
            continue
        try:
            if problem is None and lock is not None and path == store.embedding_path(*keys):
                cat.add_embedding(task=keys[0], encoder=keys[1], weights_fingerprint=keys[2], sample_id=keys[3],
                                  source_fingerprint=str(attrs.get("source_fingerprint", "")), path=store.relative(path),
                                  n_patches=int(attrs["_shape"][0]), dim=int(attrs["_shape"][1]),
                                  stbench_version=str(attrs.get("stbench_version", "")))
                f.repaired = "registered again from its own attributes"
            else:
                path.unlink()
                f.repaired = "removed"
        finally:
            if lock is not None:
                lock.release()
    _verify_results(store, report, repair=repair)
    _verify_temps(store, report, repair=repair)
    return report


def _verify_results(store: Store, report: VerifyReport, *, repair: bool) -> None:
    cat = store.catalog
    broken: dict[str, list[str]] = {}
    # runs not complete when the check began: their files may be being written (repairs below do not count)
    running = {r for (r,) in cat.rows("SELECT run_id FROM runs WHERE status <> 'complete'")}
    folds = cat.rows("SELECT f.run_id, f.fold, f.model_path, f.predictions_path FROM fold_results f "
                     "JOIN runs r USING (run_id)")
    referenced: set[Path] = set()
    for run_id, fold, model, predictions in folds:
        for what, recorded in (("fitted model", model), ("spot predictions", predictions)):
            if recorded is None:
                continue
            path = store.resolve(recorded)
            referenced.add(path)
            if not path.exists():
                broken.setdefault(run_id, []).append(f"fold {fold}: {what} {recorded} is missing")
    problems = cat.inconsistencies()
    report.checked["result folds"] = len(folds)
    for p in problems:
        run_id = p.split()[1].rstrip(":")
        broken.setdefault(run_id, []).append(p)
    for run_id, what in sorted(broken.items()):
        f = report.add("broken result", f"run {run_id}", "; ".join(what[:3]) + (" ..." if len(what) > 3 else ""))
        if repair:
            cat.forget_run(run_id)
            f.repaired = "results removed; the next run recomputes them"
    report.incomplete_runs = len(running)
    files = [p for folder, pattern in (("models", "*.pt"), ("predictions", "*.parquet"))
             if (store.root / folder).is_dir() for p in sorted((store.root / folder).rglob(pattern))]
    for path in files:
        if path in referenced or is_temp_name(path.name) or path.parent.name in running:
            continue  # a run in progress writes its folds' files before its rows
        f = report.add("orphan file", store.relative(path), "no result refers to it")
        if repair:
            path.unlink(missing_ok=True)
            f.repaired = "removed"


def _verify_temps(store: Store, report: VerifyReport, *, repair: bool) -> None:
    n = 0
    for folder in [Path(d) for d, _, _ in os.walk(store.root)]:
        stale = stale_temps(folder)
        if not stale:
            continue
        n += len(stale)
        found = {path: report.add("debris", store.relative(path), "left by a writer that was killed") for path in stale}
        if repair:
            for path in clean_stale(folder):
                if path in found:
                    found[path].repaired = "removed"
    report.checked["debris"] = n
