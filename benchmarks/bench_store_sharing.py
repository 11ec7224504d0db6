"""Two grids on one store at the same time versus the same two grids one after the other.

    python benchmarks/bench_store_sharing.py --data-root D [--task her2st] [--encoder efficientnet-lite0]
        [--reducers identity,pca,bpbooster-random] [--alpha-a hest] [--alpha-b cv] [--device cpu] [--threads 1]

Grid A (``--alpha-a``) and grid B (``--alpha-b``) share the task, the encoder and the reducers, so they need the
same embeddings: run together, each `bench run` (a fresh process) takes the samples nobody is embedding yet
and reads the others back, and each computes its own cells. Measures the wall time of A then B in a fresh store
and of A and B started together in another fresh store, their ratio, how many samples each process embedded,
and whether the two stores hold the same numbers (every fold row and per-gene row compared exactly).
Writes a JSON line to benchmarks/out/store_sharing.jsonl.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import append_result  # benchmarks/_results.py (run as python benchmarks/<file>.py)


def command(store: Path, args: argparse.Namespace, alpha: str) -> list[str]:
    return [sys.executable, "-m", "stbench.cli", "run", "--task", args.task, "--encoder", args.encoder,
            "--reducer", args.reducers, "--alpha", alpha, "--device", args.device, "--data-root", str(args.data_root),
            "--store", str(store), "--no-progress"]


def env(args: argparse.Namespace) -> dict[str, str]:
    # the same thread count in both set-ups: two processes on 2 cores with 1 thread each vs one at a time
    n = str(args.threads)
    return {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}  # torch takes its thread count from OMP


def finish(proc: subprocess.Popen, name: str) -> str:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{name}: exit {proc.returncode}\n{out[-3000:]}")
    return out


def sequential(store: Path, args: argparse.Namespace) -> float:
    start = time.perf_counter()
    for alpha in (args.alpha_a, args.alpha_b):
        finish(subprocess.Popen(command(store, args, alpha), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env(args)), alpha)
    return time.perf_counter() - start


def together(store: Path, args: argparse.Namespace) -> tuple[float, list[str]]:
    start = time.perf_counter()
    procs = [subprocess.Popen(command(store, args, alpha), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env(args)) for alpha in (args.alpha_a, args.alpha_b)]
    outs = [finish(p, alpha) for p, alpha in zip(procs, (args.alpha_a, args.alpha_b))]
    return time.perf_counter() - start, outs


def same_numbers(a: Path, b: Path) -> bool:
    import duckdb

    queries = ["SELECT run_id, fold, alpha, pcc_mean, mse_mean FROM fold_results ORDER BY ALL",
               "SELECT run_id, fold, gene, pcc, mse FROM gene_results ORDER BY ALL",
               "SELECT task, encoder, sample_id, n_patches FROM embeddings ORDER BY ALL"]
    with duckdb.connect(str(a / "catalog.duckdb"), read_only=True) as ca, \
            duckdb.connect(str(b / "catalog.duckdb"), read_only=True) as cb:
        return all(ca.execute(q).fetchall() == cb.execute(q).fetchall() for q in queries)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--task", default="her2st")
    ap.add_argument("--encoder", default="efficientnet-lite0")
    ap.add_argument("--reducers", default="identity,pca,bpbooster-random")
    ap.add_argument("--alpha-a", default="hest")
    ap.add_argument("--alpha-b", default="cv")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch/BLAS threads per process")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stbench-sharing-"))
    try:
        t_seq = sequential(work / "sequential", args)
        t_par, outs = together(work / "together", args)
        same = same_numbers(work / "sequential", work / "together")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    row = {"task": args.task, "encoder": args.encoder, "reducers": args.reducers, "alphas": [args.alpha_a, args.alpha_b],
           "threads": args.threads, "sequential_s": round(t_seq, 1), "together_s": round(t_par, 1),
           "together_over_sequential": round(t_par / t_seq, 3), "same_numbers": same, "cpus": os.cpu_count(),
           "machine": platform.machine(), "python": platform.python_version()}
    path = append_result("store_sharing", row)
    print(row)
    print(f"appended to {path}")
    if not same:
        raise SystemExit("the two stores differ")


if __name__ == "__main__":
    main()
