"""Embeddings computed elsewhere, brought into the store (``bench embeddings import``) and used by ``bench run``.

Accepted, one file per sample in one folder, named after the sample id:

- HEST-Benchmark's own files, ``<sample>.h5``: ``embeddings`` (N, D), ``barcodes`` (N,) or (N, 1) bytes,
  ``coords`` (N, 2) (ignored: the task's patch file gives the coordinates);
- a table, ``<sample>.parquet``: a ``barcode`` column and either one list/array column or D numeric columns;
- an array, ``<sample>.npy`` with ``<sample>.barcodes.txt`` beside it (one barcode per line, in row order),
  or ``<sample>.npz`` holding ``embeddings`` and ``barcodes``.

Every task sample needs a file and every file a task sample; each file's barcodes must be exactly its patch
file's (rows are reordered to the patch file's order), with one dimension D across samples (the registered
encoder's ``embed_dim`` when the name is registered) and finite values. Everything is checked before
anything is written, so a refused import leaves the store as it was. Files are then written like extracted
ones (`EmbeddingWriter`, atomic per sample) with the patch file's fingerprint, so the usual cache check holds.

Imported embeddings are keyed by ``imported:sha256:<16 hex>``, the digest of the imported files' contents
(all samples, in sample order), so they never mix with embeddings extracted here from real weights. ``bench
run`` finds them by name: an unregistered (free) name uses its imported set for the task; a registered name
uses them with ``--weights imported`` (``--weights imported:<fingerprint>`` picks one of several sets).
Tables label their results "<name> (imported)".
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import stbench
from stbench.encoders.weights import IMPORTED_PREFIX
from stbench.errors import DataError, StbenchError

if TYPE_CHECKING:
    from stbench.encoders import Encoder
    from stbench.stores import Store
    from stbench.tasks import Task

__all__ = ["FORMATS", "ImportPlan", "ImportedEmbeddings", "encoder_for", "find_sources", "free_encoder_name",
           "import_embeddings", "imported_encoder_tasks", "is_imported_weights", "plan_import", "select_embeddings",
           "write_import"]

log = logging.getLogger("stbench")

FORMATS = ("auto", "hest", "table")
_SUFFIXES = {"hest": (".h5",), "table": (".parquet", ".npy", ".npz")}
_BARCODES_TXT = ".barcodes.txt"
_FREE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


def _few(names: Sequence[str], k: int = 5) -> str:
    names = list(names)
    return ", ".join(names[:k]) + (f", ... ({len(names)} in all)" if len(names) > k else "")


# -- names and weights --------------------------------------------------------------------------------------


def is_imported_weights(value: str | None) -> bool:
    """``imported`` or ``imported:<fingerprint>``: a run's ``--weights`` asking for imported embeddings."""
    text = str(value or "").strip().lower()
    return text == IMPORTED_PREFIX or text.startswith(IMPORTED_PREFIX + ":")


def free_encoder_name(name: str) -> str:
    """An unregistered encoder name as the store keys it (lower case, dashes), or a one-line error."""
    key = name.strip().lower().replace("_", "-")
    if not _FREE_NAME.fullmatch(key):
        raise StbenchError(f"encoder name {name!r}: use letters, digits, '.', '-' (e.g. my-vit-l)")
    return key


def _registered(name: str) -> Encoder | None:
    from stbench.encoders import encoders as registry

    return registry.get(name) if name in registry else None


@dataclass(frozen=True)
class ImportedEmbeddings:
    """Stands in for an encoder whose embeddings were imported: it gives the runner the fingerprint that keys
    them in the store and has no model, so a sample missing from the store is an error, never an extraction."""

    name: str
    imported: str | None = None  # imported:sha256:<16 hex>; None until `select_embeddings` finds the set
    task: str = ""

    def fingerprint(self, weights: object = None) -> str:
        if self.imported is None:
            raise StbenchError(f"{self.name}: no imported embeddings selected; this is a bug, please report it")
        return self.imported

    def load(self, weights: object = None) -> Any:
        raise StbenchError(
            f"{self.name}: its imported embeddings ({self.imported}) miss a sample of task {self.task} in the store, "
            f"or a patch file changed since the import; import them again: bench embeddings import --task "
            f"{self.task} --encoder {self.name} --from DIR")


