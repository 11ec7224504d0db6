"""Embeddings on disk: one HDF5 file per (task, encoder, weights fingerprint, sample), written atomically.

Layout of a file (format ``stbench-embeddings`` version 2)::

    /embeddings  (N, D) float32   one row per patch, in patch-file order
    /barcodes    (N,)   UTF-8     the patch file's barcodes
    /coords      (N, 2) int64     the patch file's coords
    attrs: stbench-encoding-type, stbench-encoding-version, stbench-checksum, task, sample_id, encoder,
           weights_fingerprint, source_fingerprint, stbench_version, embed_dim

``stbench-checksum`` is ``crc32:<8 hex>``, the CRC-32 (zlib's) of the barcodes (UTF-8, each followed by a NUL
byte), then the coords (int64 little-endian, row-major), then the embeddings (float32 little-endian,
row-major). `read_embeddings` checks it, so a flipped bit is an error rather than different numbers.
Version 1 files (no checksum) are still read, unverified; `embedding_checksum_ok` tells them apart.

A file is written under a temporary name (`stbench.tempfiles`) and renamed into place only when complete,
so a killed extraction never leaves a file that looks finished; the next writer in the folder removes what
a killed one left.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stbench.errors import StoreError
from stbench.tempfiles import clean_stale, temp_path

__all__ = [
    "ENCODING_TYPE", "ENCODING_VERSION", "CHECKSUM_ATTR", "Embeddings", "EmbeddingWriter", "embedding_checksum_ok",
    "embedding_path", "read_embeddings",
]

ENCODING_TYPE = "stbench-embeddings"
ENCODING_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: no checksum
CHECKSUM_ATTR = "stbench-checksum"
_REREAD_ROWS = 8192  # rows per read when a file's checksum is computed from disk


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", part)


def embedding_path(root: Path, task: str, encoder: str, weights_fingerprint: str, sample_id: str) -> Path:
    """``<root>/embeddings/<task>/<encoder>/<fingerprint>/<sample>.h5``."""
    fp = _safe(weights_fingerprint.split(":")[-1])
    return Path(root) / "embeddings" / _safe(task) / _safe(encoder) / fp / f"{_safe(sample_id)}.h5"


@dataclass
class Embeddings:
    embeddings: np.ndarray
    barcodes: list[str]
    coords: np.ndarray
    attrs: dict


# CRC-32, not a cryptographic hash: the threat is bit rot and bad copies, not tampering. It catches every
# single-bit flip and burst up to 32 bits (other damage but for 1 in 2^32, like HDF5's fletcher32) at ~7 GB/s,
# where BLAKE2b runs at ~1.4 GB/s: checking 1 GB costs about what reading it from the page cache costs.
def _prefix_crc(barcodes: list[str], coords: np.ndarray) -> int:
    return _crc(zlib.crc32("".join(f"{b}\0" for b in barcodes).encode()), coords, "<i8")


def _crc(value: int, array: np.ndarray, dtype: str) -> int:
    return zlib.crc32(np.ascontiguousarray(array, dtype=dtype).reshape(-1).view(np.uint8), value)  # no copy if so


def _checksum(crc: int) -> str:
    return f"crc32:{crc:08x}"


def _read(path: Path) -> tuple[Embeddings, bool | None]:
    """The file's contents and whether its checksum matches (None: a version 1 file, which has none)."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            kind = h5.attrs.get("stbench-encoding-type")
            version = int(h5.attrs.get("stbench-encoding-version", -1))
            if kind != ENCODING_TYPE or version not in READABLE_VERSIONS:
                readable = "/".join(f"v{v}" for v in READABLE_VERSIONS)
                raise StoreError(f"{path}: not a {ENCODING_TYPE} {readable} file (found {kind} v{version})")
            barcodes = [b.decode() if isinstance(b, bytes) else str(b) for b in h5["barcodes"][()]]
            emb = Embeddings(h5["embeddings"][()], barcodes, h5["coords"][()], dict(h5.attrs))
    except OSError as exc:
        raise StoreError(f"{path}: unreadable embedding file ({exc}); delete it and rerun to recompute") from exc
    if version == 1:
        return emb, None
    crc = _crc(_prefix_crc(emb.barcodes, emb.coords), emb.embeddings, "<f4")
    return emb, _checksum(crc) == emb.attrs.get(CHECKSUM_ATTR)


