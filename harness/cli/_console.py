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

__all__ = ["console", "err_console", "data_root_option", "store_option", "quiet_library_warnings", "make_progress",
           "LogProgress", "SYNTHETIC_NOTE"]

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
             "[default: $STBENCH_HOME/store, i.e. ~/.cache/stbench/store; ./stbench-store where one exists]",
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


class LogProgress:
    """Progress as plain lines on stderr, for a log or a pipe (no terminal): the subset of rich's ``Progress``
    the runner uses. Bars added with ``log="steps"`` (samples of a task being embedded, folds of a reducer)
    print a line per step with the rate and the time left; bars with ``log="items"`` (one sample's patches)
    add their count and rate to the next step line, or print one line when they end outside any step bar."""

    def __init__(self, console) -> None:  # noqa: ANN001 - a rich Console
        self.console = console
        self._bars: dict[int, dict] = {}
        self._pending = ""
        self._next = 0

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bars.clear()

    def add_task(self, description: str, total: float | None = None, **fields) -> int:  # noqa: ANN003
        import time

        self._next += 1
        bar_id = self._next
        self._bars[bar_id] = {"description": description, "total": total, "done": 0, "start": time.monotonic(),
                              "log": fields.get("log"), "unit": fields.get("unit", "")}
        return bar_id

    def update(self, task_id: int, *, advance: float | None = None, description: str | None = None,
               total: float | None = None, completed: float | None = None, **_: object) -> None:
        bar = self._bars.get(task_id)
        if bar is None:
            return
        if description is not None:
            bar["description"] = description
        if total is not None:
            bar["total"] = total
        if completed is not None:
            bar["done"] = completed
        if advance:
            self.advance(task_id, advance)

    def advance(self, task_id: int, advance: float = 1) -> None:
        import time

        bar = self._bars.get(task_id)
        if bar is None:
            return
        bar["done"] += advance
        if bar["log"] != "steps":
            return
        took, done, total, unit = time.monotonic() - bar["start"], bar["done"], bar["total"], bar["unit"]
        line = f"{bar['description']}: {done:g}/{total:g} {unit}{'s' * (total != 1)}" if total else \
            f"{bar['description']}: {done:g} {unit}s"
        line += f" in {_duration(took)} ({_duration(took / done)}/{unit})" if done else ""
        if self._pending:
            line += f"; {self._pending}"
            self._pending = ""
        if total and done < total:
            line += f"; ETA {_duration(took / done * (total - done))}"
        self._print(line)

    def remove_task(self, task_id: int) -> None:
        import time

        bar = self._bars.pop(task_id, None)
        if bar is None or bar["log"] != "items" or not bar["done"]:
            return
        took = time.monotonic() - bar["start"]
        rate = bar["done"] / took if took > 0 else float("inf")
        summary = f"{bar['description']}: {bar['done']:g} {bar['unit']} in {_duration(took)} ({rate:.1f} {bar['unit']}/s)"
        if any(b["log"] == "steps" for b in self._bars.values()):
            self._pending = summary  # told with the enclosing step's line
        else:
            self._print(summary)

    def _print(self, line: str) -> None:
        import datetime

        from rich.markup import escape

        self.console.print(f"[dim]{datetime.datetime.now():%H:%M:%S}[/] {escape(line)}", soft_wrap=True)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes} min {s:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def make_progress(*, enabled: bool, log: bool = False):  # noqa: ANN201
    """A rich progress display with items/s (patches/s during extraction), on stderr; with ``log`` and not
    ``enabled`` (no terminal), `LogProgress` lines instead."""
    if log and not enabled:
        return LogProgress(err_console())
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:  # noqa: ANN001
            return Text(f"{task.speed:7.1f}/s" if task.speed else "", style="dim")

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn(),
                    console=err_console(), disable=not enabled, transient=True)