def encoder_for(name: str) -> Encoder | ImportedEmbeddings:
    """The registered encoder of that name, else a stand-in for embeddings imported under it."""
    return _registered(name) or ImportedEmbeddings(free_encoder_name(name))


def select_embeddings(encoder: Encoder | ImportedEmbeddings, weights: str | None, store: Store,
                      task: Task) -> Encoder | ImportedEmbeddings:
    """What a run of ``task`` embeds with: ``encoder`` itself, or, for a free name or ``--weights
    imported[:<fingerprint>]``, the set imported under its name for this task (an error when there is none,
    or several and ``weights`` does not pick one)."""
    if not isinstance(encoder, ImportedEmbeddings) and not is_imported_weights(weights):
        return encoder
    name = encoder.name
    if weights and not is_imported_weights(weights):
        raise StbenchError(f"--weights {weights}: {name} is not a registered encoder, its embeddings are imported; "
                           f"use --weights imported or imported:<fingerprint>, or none")
    sets = [fp for _, _, fp in store.catalog.imported_sets(task=task.name, encoder=name)]
    how = f"import them: bench embeddings import --task {task.name} --encoder {name} --from DIR"
    if not sets:
        raise StbenchError(f"no imported embeddings of {name} for task {task.name} in the store {store.root}; {how}")
    wanted = str(weights or "").strip().partition(":")[2].lower()
    if wanted:
        tail = wanted.removeprefix(IMPORTED_PREFIX + ":").removeprefix("sha256:")
        sets = [fp for fp in sets if fp.lower().removeprefix(f"{IMPORTED_PREFIX}:sha256:").startswith(tail)]
        if not sets:
            found = ", ".join(fp for _, _, fp in store.catalog.imported_sets(task=task.name, encoder=name))
            raise StbenchError(f"--weights {weights}: no such imported set of {name} for task {task.name} "
                               f"(found: {found})")
    if len(sets) > 1:
        raise StbenchError(f"task {task.name} has {len(sets)} imported embedding sets of {name} ({', '.join(sets)}); "
                           f"choose one with --weights imported:<fingerprint>")
    return ImportedEmbeddings(name, sets[0], task.name)


def imported_encoder_tasks(store_root: Path) -> dict[str, set[str]]:
    """Encoder name -> the tasks (lower case) it has imported embeddings for, in the store at ``store_root``;
    empty when there is no catalog yet (nothing is created)."""
    from stbench.errors import StoreError
    from stbench.stores import CATALOG_FILE, Catalog

    path = Path(store_root) / CATALOG_FILE
    if not path.exists():
        return {}
    try:
        with Catalog(path, read_only=True) as cat:
            rows = cat.imported_sets()
    except StoreError:  # an older schema or a busy catalog: the run itself will say what is wrong
        log.debug("cannot list imported embeddings in %s", path, exc_info=True)
        return {}
    out: dict[str, set[str]] = {}
    for task, encoder, _ in rows:
        out.setdefault(encoder, set()).add(task.lower())
    return out


# -- reading one sample's files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    sample_id: str
    path: Path  # the embedding file
    files: tuple[Path, ...]  # every file read (an .npy and its barcode list), hashed into the fingerprint


def _barcode_list(raw: Any, path: Path) -> list[str]:
    arr = np.asarray(raw)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(path, f"barcodes must be (N,) or (N, 1), found shape {arr.shape}")
    return [b.decode() if isinstance(b, bytes) else str(b) for b in arr.tolist()]


def _read_h5(path: Path) -> tuple[Any, list[str], str | None]:
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            for key in ("embeddings", "barcodes"):
                if key not in h5:
                    raise DataError(path, f"no '{key}' dataset (found: {sorted(h5.keys())}); expected HEST's "
                                          "embeddings (N, D) and barcodes (N,)")
            task = h5.attrs.get("task")  # set in files exported from an stbench store
            return h5["embeddings"][()], _barcode_list(h5["barcodes"][()], path), None if task is None else str(task)
    except OSError as exc:
        raise DataError(path, f"cannot open as HDF5, truncated or corrupt? ({exc})") from exc


