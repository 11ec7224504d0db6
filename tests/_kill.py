"""Kill -9 a fresh Python process at a chosen point: the debris tests' way of interrupting a writer.

The child runs ``code`` after a prelude defining ``block_at(owner, name, after=0)``, which replaces
``owner.name`` by a wrapper that, on call number ``after + 1``, signals the parent and sleeps; the parent then
sends SIGKILL to the child's PID. No hook in stbench itself: the point is any attribute the child can patch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLAG_ENV = "STBENCH_TEST_BLOCKED_FLAG"

PRELUDE = f'''
import os, time
from pathlib import Path


def block_at(owner, name, after=0):
    real, calls = getattr(owner, name), [0]

    def blocking(*args, **kwargs):
        calls[0] += 1
        if calls[0] > after:
            Path(os.environ["{FLAG_ENV}"]).write_text(str(os.getpid()))
            time.sleep(600)
        return real(*args, **kwargs)

    setattr(owner, name, blocking)
'''

needs_sigkill = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="kill -9 is POSIX")


def killed_at(workdir: Path, code: str, *, timeout: float = 120) -> int:
    """Run ``code`` in a fresh Python (cwd: the repository) until it blocks in a `block_at` point, then kill -9
    it by PID; returns the PID. Fails the test if the child ends or takes ``timeout`` s without blocking."""
    flag, log = workdir / "child-blocked", workdir / "child.log"
    flag.unlink(missing_ok=True)
    with log.open("w") as out:
        child = subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], cwd=REPO,
                                 env={**os.environ, FLAG_ENV: str(flag)}, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while not flag.exists():
            if child.poll() is not None:
                pytest.fail(f"the child exited ({child.returncode}) without reaching its blocking point:\n"
                            f"{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the child did not block within {timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()
    return child.pid