def read_embeddings(path: Path) -> Embeddings:
    """Read a whole embedding file; checks its encoding type, version and checksum, and that every value is
    finite (one-line `StoreError`s naming the file: every reader, the runner, explain and the leaderboard's
    layouts, gets the same refusal rather than a NaN error from scikit-learn or a silent NaN)."""
    emb, ok = _read(path)
    if ok is False:
        raise StoreError(f"{path}: checksum mismatch, the file changed after it was written (disk or copy damage, "
                         "or an edit); delete it and rerun to recompute it, or run `bench store verify --repair`")
    finite = np.isfinite(emb.embeddings).all(axis=1)  # (N, D): one verdict per patch
    if not finite.all():
        raise StoreError(f"{path}: {int((~finite).sum())} of {len(finite)} embeddings hold NaN or infinite values "
                         f"(first: barcode {emb.barcodes[int(np.argmin(finite))]!r}); delete the file and rerun "
                         "to recompute it (an encoder in half precision can overflow), or import finite ones")
    return emb


def embedding_checksum_ok(path: Path) -> bool | None:
    """Whether the file's contents match its checksum; None for a version 1 file, which records none.

    Reads the whole file. Raises `StoreError` for a file that is unreadable or not an embedding file.
    """
    return _read(path)[1]


class EmbeddingWriter:
    """Stream embeddings of one sample into a temporary file; `commit` renames it into place.

    Rows written in order are checksummed as they come (rows written out of order are read back from the file
    at `commit`). Creating a writer also removes what killed writers left in the same folder.
    """

    def __init__(self, path: Path, *, n: int, dim: int, barcodes: list[str], coords: np.ndarray, attrs: dict) -> None:
        import h5py

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(self.path.parent)
        self.tmp = temp_path(self.path)
        coords = np.asarray(coords, dtype=np.int64).reshape(n, 2)
        self._prefix = _prefix_crc([str(b) for b in barcodes], coords)
        self._crc: int | None = self._prefix
        self._summed = 0  # rows checksummed so far, in order
        self._h5 = h5py.File(self.tmp, "w")
        self._emb = self._h5.create_dataset("embeddings", shape=(n, dim), dtype=np.float32)
        self._h5.create_dataset("barcodes", data=np.asarray(barcodes, dtype=object), dtype=h5py.string_dtype("utf-8"))
        self._h5.create_dataset("coords", data=coords)
        self._h5.attrs["stbench-encoding-type"] = ENCODING_TYPE
        self._h5.attrs["stbench-encoding-version"] = ENCODING_VERSION
        for k, v in attrs.items():
            self._h5.attrs[k] = v
        self.n = n
        self.written = 0

    def write(self, offset: int, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=np.float32)  # checksummed exactly as stored
        self._emb[offset : offset + len(block)] = block
        self.written = max(self.written, offset + len(block))
        if self._crc is not None and offset == self._summed:
            self._crc = _crc(self._crc, block, "<f4")
            self._summed += len(block)
        else:
            self._crc = None

    def _file_crc(self) -> int:
        if self._crc is not None and self._summed == self.n:
            return self._crc
        crc = self._prefix
        for start in range(0, self.n, _REREAD_ROWS):
            crc = _crc(crc, self._emb[start : start + _REREAD_ROWS], "<f4")
        return crc

    def commit(self) -> Path:
        if self.written != self.n:
            self.abort()
            raise StoreError(f"{self.path}: only {self.written} of {self.n} embeddings written; not saved")
        self._h5.attrs[CHECKSUM_ATTR] = _checksum(self._file_crc())
        self._h5.flush()
        self._h5.close()
        os.replace(self.tmp, self.path)  # atomic on one filesystem
        return self.path

    def abort(self) -> None:
        try:
            self._h5.close()
        finally:
            self.tmp.unlink(missing_ok=True)
