"""The whole HEST-Benchmark grid on a SYNTHETIC world of its shape: import, run, site, results, each measured.

    python benchmarks/bench_full_grid.py [--scale 0.05] [--tasks all] [--encoders all] [--epochs 2]
        [--reducers identity,pca,bpbooster-random,bpbooster-gp] [--alpha hest,cv] [--work DIR] [--keep]

The world: the ten HEST-Benchmark tasks with their published numbers of samples, patients and folds, about
170,000 spots at ``--scale 1`` (each sample 1,300-3,400 spots, times ``--scale``), 300 genes of which the task's
50 are evaluated, and for each of the nine encoders an embedding of its published size. A spot's expression
and every encoder's embedding are both driven by the same smooth spatial latent field (plus encoder-specific
noise), so PCC is far from zero and differs between encoders. Patch files hold barcodes and coordinates and an
``img`` dataset of the right shape that was never written (HDF5 keeps no bytes for it): nothing is
extracted; embeddings enter the store through `bench embeddings import`, as a user's HEST or TRIDENT vectors
would. Every number this produces is SYNTHETIC: it measures stbench's cost, not any encoder's quality.

Phases, each a fresh `bench` process measured for wall time, CPU time (its whole process tree) and peak
memory (sum of the tree's resident sets): import (one process per task and encoder), run (one grid), site
(`bench leaderboard build --include-synthetic`), and `bench results` (latency). Then the sizes: catalog, spot
prediction files, embedding files, site, and the heaviest page's first-load weight (its HTML plus the
files it loads at open, plotly.js excluded). Appends a JSON line to benchmarks/out/full_grid.jsonl.
BP-Booster runs ``--epochs`` epochs (the paper: 50) so that a CPU can finish; the line records it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import (  # benchmarks/_results.py (run as python benchmarks/<file>.py)
    append_result,
    measure_tree,
)

# task: (samples, patients, folds): /work/shared/specs/hest-protocol.md
TASKS = {"IDC": (4, 4, 4), "PRAD": (23, 2, 2), "PAAD": (3, 3, 3), "SKCM": (2, 2, 2), "COAD": (4, 2, 2),
         "READ": (4, 2, 2), "CCRCC": (24, 24, 6), "HCC": (2, 2, 2), "LUNG": (2, 2, 2), "LYMPH_IDC": (4, 4, 4)}
# the nine encoders' embedding sizes (/work/shared/specs/encoders.md), as free names: synthetic vectors
ENCODERS = {"resnet50": 1024, "ctranspath": 768, "phikon": 768, "conch": 512, "gigapath": 1536, "uni": 1024,
            "virchow": 2560, "virchow2": 2560, "hoptimus0": 1536}
N_GENES, N_LATENT, SPOTS = 300, 12, (1300, 3400)


# -- the synthetic world ---------------------------------------------------------------------------------------

def _spots_per_sample(rng: np.random.Generator, n: int, scale: float) -> list[int]:
    return [max(20, int(round(rng.integers(*SPOTS) * scale))) for _ in range(n)]


def _latent(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Spot positions on a grid and a smooth latent field over them (sums of plane waves) plus spot noise."""
    side = int(np.ceil(np.sqrt(n)))
    pos = np.stack([np.arange(n) % side, np.arange(n) // side], axis=1).astype(np.float64)
    waves = rng.normal(size=(N_LATENT, 3, 2)) / rng.uniform(4, 15, size=(N_LATENT, 3, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(N_LATENT, 3))
    z = np.sin(np.einsum("pd,kwd->pkw", pos, waves) + phase).sum(axis=2)
    return pos, (z + 0.3 * rng.normal(size=z.shape)).astype(np.float32)


def _write_task(root: Path, name: str, scale: float, rng: np.random.Generator, gene_w: np.ndarray,
                enc_maps: dict[str, np.ndarray], embed_dir: Path) -> int:
    import anndata as ad
    import h5py
    import scipy.sparse as sp

    n_samples, n_patients, n_folds = TASKS[name]
    task = root / name
    for sub in ("patches", "adata", "splits"):
        (task / sub).mkdir(parents=True, exist_ok=True)
    genes = [f"SG{i:03d}" for i in range(N_GENES)]
    sizes = _spots_per_sample(rng, n_samples, scale)
    samples = [f"{name}{i:02d}" for i in range(n_samples)]
    for sid, n in zip(samples, sizes):
        pos, z = _latent(rng, n)
        barcodes = [f"{sid}-{i}" for i in range(n)]
        with h5py.File(task / "patches" / f"{sid}.h5", "w") as h5:
            h5.create_dataset("img", shape=(n, 224, 224, 3), dtype=np.uint8, chunks=(1, 224, 224, 3))  # never written
            h5.create_dataset("barcode", data=np.array(barcodes, dtype=object).reshape(-1, 1),
                              dtype=h5py.string_dtype("utf-8"))
            h5.create_dataset("coords", data=(pos * 200).astype(np.int64))
        rate = np.exp(np.clip(0.5 + z @ gene_w, -8, 6))
        counts = rng.poisson(rate).astype(np.float32)
        a = ad.AnnData(sp.csr_matrix(counts))
        a.obs_names, a.var_names = barcodes, genes
        a.write_h5ad(task / "adata" / f"{sid}.h5ad")
        for enc, mapping in enc_maps.items():  # HEST-Benchmark's embedding file format, rows shuffled
            noise = {"resnet50": 3.0, "conch": 1.0}.get(enc, 1.5)
            emb = (z @ mapping + noise * rng.normal(size=(n, mapping.shape[1]))).astype(np.float32)
            order = rng.permutation(n)
            out = embed_dir / name / enc
            out.mkdir(parents=True, exist_ok=True)
            with h5py.File(out / f"{sid}.h5", "w") as h5:
                h5["embeddings"] = emb[order]
                h5["barcodes"] = np.array([barcodes[i] for i in order], dtype="S")
                h5["coords"] = (pos[order] * 200).astype(np.int64)
    patients = [i % n_patients for i in range(n_samples)]  # sample i belongs to patient i mod patients
    groups = [p % n_folds for p in patients]  # patients grouped into the published number of folds
    for fold in range(n_folds):
        for kind, keep in (("train", lambda g: g != fold), ("test", lambda g: g == fold)):
            rows = [f"{s},patches/{s}.h5,adata/{s}.h5ad" for s, g in zip(samples, groups) if keep(g)]
            (task / "splits" / f"{kind}_{fold}.csv").write_text("sample_id,patches_path,expr_path\n" + "\n".join(rows) + "\n")
    # the 50 evaluated genes: the most variable of the latent-driven ones (a stand-in for HEST's HVG rule)
    order = np.argsort(-np.abs(gene_w).sum(axis=0))
    (task / "var_50genes.json").write_text(json.dumps({"genes": [genes[i] for i in order[:50]]}))
    (task / "task.json").write_text(json.dumps({"name": name, "synthetic": True, "source": "bench_full_grid.py"}))
    return sum(sizes)


def make_world(work: Path, args: argparse.Namespace) -> tuple[Path, Path, int]:
    rng = np.random.default_rng(args.seed)
    data, embed_dir = work / "data", work / "hest-embeddings"
    gene_w = rng.normal(scale=0.35, size=(N_LATENT, N_GENES))
    enc_maps = {e: rng.normal(size=(N_LATENT, ENCODERS[e])) / np.sqrt(N_LATENT) for e in args.encoders}
    total = sum(_write_task(data, t, args.scale, rng, gene_w, enc_maps, embed_dir) for t in args.tasks)
    # gene programs for bpbooster-gp: 20 pathways of 40 synthetic genes each, SVGs among them
    lines = [f"SYN_PATHWAY_{k}\tsynthetic\t" + "\t".join(f"SG{i:03d}" for i in rng.choice(N_GENES, 40, replace=False))
             for k in range(20)]
    (work / "synthetic.gmt").write_text("\n".join(lines) + "\n")
    return data, embed_dir, total


# -- measuring a phase -------------------------------------------------------------------------------------------

def folder_mb(path: Path, pattern: str = "*") -> float:
    return round(sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file()) / 2**20, 1) if path.exists() else 0.0


def heaviest_first_load(site: Path) -> tuple[str, float]:
    """The page whose HTML plus the local files it references at open (scripts, styles, images; plotly.js
    excluded) weigh most, in MB."""
    best = ("", 0.0)
    for page in site.glob("*.html"):
        html = page.read_text(errors="replace")
        refs = set(re.findall(r'(?:src|href)="([^"#?]+)"', html))
        size = page.stat().st_size + sum((site / r).stat().st_size for r in refs
                                        if not r.endswith("plotly.min.js") and not r.endswith(".html")
                                        and not r.endswith(".csv") and (site / r).is_file())
        if size > best[1]:
            best = (page.name, size)
    return best[0], round(best[1] / 2**20, 2)


def cell_seconds(store: Path) -> list[dict]:
    """Each run's fit time (the sum of its folds' stored seconds) and wall time, from the catalog: what a cell
    costs by task, encoder size, reducer and alpha rule, for extrapolating to cells not run."""
    import duckdb

    with duckdb.connect(str(store / "catalog.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT r.task, r.encoder, r.reducer, r.alpha_rule, max(f.n_features), sum(f.n_train + f.n_test), "
            "round(sum(f.seconds), 2), round(epoch(max(r.finished_at) - min(r.started_at)), 2) "
            "FROM runs r JOIN fold_results f USING (run_id) GROUP BY ALL ORDER BY ALL").fetchall()
    keys = ("task", "encoder", "reducer", "alpha", "features", "spots_x_folds", "fold_seconds", "wall_s")
    return [dict(zip(keys, r)) for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.05, help="fraction of each sample's spots (1 = HEST's ~170,000)")
    ap.add_argument("--tasks", default="all")
    ap.add_argument("--encoders", default="all")
    ap.add_argument("--reducers", default="identity,pca,bpbooster-random,bpbooster-gp")
    ap.add_argument("--alpha", default="hest,cv")
    ap.add_argument("--epochs", type=int, default=2, help="BP-Booster epochs (the paper: 50)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed unless --keep)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-embeddings", action="store_true", help="build the site without the embedding view")
    ap.add_argument("--pca-variants", default="", metavar="K,K,...",
                    help="after the grid, one more run of every task x encoder x alpha with PCA of each size K: runs "
                         "that store what any reducer's run stores, to fill a store to the full grid's size cheaply "
                         "(--reducers pca --pca-variants 128,64,32 gives the 720 runs of 4 reducers)")
    ap.add_argument("--threads", type=int, help="torch/BLAS threads of every phase (STBENCH_THREADS; default: "
                                                 "the CPUs the process may use)")
    args = ap.parse_args()
    args.tasks = list(TASKS) if args.tasks == "all" else [t.upper() for t in args.tasks.split(",")]
    args.encoders = list(ENCODERS) if args.encoders == "all" else args.encoders.split(",")
    work = args.work or Path(tempfile.mkdtemp(prefix="stbench-full-grid-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = [sys.executable, "-m", "stbench.cli"]
    env = {**os.environ, "STBENCH_HOME": str(work / "home")}
    if args.threads:
        env.update(dict.fromkeys(("STBENCH_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"), str(args.threads)))
    row: dict = {"scale": args.scale, "tasks": args.tasks, "encoders": args.encoders, "reducers": args.reducers,
                 "alpha": args.alpha, "bpbooster_epochs": args.epochs, "threads": args.threads,
                 "pca_variant_sizes": args.pca_variants, "synthetic": True}
    try:
        t0 = time.perf_counter()
        data, embed_dir, n_spots = make_world(work, args)
        row["spots"], row["generate_s"] = n_spots, round(time.perf_counter() - t0, 1)
        store = work / "store"
        imports = [measure_tree([*bench, "embeddings", "import", "--task", t, "--encoder", f"syn-{e}", "--from",
                            str(embed_dir / t / e), "--data-root", str(data), "--store", str(store)], env=env)
                   for t in args.tasks for e in args.encoders]
        row["import"] = {"wall_s": round(sum(m["wall_s"] for m in imports), 1),
                         "cpu_s": round(sum(m["cpu_s"] for m in imports), 1),
                         "peak_mb": max(m["peak_mb"] for m in imports), "processes": len(imports)}
        reducers = args.reducers.split(",")
        opts = [f"--reducer-opt={r}.epochs={args.epochs}" for r in reducers if r.startswith("bpbooster")]
        opts += ["--gene-sets", str(work / "synthetic.gmt")] if "bpbooster-gp" in reducers else []
        grid = [*bench, "run", "--task", ",".join(args.tasks), "--encoder", ",".join(f"syn-{e}" for e in args.encoders),
                "--alpha", args.alpha, "--data-root", str(data), "--store", str(store), "--no-progress", "--device", "cpu"]
        run = measure_tree([*grid, "--reducer", args.reducers, *opts], env=env)
        cells = re.findall(r"\b(ok|cached|failed)\b", run.pop("output"))
        row["run"] = {**run, "cells_reported": len(cells), "cells": cell_seconds(store)}
        # stand-ins: more runs of the same shape (PCA sizes) for a store as big as the full grid's, cheaply
        row["pca_variants"] = {}
        for k in filter(None, args.pca_variants.split(",")):
            extra = measure_tree([*grid, "--reducer", "pca", f"--reducer-opt=pca.n_components={k}"], env=env)
            extra.pop("output")
            row["pca_variants"][k] = extra
        site = work / "site"
        build = [*bench, "leaderboard", "build", "--store", str(store), "--out", str(site), "--include-synthetic",
                 *(["--no-embeddings"] if args.no_embeddings else [])]
        built = measure_tree(build, env=env)
        built.pop("output")
        row["site"] = built
        results = measure_tree([*bench, "results", "--store", str(store), "--format", "csv"], env=env)
        results.pop("output")
        row["results"] = results
        page, weight = heaviest_first_load(site)
        row["sizes_mb"] = {"catalog": folder_mb(store, "catalog.duckdb*"), "predictions": folder_mb(store / "predictions"),
                           "embeddings": folder_mb(store / "embeddings"), "store": folder_mb(store),
                           "site": folder_mb(site), "heaviest_page": page, "heaviest_first_load": weight}
        for m in imports:
            m.pop("output", None)
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    row.update({"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()})
    path = append_result("full_grid", row)
    print(json.dumps(row, indent=1))
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
