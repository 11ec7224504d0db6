"""What content fingerprints cost: `Task.fingerprint` on the real HER2ST task, cold and warm digest cache.

    python benchmarks/bench_hashing.py --her2st ../shared/data/her2st [--data-root D] [--repeats 5]

Imports HER2ST into a scratch data root (or uses the one given), then times, each ``--repeats`` times (median):
- baseline, size only: `open_task` + the pre-issue-11 fingerprint (splits, genes, each sample file's size);
- baseline, read once: reading every patch and count file once in 4 MiB blocks, hashing nothing (the I/O floor);
- cold: `open_task` + `Task.fingerprint` with an empty digest cache (every file hashed, the cache filled);
- warm: the same with the filled cache and an empty in-process memo, as a new `bench run` process would see it.
The files sit in the OS page cache throughout (the import has just written them, or the read-once baseline
has just read them), so "cold" is a cold digest cache, not a cold disk. Prints a JSON line and appends it
to benchmarks/out/hashing.jsonl.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _results import append_result  # benchmarks/_results.py (run as python benchmarks/<file>.py)

from stbench import hashing
from stbench.tasks import Task, open_task


def size_fingerprint(task: Task) -> str:
    """The fingerprint before issue 11, verbatim: splits, genes and each sample file's size."""
    h = hashlib.sha256()
    for f in sorted((task.path / "splits").glob("*.csv")):
        h.update(f.name.encode() + f.read_bytes())
    h.update(json.dumps(task.genes).encode())
    for sid in sorted(task.samples):
        s = task.samples[sid]
        h.update(f"{sid}:{s.patches.stat().st_size}:{s.adata.stat().st_size}".encode())
    return h.hexdigest()[:16]


def read_once(files: list[Path]) -> int:
    buf = bytearray(4 << 20)
    total = 0
    for path in files:
        with path.open("rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                total += n
    return total


def timed(fn: Callable[[], object], repeats: int, before: Callable[[], None] = lambda: None) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls, ``before`` run untimed ahead of each."""
    times = []
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--her2st", type=Path, default=Path("../shared/data/her2st"))
    ap.add_argument("--data-root", type=Path, help="a data root already holding HER2ST/ (else imported to a scratch folder)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="stbench-bench-hashing-"))
    try:
        row = measure(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(row))
    append_result("hashing", row)


def measure(args: argparse.Namespace, scratch: Path) -> dict:
    root = args.data_root
    if root is None:
        from stbench.data.her2st import import_her2st

        root = scratch / "data"
        import_her2st(args.her2st, root, progress=False)
    task = open_task("her2st", root)
    files = [p for s in task.samples.values() for p in (s.patches, s.adata)]
    n_bytes = sum(p.stat().st_size for p in files)

    cache = scratch / "file-digests.sqlite"
    os.environ[hashing.DIGEST_CACHE_ENV] = str(cache)

    def fresh_process() -> None:
        hashing._memo.clear()

    def empty_cache() -> None:
        fresh_process()
        cache.unlink(missing_ok=True)

    load = os.getloadavg()[0]
    size_s = timed(lambda: size_fingerprint(open_task("her2st", root)), args.repeats)
    read_s = timed(lambda: read_once(files), args.repeats)
    cold_s = timed(lambda: open_task("her2st", root).fingerprint, args.repeats, empty_cache)
    warm_s = timed(lambda: open_task("her2st", root).fingerprint, args.repeats, fresh_process)

    row = {"task": "HER2ST", "samples": len(task.samples), "files": len(files), "mb": round(n_bytes / 1e6, 1),
           "repeats": args.repeats, "size_only_s": round(size_s, 5), "read_once_s": round(read_s, 4),
           "cold_s": round(cold_s, 4), "warm_s": round(warm_s, 5),
           "cold_mb_per_s": round(n_bytes / 1e6 / cold_s), "read_mb_per_s": round(n_bytes / 1e6 / read_s),
           "cold_over_size_only": round(cold_s / size_s, 1), "warm_over_size_only": round(warm_s / size_s, 2),
           "cold_over_read_once": round(cold_s / read_s, 2), "cold_over_warm": round(cold_s / warm_s, 1),
           "cpus": os.cpu_count(), "python": platform.python_version(), "load_before": round(load, 2),
           "load_after": round(os.getloadavg()[0], 2)}
    return row


if __name__ == "__main__":
    main()
