"""Embeddings on disk: one HDF5 file per (task, encoder, weights fingerprint, sample), written atomically.

Layout of a file (format ``stbench-embeddings`` version 1)::

    /embeddings  (N, D) float32   one row per patch, in patch-file order
    /barcodes    (N,)   UTF-8     the patch file's barcodes
    /coords      (N, 2) int64     the patch file's coords
    attrs: stbench-encoding-type, stbench-encoding-version, task, sample_id, encoder,
           weights_fingerprint, source_fingerprint, stbench_version, embed_dim

A file is written under a temporary name and renamed into place only when complete, so a killed
extraction never leaves a file that looks finished.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stbench.errors import StoreError

__all__ = ["ENCODING_TYPE", "ENCODING_VERSION", "Embeddings", "EmbeddingWriter", "embedding_path", "read_embeddings"]

ENCODING_TYPE = "stbench-embeddings"
ENCODING_VERSION = 1


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


def read_embeddings(path: Path) -> Embeddings:
    """Read a whole embedding file; checks its encoding type and version."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            kind = h5.attrs.get("stbench-encoding-type")
            version = int(h5.attrs.get("stbench-encoding-version", -1))
            if kind != ENCODING_TYPE or version != ENCODING_VERSION:
                raise StoreError(f"{path}: not a {ENCODING_TYPE} v{ENCODING_VERSION} file (found {kind} v{version})")
            barcodes = [b.decode() if isinstance(b, bytes) else str(b) for b in h5["barcodes"][()]]
            return Embeddings(h5["embeddings"][()], barcodes, h5["coords"][()], dict(h5.attrs))
    except OSError as exc:
        raise StoreError(f"{path}: unreadable embedding file ({exc}); delete it and rerun to recompute") from exc


class EmbeddingWriter:
    """Stream embeddings of one sample into a temporary file; `commit` renames it into place."""

    def __init__(self, path: Path, *, n: int, dim: int, barcodes: list[str], coords: np.ndarray, attrs: dict) -> None:
        import h5py

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        self._h5 = h5py.File(self.tmp, "w")
        self._emb = self._h5.create_dataset("embeddings", shape=(n, dim), dtype=np.float32)
        self._h5.create_dataset("barcodes", data=np.asarray(barcodes, dtype=object), dtype=h5py.string_dtype("utf-8"))
        self._h5.create_dataset("coords", data=np.asarray(coords, dtype=np.int64).reshape(n, 2))
        self._h5.attrs["stbench-encoding-type"] = ENCODING_TYPE
        self._h5.attrs["stbench-encoding-version"] = ENCODING_VERSION
        for k, v in attrs.items():
            self._h5.attrs[k] = v
        self.n = n
        self.written = 0

    def write(self, offset: int, block: np.ndarray) -> None:
        self._emb[offset : offset + len(block)] = block
        self.written = max(self.written, offset + len(block))

    def commit(self) -> Path:
        if self.written != self.n:
            self.abort()
            raise StoreError(f"{self.path}: only {self.written} of {self.n} embeddings written; not saved")
        self._h5.flush()
        self._h5.close()
        os.replace(self.tmp, self.path)  # atomic on one filesystem
        return self.path

    def abort(self) -> None:
        try:
            self._h5.close()
        finally:
            self.tmp.unlink(missing_ok=True)