def _read_parquet(path: Path) -> tuple[Any, list[str]]:
    import polars as pl

    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - polars/arrow raise many types for unreadable files
        raise DataError(path, f"cannot read as Parquet ({type(exc).__name__}: {exc})") from exc
    shape = "a barcode column and either one list/array column or D numeric columns"
    found = [c for c in df.columns if c.lower() in ("barcode", "barcodes")]
    if len(found) != 1:
        raise DataError(path, f"expected {shape}; found columns {_few(df.columns)}")
    barcodes = df[found[0]]
    if barcodes.null_count():
        raise DataError(path, f"{barcodes.null_count()} empty barcodes in column {found[0]!r}")
    rest = [c for c in df.columns if c != found[0]]
    arrays = [c for c in rest if isinstance(df.schema[c], (pl.List, pl.Array))]
    if arrays:
        if len(rest) != 1:
            others = _few([c for c in rest if c != arrays[0]])
            raise DataError(path, f"expected {shape}; found the array column {arrays[0]!r} beside {others}")
        col = df[arrays[0]]
        if isinstance(col.dtype, pl.Array):
            col = col.cast(pl.List(col.dtype.inner))
        lengths = col.list.len()
        if col.null_count() or lengths.min() == 0 or lengths.n_unique() != 1:
            raise DataError(path, f"rows of column {arrays[0]!r} are empty or of different lengths")
        values = col.explode().cast(pl.Float64).to_numpy().reshape(len(df), -1)
    else:
        text = [c for c in rest if not df.schema[c].is_numeric()]
        if text or not rest:
            what = f"column {text[0]!r} is not numeric" if text else "found only the barcode column"
            raise DataError(path, f"expected {shape}; {what}")
        values = df.select(rest).cast(pl.Float64).to_numpy()  # an empty cell becomes NaN: refused below
    return values, [str(b) for b in barcodes.cast(pl.String).to_list()]


def _read_npy(path: Path) -> tuple[Any, list[str]]:
    listing = path.with_name(path.name[: -len(".npy")] + _BARCODES_TXT)
    if not listing.exists():
        raise DataError(path, f"no barcode file {listing.name} beside it (one barcode per line, in row order)")
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot read as a NumPy array ({exc})") from exc
    lines = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return values, lines


def _read_npz(path: Path) -> tuple[Any, list[str]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("embeddings", "barcodes") if k not in npz.files]
            if missing:
                raise DataError(path, f"no '{missing[0]}' array (found: {sorted(npz.files)}); expected embeddings "
                                      "and barcodes")
            return npz["embeddings"], _barcode_list(npz["barcodes"], path)
    except (OSError, ValueError) as exc:  # also barcodes saved as Python objects, which need pickle
        raise DataError(path, f"cannot read as .npz of embeddings and barcodes, save barcodes as strings "
                              f"(np.asarray(barcodes, dtype=str)) ({exc})") from exc


def _read_source(src: _Source) -> tuple[np.ndarray, list[str], str | None]:
    """``(embeddings (N, D) float32, barcodes, task named in the file or None)``, shapes checked."""
    suffix = src.path.suffix.lower()
    task = None
    if suffix == ".h5":
        values, barcodes, task = _read_h5(src.path)
    elif suffix == ".parquet":
        values, barcodes = _read_parquet(src.path)
    elif suffix == ".npy":
        values, barcodes = _read_npy(src.path)
    else:
        values, barcodes = _read_npz(src.path)
    values = np.asarray(values)
    if values.dtype.kind not in "fiu":
        raise DataError(src.path, f"embeddings must be numbers, found {values.dtype}")
    if values.ndim != 2 or 0 in values.shape:
        raise DataError(src.path, f"embeddings must be a non-empty (N, D) array, found shape {values.shape}")
    if len(values) != len(barcodes):
        raise DataError(src.path, f"{len(values)} embedding rows but {len(barcodes)} barcodes")
    return values.astype(np.float32, copy=False), barcodes, task



