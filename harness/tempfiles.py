"""Temporary names for what is written aside and renamed into place, and the debris of writers that were killed.

Every stbench writer (embedding files, task imports, fetched tasks, the leaderboard site) stages its output
under a hidden name next to the target, which carries the writer's identity::

    .<target>.<kind>-<host>-<pid>-<start>-<random>

``kind`` is ``tmp`` (being written) or ``old`` (the previous version, moved aside during a swap); ``start`` is
the writer's process start (clock ticks since boot on Linux, else whole seconds), so a reused PID is not
mistaken for the writer. A killed writer leaves such a name behind: listings skip hidden names, and the next writer in that folder calls
`clean_stale`, which removes the debris whose writer is gone:

- same host: the PID is not running, or runs a process that started at another time;
- another host (a shared file system), or a name without the writer's identity (as earlier versions wrote
  them): only once older than `STALE_AFTER_S`, since its writer may still be running where we cannot see it.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "STALE_AFTER_S", "TempName", "clean_stale", "is_temp_name", "parse_temp_name", "stale_temps", "temp_path",
]

log = logging.getLogger(__name__)

STALE_AFTER_S = 7 * 24 * 3600  # an unknown writer's debris: older than any extraction or import runs

_NAME = re.compile(
    r"\.(?P<target>.+)\.(?P<kind>tmp|old)-(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)-(?P<start>\d+)-[0-9a-f]{8}")
# Earlier versions' names, without the writer: .X.h5.<hex>.tmp, .TASK.tmp-<hex>, .TASK.old-<hex>, .TASK.fetch-<hex>
_LEGACY = re.compile(r"\.(?P<target>.+?)(?:\.[0-9a-f]{8}\.tmp|\.(?P<kind>tmp|old|fetch)-[0-9a-f]{8})")


@dataclass(frozen=True)
class TempName:
    """A parsed temporary name; ``host``, ``pid`` and ``start`` are None for a legacy name."""

    target: str
    kind: str
    host: str | None = None
    pid: int | None = None
    start: int | None = None


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


@functools.cache
def _start_time(pid: int) -> int | None:
    """Whole-second start time of our own process (cached per PID: a forked child has its own)."""
    return _process_start(pid)


def _process_start(pid: int) -> int | None:
    """Start time of a running process, None if none runs under ``pid``; -1 where it cannot be told.

    On Linux: clock ticks since boot from /proc/<pid>/stat, which never change for a process (a wall-clock start
    time is derived from the boot time, which moves when a virtual machine's clock is adjusted)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()  # after "(comm)", which may hold spaces
        return None if fields[0] == b"Z" else int(fields[19])  # state; starttime is field 22 of the line
    except FileNotFoundError:
        return None
    except (OSError, IndexError, ValueError):
        pass  # not Linux: ask psutil
    try:
        import psutil
    except ImportError:  # a dependency, but a missing one only weakens the check to the age rule
        return -1
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped by its parent
            return None
        return int(proc.create_time())
    except psutil.NoSuchProcess:
        return None
    except (psutil.AccessDenied, OSError):
        return -1


def temp_path(target: Path, kind: str = "tmp") -> Path:
    """A fresh hidden name next to ``target`` carrying this process's identity; nothing is created."""
    target = Path(target)
    pid = os.getpid()
    start = _start_time(pid)
    stamp = f"{_host()}-{pid}-{max(start or 0, 0)}-{uuid.uuid4().hex[:8]}"
    return target.with_name(f".{target.name}.{kind}-{stamp}")


def parse_temp_name(name: str) -> TempName | None:
    """The parts of a stbench temporary name (current or legacy form), None for any other name."""
    if m := _NAME.fullmatch(name):
        return TempName(m["target"], m["kind"], m["host"], int(m["pid"]), int(m["start"]))
    if m := _LEGACY.fullmatch(name):
        return TempName(m["target"], "old" if m["kind"] == "old" else "tmp")
    return None


def is_temp_name(name: str) -> bool:
    """True for a name stbench gives to a file or folder while it is written or swapped."""
    return parse_temp_name(name) is not None


def _writer_gone(tag: TempName, path: Path, now: float) -> bool:
    try:
        age = now - path.lstat().st_mtime
    except FileNotFoundError:
        return False  # removed meanwhile, by its writer or another cleaner
    if tag.pid is None or tag.host != _host():
        return age > STALE_AFTER_S
    started = _process_start(tag.pid)
    if started is None:
        return True
    if started == -1 or tag.start == 0:  # cannot tell whether the PID was reused
        return age > STALE_AFTER_S
    return abs(started - tag.start) > 1  # same PID, another process: the writer is gone


def stale_temps(folder: Path, *, target: str | None = None) -> list[Path]:
    """Temporary files and folders in ``folder`` (for ``target`` only, if given) whose writer is gone."""
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    now = time.time()
    out = []
    for entry in entries:
        tag = parse_temp_name(entry.name)
        if tag is None or (target is not None and tag.target != target):
            continue
        if _writer_gone(tag, Path(entry.path), now):
            out.append(Path(entry.path))
    return sorted(out)


def clean_stale(folder: Path, *, target: str | None = None) -> list[Path]:
    """Remove `stale_temps`; an ``old`` version whose target is missing (a swap killed between its two
    renames) is renamed back instead. Returns the paths handled; failures are logged, never raised."""
    done = []
    for path in stale_temps(folder, target=target):
        tag = parse_temp_name(path.name)
        dest = path.with_name(tag.target)  # type: ignore[union-attr]
        try:
            if tag.kind == "old" and not os.path.lexists(dest):  # type: ignore[union-attr]
                os.rename(path, dest)
                log.warning("restored %s from %s, left by a writer that was killed", dest, path.name)
            elif path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue  # another cleaner got there first
        except OSError as exc:
            log.warning("could not remove %s, left by a writer that was killed (%s); remove it by hand", path, exc)
            continue
        done.append(path)
    return done
