"""Peak resident memory while extracting embeddings: bounded by the chunk size, not the sample size.

    python benchmarks/bench_extract_memory.py [--sizes 5000 20000] [--batch-size 128] [--encoder efficientnet-lite0]

For each size, writes a synthetic HEST-layout sample of that many 224x224 patches (random tissue-like
noise; the content does not matter for memory), then extracts it in a fresh subprocess and reports that
process's peak RSS before extraction (imports + model) and after (ru_maxrss), and patches/s. A pipeline
that loaded the sample at once would need N x 150 KB (3 GB for 20000 patches) more. Writes JSON lines to
benchmarks/out/extract_memory.jsonl.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_sample(root: Path, n: int) -> Path:
    import anndata as ad
    import scipy.sparse as sp

    from stbench.data.layout import TaskWriter

    rng = np.random.default_rng(0)
    base = rng.integers(120, 255, size=(64, 224, 224, 3), dtype=np.uint8)

    def chunks():
        for i in range(0, n, 64):
            yield np.roll(base, i % 7, axis=1)[: min(64, n - i)]

    barcodes = [f"s{i}" for i in range(n)]
    counts = ad.AnnData(sp.csr_matrix(rng.poisson(1, size=(n, 60)).astype(np.float32)))
    counts.obs_names, counts.var_names = barcodes, [f"G{i}" for i in range(60)]
    one = counts[:1].copy()
    one.obs_names = ["x"]
    with TaskWriter(root, f"MEM{n}") as w:
        w.add_sample("A", patches=chunks(), n_patches=n, barcodes=barcodes, coords=np.zeros((n, 2)), counts=counts)
        w.add_sample("B", patches=[base[:1]], n_patches=1, barcodes=["x"], coords=np.zeros((1, 2)), counts=one)
        w.commit([(["B"], ["A"])], [f"G{i}" for i in range(50)], {"synthetic": True, "source": "memory benchmark"})
    return root


def child(root: str, task: str, store: str, encoder: str, batch_size: int) -> None:
    from stbench.encoders import get_encoder
    from stbench.extract import ensure_embeddings
    from stbench.stores import Store
    from stbench.tasks import open_task

    enc = get_encoder(encoder)
    enc.load()  # imports and model weights count in the baseline, not in the extraction
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = open_task(task, Path(root))
    t0 = time.perf_counter()
    with Store(Path(store)) as st:
        ensure_embeddings(t, enc, st, sample_ids=["A"], batch_size=batch_size, device="cpu")
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rss_before_mb": round(before, 1), "rss_peak_mb": round(peak, 1), "seconds": round(secs, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--encoder", default="efficientnet-lite0")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        root, task, store, encoder, bs = args.child
        child(root, task, store, encoder, int(bs))
        return
    out_dir = Path(__file__).with_name("out")
    out_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            root = Path(tmp) / "data"
            root.mkdir(exist_ok=True)
            write_sample(root, n)
            res = subprocess.run([sys.executable, __file__, "--child", str(root), f"MEM{n}", str(Path(tmp) / f"store{n}"),
                                  args.encoder, str(args.batch_size)], capture_output=True, text=True, check=True)
            row = {"bench": "extract_memory", "patches": n, "batch_size": args.batch_size, "encoder": args.encoder,
                   **json.loads(res.stdout.strip().splitlines()[-1]), "date": time.strftime("%Y-%m-%d")}
            row["extract_delta_mb"] = round(row["rss_peak_mb"] - row["rss_before_mb"], 1)
            row["patches_per_s"] = round(n / row["seconds"], 1)
            row["whole_sample_would_need_mb"] = round(n * 224 * 224 * 3 / 2**20, 1)
            print(json.dumps(row), flush=True)
            with (out_dir / "extract_memory.jsonl").open("a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
