"""Exact torch ridge vs scikit-learn's lsqr ridge (the HEST reference) on the same data, one run.

    python benchmarks/bench_ridge.py [--n 20000] [--d 1536] [--genes 50] [--repeats 1]

Features have a power-law spectrum like real embeddings (so the problem is as ill-conditioned as raw
foundation-model features); alpha follows HEST's rule. Prints seconds for each solver and their ratio,
and the largest per-gene PCC difference between them on held-out rows. Writes a JSON line to
benchmarks/out/ridge.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from _results import append_result  # benchmarks/_results.py (run as python benchmarks/<file>.py)


def make_data(n: int, d: int, g: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scales = (np.arange(1, d + 1) ** -1.0).astype(np.float64)  # eigen-spectrum decaying like embeddings'
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    X = (rng.normal(size=(n, d)) * np.sqrt(scales)) @ basis.T
    W = rng.normal(size=(d, g)) / np.sqrt(d)
    Y = X @ W * 20 + rng.normal(size=(n, g))
    return X.astype(np.float32), Y.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=1536)
    ap.add_argument("--genes", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    from stbench.metrics import pearson_per_gene
    from stbench.regression import fit_ridge, hest_alpha

    X, Y = make_data(args.n + 2000, args.d, args.genes)
    Xtr, Ytr, Xte, Yte = X[: args.n], Y[: args.n], X[args.n :], Y[args.n :]
    alpha = hest_alpha(args.d, args.genes)
    fit_ridge(Xtr[:500], Ytr[:500], alpha=alpha, solver="exact", device=args.device)  # warm-up (torch init)

    t0 = time.perf_counter()
    exact = fit_ridge(Xtr, Ytr, alpha=alpha, solver="exact", device=args.device)
    t_exact = time.perf_counter() - t0
    t0 = time.perf_counter()
    lsqr = fit_ridge(Xtr, Ytr, alpha=alpha, solver="lsqr")
    t_lsqr = time.perf_counter() - t0

    dpcc = np.nanmax(np.abs(pearson_per_gene(Yte, exact.predict(Xte)) - pearson_per_gene(Yte, lsqr.predict(Xte))))
    row = {
        "bench": "ridge", "n": args.n, "d": args.d, "genes": args.genes, "alpha": alpha, "device": args.device,
        "exact_s": round(t_exact, 3), "lsqr_s": round(t_lsqr, 3), "speedup": round(t_lsqr / t_exact, 2),
        "max_abs_pcc_diff": float(dpcc), "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(row))
    append_result("ridge", row)


if __name__ == "__main__":
    main()