def _row_order(src: _Source, barcodes: list[str], patch_barcodes: list[str], patches: Path) -> np.ndarray:
    """Rows of the imported file in the patch file's barcode order; missing or extra barcodes are errors."""
    index = {b: i for i, b in enumerate(barcodes)}
    if len(index) != len(barcodes):
        dup = next(b for b in barcodes if barcodes.count(b) > 1)
        raise DataError(src.path, f"duplicate barcode {dup!r}")
    missing = [b for b in patch_barcodes if b not in index]
    if missing:
        raise DataError(src.path, f"{len(missing)} of {len(patch_barcodes)} barcodes of the patch file {patches.name} "
                                  f"have no embedding (first: {missing[0]!r})")
    wanted = set(patch_barcodes)
    extra = [b for b in barcodes if b not in wanted]
    if extra:
        raise DataError(src.path, f"{len(extra)} barcodes are not in the patch file {patches.name} "
                                  f"(first: {extra[0]!r}); embeddings of another sample or task?")
    return np.fromiter((index[b] for b in patch_barcodes), dtype=np.int64, count=len(patch_barcodes))


def _check_finite(src: _Source, values: np.ndarray, barcodes: list[str]) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise DataError(src.path, f"{int(bad.sum())} values are NaN or infinite (as float32), first in the row of "
                                  f"barcode {barcodes[row]!r}")


# -- the import ------------------------------------------------------------------------------------------------


def find_sources(folder: Path, task: Task, fmt: str = "auto") -> dict[str, _Source]:
    """One embedding file per task sample in ``folder`` (``fmt``: auto, hest or table), or a one-line error
    naming the file or sample that does not fit the task."""
    if fmt not in FORMATS:
        raise StbenchError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "not a folder: --from takes the folder holding one embedding file per sample")
    suffixes = _SUFFIXES.get(fmt) or tuple(s for v in _SUFFIXES.values() for s in v)
    kinds = ", ".join(f"<sample>{s}" for s in suffixes)
    by_sample: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if not p.name.startswith(".") and p.is_file() and p.suffix.lower() in suffixes:
            by_sample.setdefault(p.name[: -len(p.suffix)], []).append(p)
    if not by_sample:
        raise DataError(folder, f"no embedding files in it ({kinds})")
    for sid, files in by_sample.items():
        if len(files) > 1:
            raise DataError(files[1], f"a second file for sample {sid} beside {files[0].name}; keep one, or choose "
                                      "with --format hest|table")
    known = set(task.samples)
    if not known & set(by_sample):
        raise DataError(folder, f"none of its {len(by_sample)} embedding files is named after a sample of task "
                                f"{task.name} (files for: {_few(sorted(by_sample))}; the task's samples: "
                                f"{_few(sorted(known))}); another task's embeddings?")
    unknown = sorted(set(by_sample) - known)
    if unknown:
        raise DataError(by_sample[unknown[0]][0], f"sample {unknown[0]!r} is not in task {task.name} (its samples: "
                                                  f"{_few(sorted(known))})")
    missing = sorted(known - set(by_sample))
    if missing:
        raise DataError(folder, f"no embeddings for sample {missing[0]!r} of task {task.name} ({len(missing)} of "
                                f"{len(known)} samples have no file; expected one of {kinds})")
    out = {}
    for sid in sorted(known):
        path = by_sample[sid][0]
        extra = (path.with_name(sid + _BARCODES_TXT),) if path.suffix.lower() == ".npy" else ()
        out[sid] = _Source(sid, path, (path, *extra))
    return out


def _fingerprint(sources: dict[str, _Source]) -> str:
    """``imported:sha256:<16 hex>`` of the files' contents, all samples in sample order."""
    from stbench.hashing import file_digest

    h = hashlib.sha256()
    for sid in sorted(sources):
        for f in sources[sid].files:
            if f.exists():  # a missing barcode list is reported when the sample is read
                h.update(f"{sid}:{file_digest(f)}\n".encode())
    return f"{IMPORTED_PREFIX}:sha256:{h.hexdigest()[:16]}"


def _canonical_task(name: str) -> str:
    from stbench.tasks import canonical_task_name

    return canonical_task_name(name)


@dataclass(frozen=True)
class ImportPlan:
    """A checked import: every sample's file fits the task; nothing is written yet (`write_import`)."""

    task: Task
    encoder: str  # the registered encoder's canonical name, or the free name
    registered: bool
    fingerprint: str  # imported:sha256:<16 hex>
    dim: int
    sources: dict[str, _Source]  # sample -> its files, in sample order
    spots: dict[str, int]  # sample -> rows


