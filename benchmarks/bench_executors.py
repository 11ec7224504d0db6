"""The same grid under the local executor and the Ray executor (a local Ray instance), each into a fresh store.

    python benchmarks/bench_executors.py --data-root D [--task her2st] [--encoder efficientnet-lite0]
        [--reducers identity,pca,bpbooster-random] [--alpha hest,cv] [--device cpu]

Wall time of each `bench run` (a fresh process each, so Ray's start-up and shutdown are counted), their
ratio, and whether the two stores hold the same numbers (every fold row and per-gene row compared exactly).
Writes a JSON line to benchmarks/out/executors.jsonl. On one machine Ray cannot beat the local executor by
more than the parallelism the local executor leaves unused; what it costs is its start-up, a model load per
(encoder, sample) and a data read per fold fit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import append_result  # benchmarks/_results.py (run as python benchmarks/<file>.py)


def run(store: Path, args: argparse.Namespace, executor: str) -> float:
    cmd = [sys.executable, "-m", "stbench.cli", "run", "--task", args.task, "--encoder", args.encoder,
           "--reducer", args.reducers, "--alpha", args.alpha, "--device", args.device, "--data-root", str(args.data_root),
           "--store", str(store), "--no-progress", "--executor", executor]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{executor}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def same_numbers(a: Path, b: Path) -> bool:
    import duckdb

    queries = ["SELECT run_id, fold, alpha, pcc_mean, mse_mean FROM fold_results ORDER BY ALL",
               "SELECT run_id, fold, gene, pcc, mse FROM gene_results ORDER BY ALL"]
    with duckdb.connect(str(a / "catalog.duckdb"), read_only=True) as ca, \
            duckdb.connect(str(b / "catalog.duckdb"), read_only=True) as cb:
        return all(ca.execute(q).fetchall() == cb.execute(q).fetchall() for q in queries)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--task", default="her2st")
    ap.add_argument("--encoder", default="efficientnet-lite0")
    ap.add_argument("--reducers", default="identity,pca,bpbooster-random")
    ap.add_argument("--alpha", default="hest,cv")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="stbench-bench-executors-"))
    try:
        local = run(tmp / "local", args, "local")
        ray = run(tmp / "ray", args, "ray")
        same = same_numbers(tmp / "local", tmp / "ray")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    row = {"task": args.task, "encoder": args.encoder, "reducers": args.reducers, "alpha": args.alpha,
           "device": args.device, "local_s": round(local, 1), "ray_s": round(ray, 1), "ray_over_local": round(ray / local, 2),
           "same_numbers": same, "cpus": os.cpu_count(), "python": platform.python_version()}
    print(json.dumps(row))
    append_result("executors", row)


if __name__ == "__main__":
    main()
