"""Where stbench reads and writes, resolved once from options, environment and defaults.

Order for each path: the command-line option, then the environment variable, then the default.
- data root (HEST-layout task folders): ``--data-root``, ``STBENCH_DATA_ROOT``, ``$STBENCH_HOME/data``
- store root (embeddings + catalog): ``--store``, ``STBENCH_STORE``, ``$STBENCH_HOME/store`` (a
  ``./stbench-store`` that holds a catalog, the default of stbench 0.1, is still used where it exists)
- ``STBENCH_HOME`` defaults to ``~/.cache/stbench``.

The store lives under ``STBENCH_HOME`` rather than in the working folder so that embeddings, the costly part,
are computed once per machine whichever folder ``bench`` runs in, and no run leaves a store inside a git
checkout; ``--store DIR`` keeps a project's results apart (a store is self-contained and can be moved).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["home", "data_root", "store_root", "DATA_ROOT_ENV", "STORE_ENV", "HOME_ENV"]

HOME_ENV = "STBENCH_HOME"
DATA_ROOT_ENV = "STBENCH_DATA_ROOT"
STORE_ENV = "STBENCH_STORE"


def home() -> Path:
    """Per-user state folder (caches, default data root)."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "stbench").expanduser()


def data_root(option: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding HEST-layout task folders (``<root>/<TASK>/patches, adata, splits``)."""
    if option:
        return Path(option).expanduser()
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else home() / "data"


LEGACY_STORE = "stbench-store"  # stbench 0.1's default, in the working folder


def store_root(option: str | os.PathLike[str] | None = None) -> Path:
    """The store folder: ``embeddings/`` (HDF5) and ``catalog.duckdb``. Defaults to ``$STBENCH_HOME/store``."""
    if option:
        return Path(option).expanduser()
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env).expanduser()
    legacy = Path.cwd() / LEGACY_STORE
    return legacy if (legacy / "catalog.duckdb").is_file() else home() / "store"
