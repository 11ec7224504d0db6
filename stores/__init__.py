"""The store: HDF5 embedding files plus a DuckDB catalog, under one root folder.

    <store>/catalog.duckdb                                       catalog (see `stbench.stores.catalog`)
    <store>/embeddings/<task>/<encoder>/<fingerprint>/<sample>.h5  embeddings (see `stbench.stores.embeddings`)
    <store>/models/<run_id>/fold<i>.pt                            fitted trainable reducers (BP-Booster)

The store is the only state shared between runs; it can be killed at any point and rerun.
"""

from __future__ import annotations

from pathlib import Path

from stbench.stores.catalog import Catalog
from stbench.stores.embeddings import EmbeddingWriter, embedding_path, read_embeddings

__all__ = ["Store", "Catalog", "EmbeddingWriter", "embedding_path", "read_embeddings"]

CATALOG_FILE = "catalog.duckdb"


class Store:
    """A store root; opens its catalog lazily (one writer process at a time)."""

    def __init__(self, root: Path, *, read_only: bool = False) -> None:
        self.root = Path(root)
        self.read_only = read_only
        self._catalog: Catalog | None = None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog(self.root / CATALOG_FILE, read_only=self.read_only)
        return self._catalog

    def embedding_path(self, task: str, encoder: str, weights_fingerprint: str, sample_id: str) -> Path:
        return embedding_path(self.root, task, encoder, weights_fingerprint, sample_id)

    def model_path(self, run_id: str, fold: int) -> Path:
        """Where a trainable reducer's fitted state for one fold of one run is kept."""
        return self.root / "models" / run_id / f"fold{fold}.pt"

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
