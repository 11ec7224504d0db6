"""Advisory file locks between processes sharing a store: who holds it, waiting visibly, never stale.

``flock`` locks die with their process (kill -9 included), so a crashed holder never leaves a lock behind.
An exclusive holder writes who it is (host, PID, command, since when) into the lock file, and a waiter names
it in its message; on the same host, ``/proc/locks`` also names shared holders (readers).

Lock files are never deleted while stbench runs: deleting a lock file that another process has opened
would let two processes hold "the same" lock on two different files.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from stbench.errors import StoreError

__all__ = ["LOCK_TIMEOUT_ENV", "DEFAULT_LOCK_TIMEOUT", "FileLock", "lock_timeout", "holders"]

log = logging.getLogger("stbench")

LOCK_TIMEOUT_ENV = "STBENCH_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 300.0  # seconds: catalog transactions take milliseconds; a site build reads for seconds
_POLL = (0.02, 0.5)  # first and longest sleep between attempts
_TELL_AFTER = 1.0  # seconds of waiting before saying so


def lock_timeout(value: float | None = None) -> float:
    """``value`` (a --lock-timeout option), else ``$STBENCH_LOCK_TIMEOUT``, else `DEFAULT_LOCK_TIMEOUT`."""
    if value is not None:
        return float(value)
    env = os.environ.get(LOCK_TIMEOUT_ENV)
    try:
        return float(env) if env else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        raise StoreError(f"{LOCK_TIMEOUT_ENV}={env!r} is not a number of seconds") from None


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.argv)[:200],
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def holders(path: Path) -> list[str]:
    """Who holds ``path``: the exclusive holder it names, plus local holders from ``/proc/locks``."""
    out: list[str] = []
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    try:
        ino = os.stat(path).st_ino
        with open("/proc/locks") as fh:  # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"
            pids = {int(f[4]) for f in (line.split() for line in fh) if len(f) > 5 and f[5].endswith(f":{ino}")}
    except (OSError, ValueError, IndexError):
        pids = set()
    if info.get("pid") and (info.get("host") != socket.gethostname() or info["pid"] in pids):
        out.append(f"PID {info['pid']} on {info['host']} ({info.get('command', '?')}, since {info.get('since', '?')})")
        pids.discard(info["pid"])
    for pid in sorted(pids):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = "?"
        out.append(f"PID {pid} ({cmd[:120]})")
    return out


class FileLock:
    """An flock on ``path``: exclusive (writers, computations) or shared (readers).

    ``acquire(timeout)`` waits up to ``timeout`` seconds (None: forever), telling ``notify`` once who holds
    it; on timeout it raises StoreError naming the holder. ``acquire(0)`` tries once and returns False.
    """

    def __init__(self, path: Path, *, what: str, shared: bool = False,
                 notify: Callable[[str], None] | None = None) -> None:
        self.path, self.what, self.shared = Path(path), what, shared
        self.notify = notify or log.warning
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float | None = None) -> bool:
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: lock already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        mode = (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        start, sleep, told = time.monotonic(), _POLL[0], False
        while True:
            try:
                fcntl.flock(fd, mode)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise StoreError(f"{self.path}: cannot lock ({exc.strerror})") from exc
            waited = time.monotonic() - start
            if timeout is not None and waited >= timeout:
                os.close(fd)
                if timeout == 0:
                    return False
                who = "; ".join(holders(self.path)) or "another process"
                raise StoreError(f"{self.what} is still busy after {waited:.0f} s (held by {who}); try again later "
                                 f"or wait longer with --lock-timeout SECONDS")
            if not told and waited >= _TELL_AFTER:
                who = "; ".join(holders(self.path)) or "another process"
                limit = "" if timeout is None else f" (up to {timeout:.0f} s, --lock-timeout)"
                self.notify(f"waiting for {self.what}: held by {who}{limit}")
                told = True
            time.sleep(sleep)
            sleep = min(sleep * 1.5, _POLL[1])
        self._fd = fd
        if not self.shared:  # name ourselves for whoever waits next
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_me()).encode(), 0)
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if not self.shared:
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextmanager
    def hold(self, timeout: float | None = None) -> Iterator[FileLock]:
        self.acquire(timeout)
        try:
            yield self
        finally:
            self.release()
