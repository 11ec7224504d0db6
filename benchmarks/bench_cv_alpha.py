"""Alpha by grouped CV (`--alpha cv`): one Gram matrix per fold with each split's validation rows subtracted,
against refitting X'X on every split's training part (the code before), on the same data in one run.

    python benchmarks/bench_cv_alpha.py [--samples 12] [--spots 2350] [--d 1536] [--genes 50] [--threads 1]

The data: ``--samples`` training samples of ``--spots`` spots each (PRAD's fold: 11-12 samples of about 2,350),
features with a power-law spectrum and a common offset like real embeddings. Prints seconds for each way,
their ratio, and the largest relative difference between their validation errors. Writes a JSON line to
benchmarks/out/cv_alpha.jsonl.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from _results import append_result  # benchmarks/_results.py (run as python benchmarks/<file>.py)
from bench_ridge import make_data
from stbench.regression import CV_ALPHAS, cv_alpha, cv_splits, ridge_path


def per_split(X: np.ndarray, Y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The code before: `ridge_path` refitted on each split's training rows."""
    errors = np.zeros(len(CV_ALPHAS))
    for t, v in cv_splits(groups):
        yv = np.asarray(Y[v], dtype=np.float64)
        for i, (_, pred) in enumerate(ridge_path(X[t], Y[t], X[v], CV_ALPHAS, intercept=True, device="cpu")):
            errors[i] += float(((pred - yv) ** 2).sum())
    return errors / Y.size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=12)
    ap.add_argument("--spots", type=int, default=2350)
    ap.add_argument("--d", type=int, default=1536)
    ap.add_argument("--genes", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    X, Y = make_data(args.samples * args.spots, args.d, args.genes)
    X = X + 3.0 * np.abs(X).mean()  # a common offset, as embeddings after a ReLU have
    groups = np.repeat([f"s{i}" for i in range(args.samples)], args.spots)
    t0 = time.perf_counter()
    before = per_split(X, Y, groups)
    t1 = time.perf_counter()
    _, now = cv_alpha(X, Y, groups, intercept=True, device="cpu")
    t2 = time.perf_counter()
    row = {"samples": args.samples, "spots": args.spots, "d": args.d, "genes": args.genes, "threads": args.threads,
           "per_split_s": round(t1 - t0, 2), "one_gram_s": round(t2 - t1, 2), "ratio": round((t1 - t0) / (t2 - t1), 2),
           "same_alpha": bool(np.argmin(before) == np.argmin(now)),
           "max_rel_diff": float(np.max(np.abs(now - before) / before)),
           "load_avg": round(os.getloadavg()[0], 1), "python": platform.python_version()}
    print(row)
    print(f"appended to {append_result('cv_alpha', row)}")


if __name__ == "__main__":
    main()
