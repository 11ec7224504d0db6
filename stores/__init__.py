"""The store: HDF5 embedding files plus a DuckDB catalog, under one root folder.

    <store>/catalog.duckdb                                       catalog (see `stbench.stores.catalog`)
    <store>/catalog.duckdb.lock                                  who may open it (`stbench.stores.locks`)
    <store>/embeddings/<task>/<encoder>/<fingerprint>/<sample>.h5  embeddings (see `stbench.stores.embeddings`)
    <store>/models/<run_id>/fold<i>-<token>.pt                    fitted trainable reducers (BP-Booster)
    <store>/locks/                                               one lock per computation in progress

The store is the only state shared between runs and between processes; it can be killed at any point and
rerun. Every path the catalog records is relative to the store root, so a store folder can be copied, moved
or mounted elsewhere and works unchanged.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

from stbench.stores.catalog import Catalog
from stbench.stores.embeddings import EmbeddingWriter, embedding_path, read_embeddings
from stbench.stores.locks import FileLock

__all__ = ["Store", "Catalog", "EmbeddingWriter", "embedding_path", "read_embeddings"]

CATALOG_FILE = "catalog.duckdb"


class Store:
    """A store root; its catalog is opened for short sessions (`Catalog`), so many processes share it."""

    def __init__(self, root: Path, *, read_only: bool = False, lock_timeout: float | None = None) -> None:
        self.root = Path(root).expanduser().absolute()
        self.read_only = read_only
        self.lock_timeout = lock_timeout
        self._catalog: Catalog | None = None
        # results recomputed under --force: their new folds wait here until the whole run has succeeded
        self.replacing: dict[str, list] = {}

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog(self.root / CATALOG_FILE, read_only=self.read_only, lock_timeout=self.lock_timeout)
        return self._catalog

    def embedding_path(self, task: str, encoder: str, weights_fingerprint: str, sample_id: str) -> Path:
        return embedding_path(self.root, task, encoder, weights_fingerprint, sample_id)

    def model_path(self, run_id: str, fold: int) -> Path:
        """A new file for a trainable reducer's fitted state of one fold of one run. Each computation gets
        its own name, so a recomputation (--force) never overwrites the state the stored result refers to."""
        return self.root / "models" / run_id / f"fold{fold}-{uuid.uuid4().hex[:8]}.pt"

    def relative(self, path: str | Path) -> str:
        """How the catalog records ``path``: relative to the store root (POSIX form)."""
        p = Path(path)
        p = p if p.is_absolute() else Path.cwd() / p
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            raise ValueError(f"{path} is not inside the store {self.root}") from None

    def resolve(self, recorded: str | Path) -> Path:
        """The file a catalog path names, in this store (paths recorded absolute by stbench < 0.2 are kept)."""
        p = Path(recorded)
        return p if p.is_absolute() else self.root / p

    def lock(self, kind: str, key: str, *, what: str) -> FileLock:
        """An exclusive lock on one computation (``kind``, ``key``), shared by every process using this store."""
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        return FileLock(self.root / "locks" / f"{kind}-{digest}.lock", what=what)

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