def plan_import(task: Task, encoder: str, folder: Path, *, fmt: str = "auto") -> ImportPlan:
    """Check every sample's embeddings in ``folder`` against ``task`` (reads them all; writes nothing).
    Raises a one-line `DataError` naming the file for anything that does not fit."""
    from stbench.tasks import PatchFile

    spec_encoder = _registered(encoder)
    name = spec_encoder.name if spec_encoder is not None else free_encoder_name(encoder)
    expected = spec_encoder.spec.embed_dim if spec_encoder is not None else None
    sources = find_sources(folder, task, fmt)
    dim: tuple[int, Path] | None = None
    spots = {}
    for sid, src in sources.items():
        values, barcodes, file_task = _read_source(src)
        if file_task is not None and _canonical_task(file_task) != _canonical_task(task.name):
            raise DataError(src.path, f"holds embeddings of task {file_task}, not {task.name}")
        d = values.shape[1]
        if expected is not None and d != expected:
            raise DataError(src.path, f"{d}-dimensional embeddings, but the registered encoder {name} gives "
                                      f"{expected}; import them under another (free) name if another model made them")
        if dim is not None and d != dim[0]:
            raise DataError(src.path, f"{d}-dimensional embeddings, but {dim[1].name} has {dim[0]}; every sample "
                                      "needs the same")
        dim = dim or (d, src.path)
        with PatchFile(task.samples[sid].patches) as pf:
            _row_order(src, barcodes, pf.barcodes, pf.path)
        _check_finite(src, values, barcodes)
        spots[sid] = len(values)
    assert dim is not None  # find_sources returns every task sample
    return ImportPlan(task, name, spec_encoder is not None, _fingerprint(sources), dim[0], sources, spots)


def write_import(plan: ImportPlan, store: Store) -> dict[str, str]:
    """Write a checked import into the store: one embedding file per sample (atomic, checksummed, rows in the
    patch file's order, keyed by the patch file's fingerprint) and its ``embeddings`` rows, registered
    together once every file is in place. Returns ``{sample: path}``."""
    from stbench.extract import patch_fingerprint
    from stbench.stores import EmbeddingWriter
    from stbench.stores.locks import lock_timeout
    from stbench.tasks import PatchFile

    task, name, fp = plan.task, plan.encoder, plan.fingerprint
    rows, written, paths = [], [], {}
    try:
        for sid, src in plan.sources.items():
            sample = task.samples[sid]
            path = store.embedding_path(task.name, name, fp, sid)
            lock = store.lock("embed", json.dumps([task.name, name, fp, sid]),
                              what=f"the embeddings of {task.name}/{sid} ({name}), being imported")
            values, barcodes, _ = _read_source(src)  # read again: one sample in memory at a time
            with lock.hold(lock_timeout(store.lock_timeout)), PatchFile(sample.patches) as pf:
                values = values[_row_order(src, barcodes, pf.barcodes, pf.path)]
                _check_finite(src, values, pf.barcodes)  # the files changed since they were checked?
                attrs = {"task": task.name, "sample_id": sid, "encoder": name, "weights_fingerprint": fp,
                         "source_fingerprint": patch_fingerprint(pf.path), "stbench_version": stbench.__version__,
                         "embed_dim": plan.dim, "imported_from": str(src.path.absolute())}
                existed = path.exists()
                writer = EmbeddingWriter(path, n=len(values), dim=plan.dim, barcodes=pf.barcodes, coords=pf.coords,
                                         attrs=attrs)
                try:
                    writer.write(0, values)
                    writer.commit()
                except BaseException:
                    writer.abort()
                    raise
            if not existed:
                written.append(path)
            paths[sid] = str(path)
            rows.append({"task": task.name, "encoder": name, "weights_fingerprint": fp, "sample_id": sid,
                         "source_fingerprint": attrs["source_fingerprint"], "path": store.relative(path),
                         "n_patches": len(values), "dim": plan.dim, "stbench_version": stbench.__version__})
        with store.catalog.session(write=True) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for row in rows:
                    store.catalog.add_embedding(**row)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
    except BaseException:
        for path in written:  # files this import added, now registered nowhere
            path.unlink(missing_ok=True)
        raise
    return paths


def import_embeddings(task: Task, encoder: str, folder: Path, store: Store, *, fmt: str = "auto") -> ImportPlan:
    """`plan_import` then `write_import`: the whole import, or nothing written."""
    plan = plan_import(task, encoder, folder, fmt=fmt)
    write_import(plan, store)
    return plan
