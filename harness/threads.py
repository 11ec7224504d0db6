"""How many threads torch and BLAS use: the CPUs this process may run on, unless the user says.

On a shared machine the defaults oversubscribe: torch and OpenBLAS each start one thread per core they
see (every core of the host, not the process's CPU set or its container's CPU quota), and threads that wait
for each other on a busy core spin. On a busy 2-core machine ``--alpha cv`` on one 283 x 1280 fold took
8.8 s with 2 threads and 0.48 s with 1. So the default is the CPUs this process may use: its affinity
mask (`os.sched_getaffinity`) capped by the cgroup CPU quota (``cpu.max`` for cgroup v2,
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` for v1), and ``--threads N`` or ``STBENCH_THREADS`` overrides it.

The functions reading the cgroup take its root folder, so tests pass fake files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["THREADS_ENV", "affinity_cpus", "available_cpus", "busy_hint", "cgroup_cpu_quota", "resolve_threads",
           "use_threads"]

THREADS_ENV = "STBENCH_THREADS"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
# read when a library loads: covers the BLAS/OpenMP libraries imported after the limit is applied
_LIBRARY_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (all CPUs where the platform has no affinity call)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _v2_quota(folder: Path) -> float | None:
    """``cpu.max`` is ``<quota> <period>`` or ``max <period>`` (no limit)."""
    text = _read(folder / "cpu.max")
    if not text:
        return None
    quota, _, period = text.partition(" ")
    try:
        return None if quota == "max" else int(quota) / int(period or 100000)
    except (ValueError, ZeroDivisionError):
        return None


def _v1_quota(folder: Path) -> float | None:
    """``cpu.cfs_quota_us`` (-1: no limit) over ``cpu.cfs_period_us``."""
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    try:
        q, p = int(quota or -1), int(period or 0)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _ancestors(base: Path, relative: str) -> list[Path]:
    """``base/relative`` and each folder above it up to ``base``: a limit anywhere on the way applies."""
    parts = [p for p in relative.strip("/").split("/") if p and p != ".."]
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The tightest CPU quota (in CPUs, e.g. 1.5) on this process's cgroup and its ancestors, or None.

    ``root`` is where cgroups are mounted; ``proc_cgroup`` lists this process's cgroups (``/proc/self/cgroup``:
    ``0::/path`` for v2, ``N:cpu,cpuacct:/path`` for v1). In a container the listed path may be the host's
    while the mount shows the container's own cgroup, so ``root`` itself is always read too.
    """
    v2_path, v1_path = "/", "/"
    for line in (_read(proc_cgroup) or "").splitlines():
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            v2_path = path
        elif "cpu" in controllers.split(","):
            v1_path = path
    quotas = [_v2_quota(d) for d in _ancestors(root, v2_path)]
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        if (root / mount).is_dir():
            quotas += [_v1_quota(d) for d in _ancestors(root / mount, v1_path)]
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def available_cpus(*, root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP,
                   affinity: int | None = None) -> tuple[int, str]:
    """``(CPUs this process may use, how that was found)``: the affinity mask capped by the cgroup quota
    (rounded down, at least 1)."""
    cpus = affinity_cpus() if affinity is None else affinity
    quota = cgroup_cpu_quota(root, proc_cgroup)
    if quota is None:
        return cpus, f"CPUs this process may use: affinity {cpus}, no cgroup CPU quota"
    return min(cpus, max(1, math.floor(quota))), f"CPUs this process may use: affinity {cpus}, cgroup quota {quota:g}"


def resolve_threads(requested: int | None, *, source: str = "--threads") -> tuple[int, str]:
    """``(threads, why)``: ``requested`` when given (``source`` says where it came from), else `available_cpus`."""
    if requested is not None:
        if requested < 1:
            from stbench.errors import StbenchError

            raise StbenchError(f"{source} {requested}: expected a number of threads >= 1")
        return requested, source
    return available_cpus()


def busy_hint(threads: int, *, requested: bool, load: float | None = None) -> str | None:
    """A line for the run's header when the default thread count meets a machine already busy with other jobs.

    The default is not lowered by itself: float32 BLAS sums split their work by thread count, so lsqr PCCs move
    in the 4th decimal between 1 and 2 threads, and a run's numbers must not depend on what else was running.
    ``load``: the 1-minute load average (`os.getloadavg`, read when not given; None where there is none).
    """
    if requested or threads < 2:
        return None
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # Windows
            return None
    if load < threads + 1:
        return None
    return (f"load average {load:.1f} on {threads} CPUs: other jobs share them, and threads that wait for each "
            f"other spin; --threads 1 is often several times faster on a busy machine (it may move float32 "
            f"results in the 4th decimal)")


@contextmanager
def use_threads(n: int) -> Iterator[None]:
    """Run the body with ``n`` torch threads and ``n`` threads in every BLAS/OpenMP library (threadpoolctl;
    the environment variables they read cover those loaded later); the previous settings come back after."""
    import torch
    from threadpoolctl import threadpool_limits

    saved_env = {k: os.environ.get(k) for k in _LIBRARY_ENV}
    os.environ.update(dict.fromkeys(_LIBRARY_ENV, str(n)))
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    limits = threadpool_limits(limits=n)
    try:
        yield
    finally:
        limits.restore_original_limits()
        torch.set_num_threads(previous)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
