"""Errors users see as one line: what is wrong, where, and what to do next."""

from __future__ import annotations

from pathlib import Path

__all__ = ["suggest", "StbenchError", "DataError", "ProtocolError", "StoreError", "WeightsError", "FetchError"]


class StbenchError(Exception):
    """Base class: the CLI prints ``Error: <message>`` and exits non-zero, without a traceback."""

    exit_code = 1


class DataError(StbenchError):
    """Bad input data: the message names the file and the problem."""

    exit_code = 2

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class ProtocolError(StbenchError):
    """A protocol setting that cannot apply to this task or these options."""

    exit_code = 2


class StoreError(StbenchError):
    """The store (HDF5 embeddings or DuckDB catalog) is unusable as found."""


class WeightsError(StbenchError):
    """Encoder weights that cannot be found or loaded."""


class FetchError(StbenchError):
    """A download that cannot happen here (no network, no access)."""


def suggest(name: str, choices: list[str] | set[str]) -> str:
    """`` Did you mean: a, b?`` for the closest of ``choices`` (case-insensitive), or an empty string."""
    import difflib

    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)
    return f" Did you mean: {', '.join(lowered[c] for c in close)}?" if close else ""
