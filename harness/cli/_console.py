"""Consoles and options shared by the commands."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable

import click

from stbench.settings import DATA_ROOT_ENV, STORE_ENV
from stbench.stores.locks import LOCK_TIMEOUT_ENV

__all__ = ["console", "err_console", "data_root_option", "store_option", "quiet_library_warnings", "make_progress", "SYNTHETIC_NOTE"]

SYNTHETIC_NOTE = "SYNTHETIC data (bench data demo): these numbers test the pipeline, they say nothing about real tissue."


@functools.lru_cache(maxsize=1)
def console():  # noqa: ANN201
    from rich.console import Console

    return Console(highlight=False)


@functools.lru_cache(maxsize=1)
def err_console():  # noqa: ANN201
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def data_root_option(f: Callable) -> Callable:
    return click.option(
        "--data-root", type=click.Path(file_okay=False), envvar=DATA_ROOT_ENV, show_envvar=True,
        help="Folder holding HEST-layout task folders. [default: $STBENCH_HOME/data, i.e. ~/.cache/stbench/data]",
    )(f)


def _set_lock_timeout(ctx: click.Context, param: click.Parameter, value: float | None) -> None:
    if value is not None:  # read by every catalog and lock this process opens (stbench.stores.locks)
        if value < 0:
            raise click.BadParameter("must be a number of seconds >= 0")
        os.environ[LOCK_TIMEOUT_ENV] = repr(float(value))


def store_option(f: Callable) -> Callable:
    f = click.option(
        "--lock-timeout", type=float, metavar="SECONDS", expose_value=False, callback=_set_lock_timeout,
        envvar=LOCK_TIMEOUT_ENV, show_envvar=True,
        help="How long to wait for the store's catalog while another bench process holds it. [default: 300]",
    )(f)
    return click.option(
        "--store", type=click.Path(file_okay=False), envvar=STORE_ENV, show_envvar=True,
        help="Store folder (embeddings + catalog.duckdb); several bench processes can use one at once. "
             "[default: ./stbench-store]",
    )(f)


def show_progress(flag: bool | None) -> bool:
    """Progress bars on a terminal unless --no-progress."""
    return sys.stderr.isatty() if flag is None else flag


def quiet_library_warnings() -> None:
    """Library deprecation chatter is not the user's problem; stbench's own warnings still show."""
    for cat in (FutureWarning, DeprecationWarning, UserWarning):
        for mod in ("anndata", "scanpy", "squidpy", "sklearn", "numba", "dask", "spatialdata", "xarray", "h5py", "torch",
                    "timm"):
            warnings.filterwarnings("ignore", category=cat, module=mod)
    warnings.filterwarnings("ignore", category=SyntaxWarning, module="docrep")  # squidpy's docstring templating


def make_progress(*, enabled: bool):  # noqa: ANN201
    """A rich progress display with items/s (patches/s during extraction), on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:  # noqa: ANN001
            return Text(f"{task.speed:7.1f}/s" if task.speed else "", style="dim")

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn(),
                    console=err_console(), disable=not enabled, transient=True)
