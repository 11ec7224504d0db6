"""The extraction side of the full HEST grid on one GPU: the nine encoders' real architectures, random weights.

    python benchmarks/gpu_full_grid.py [--patches 8192] [--seconds 600] [--encoders all] [--device cuda]

Unattended, within ``--seconds`` (default 10 minutes, the run stops measuring new encoders before then):
1. writes a patch file in HEST-Benchmark's layout (``img`` (N, 224, 224, 3) uint8 in 128-patch chunks,
   barcodes, coords) of ``--patches`` synthetic patches (smooth colour fields plus noise: speed does not depend
   on the pixels);
2. measures the GPU's peak matmul rate in fp16 and in fp32 (best of large square matmuls);
3. for each of the nine encoders (their architectures from stbench's own specs and loaders, with random
   weights: speed does not depend on the values), embeds the patch file through stbench's real extraction
   (`write_sample_embeddings`: the HDF5 reader thread, uint8 to the device, resize/normalise there, autocast in
   the encoder's precision, the probed batch size) and reports patches/s, FLOPs per patch
   (torch.utils.flop_counter), the achieved TFLOP/s and its share of the peak in the encoder's precision, and
   the time the full grid's ~170,000 patches would take at that rate.
Prints one JSON line per encoder and appends them to benchmarks/out/gpu_full_grid.jsonl. Runs on CPU too
(``--device cpu``, tiny ``--patches``) to check the plumbing; the figures that matter need CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_result  # noqa: E402 - benchmarks/_results.py

NINE = ("resnet50", "ctranspath", "phikon", "conch", "gigapath", "uni", "virchow", "virchow2", "hoptimus0")
HEST_PATCHES = 170_000  # the ten HEST-Benchmark tasks (/work/shared/specs/hest-protocol.md)


def write_patches(path: Path, n: int, seed: int = 0) -> None:
    import h5py

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as h5:
        img = h5.create_dataset("img", shape=(n, 224, 224, 3), dtype=np.uint8, chunks=(min(128, n), 224, 224, 3))
        for start in range(0, n, 128):
            m = min(128, n - start)
            colour = rng.uniform(0, 200, size=(m, 1, 1, 3))
            img[start:start + m] = (colour + rng.uniform(0, 55, size=(m, 224, 224, 3))).astype(np.uint8)
        h5.create_dataset("barcode", data=np.array([f"b{i}" for i in range(n)], dtype="S").reshape(-1, 1))
        h5.create_dataset("coords", data=np.stack([np.arange(n), np.zeros(n)], axis=1).astype(np.int64) * 224)


def peak_tflops(dtype: str, device: str, n: int = 8192, repeats: int = 10) -> float:
    import torch

    if not device.startswith("cuda"):
        n, repeats = 1024, 3
    a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
    best = 0.0
    for i in range(repeats + 2):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 2:
            best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best / 1e12


def random_model(name: str):  # noqa: ANN201
    """The encoder's architecture with random weights, as stbench would load it."""
    from stbench.encoders import LoadedEncoder, get_encoder

    encoder = get_encoder(name)
    if encoder.spec.random_init:
        return encoder.load("random:0")
    if name == "phikon":
        from stbench.encoders.phikon import build_phikon

        model = build_phikon()
    elif name == "conch":
        from stbench.encoders.conch import build_conch

        model = build_conch()
    else:
        raise SystemExit(f"{name}: no random-weight build")
    return LoadedEncoder(encoder.spec, model.eval().float(), f"random-architecture:{name}", None, "benchmark")


def flops_per_patch(loaded, device: str) -> float:  # noqa: ANN001
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    size = loaded.spec.input_size
    x = torch.randn(2, 3, size, size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        loaded.model(x)
    return counter.get_total_flops() / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patches", type=int, default=8192)
    ap.add_argument("--seconds", type=float, default=600, help="stop starting encoders before this much wall time")
    ap.add_argument("--encoders", default="all")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    start = time.perf_counter()
    import torch

    from stbench.extract import prepare_pipeline, write_sample_embeddings
    from stbench.tasks import Sample

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: pass --device cpu to check the plumbing")
    names = NINE if args.encoders == "all" else tuple(args.encoders.split(","))
    work = Path(tempfile.mkdtemp(prefix="stbench-gpu-grid-"))
    patches = work / "patches.h5"
    write_patches(patches, args.patches)
    peaks = {"fp16": peak_tflops("float16", args.device) if args.device.startswith("cuda") else float("nan"),
             "fp32": peak_tflops("float32", args.device)}
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(json.dumps({"gpu": gpu, "peak_tflops": peaks, "patches": args.patches}), flush=True)
    total = 0.0
    for name in names:
        elapsed = time.perf_counter() - start
        if elapsed > args.seconds * 0.85:
            print(json.dumps({"encoder": name, "skipped": f"time budget ({elapsed:.0f} s used)"}), flush=True)
            continue
        t_load = time.perf_counter()
        loaded = random_model(name)
        load_s = time.perf_counter() - t_load
        pipe = prepare_pipeline(loaded, device=args.device)
        flops = flops_per_patch(loaded, args.device)
        pipe(np.zeros((min(pipe.forward_batch, 8), 224, 224, 3), np.uint8))  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        write_sample_embeddings(pipe, Sample("bench", patches, patches), work / f"{name}.h5", task="BENCH")
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        rate = args.patches / (time.perf_counter() - t0)
        precision = loaded.spec.precision if args.device.startswith("cuda") else "fp32"
        peak = peaks["fp16" if precision in ("fp16", "bf16") else "fp32"]
        achieved = flops * rate / 1e12
        total += HEST_PATCHES / rate
        row = {"encoder": name, "gpu": gpu, "precision": precision, "patches": args.patches,
               "forward_batch": pipe.forward_batch, "load_s": round(load_s, 1), "patches_per_s": round(rate, 1),
               "gflops_per_patch": round(flops / 1e9, 2), "achieved_tflops": round(achieved, 2),
               "share_of_peak": round(achieved / peak, 3) if peak == peak else None,
               "full_grid_extraction_min": round(HEST_PATCHES / rate / 60, 1)}
        print(json.dumps(row), flush=True)
        append_result("gpu_full_grid", {**row, "date": time.strftime("%Y-%m-%d")})
        (work / f"{name}.h5").unlink(missing_ok=True)
        del loaded, pipe
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    print(json.dumps({"all_nine_full_grid_extraction_min": round(total / 60, 1),
                      "wall_s": round(time.perf_counter() - start, 1)}), flush=True)
    patches.unlink(missing_ok=True)
    os.rmdir(work) if not any(work.iterdir()) else None


if __name__ == "__main__":
    main()
