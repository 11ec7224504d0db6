"""Where stbench reads and writes, resolved once from options, environment and defaults.

Order for each path: the command-line option, then the environment variable, then the default.
- data root (HEST-layout task folders): ``--data-root``, ``STBENCH_DATA_ROOT``, ``$STBENCH_HOME/data``
- store root (embeddings + catalog): ``--store``, ``STBENCH_STORE``, ``./stbench-store``
- ``STBENCH_HOME`` defaults to ``~/.cache/stbench``.
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


def store_root(option: str | os.PathLike[str] | None = None) -> Path:
    """The store folder: ``embeddings/`` (HDF5) and ``catalog.duckdb``. Defaults to the working directory."""
    if option:
        return Path(option).expanduser()
    env = os.environ.get(STORE_ENV)
    return Path(env).expanduser() if env else Path.cwd() / "stbench-store"
