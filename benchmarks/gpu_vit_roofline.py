"""GPU throughput of large ViT encoders in fp16, as a share of the GPU's measured peak matmul rate.

    python benchmarks/gpu_vit_roofline.py [--patches 4096] [--models uni,hoptimus0] [--compile]

For UNI-size (ViT-L/16) and H-optimus-0-size (ViT-g/14, 4 register tokens) models with random weights
(speed does not depend on the values), on synthetic uint8 patches:
- the reference loop (per-image PIL + torchvision transforms, chunks of 128 through a DataLoader, as HEST);
- stbench's `Pipeline` (uint8 to the device, resize/normalise there, autocast fp16, probed batch size);
- FLOPs per patch counted with torch.utils.flop_counter, so achieved FLOP/s = FLOPs x patches/s;
- the peak: the best of a few large fp16 matmuls measured in the same run.
Prints one JSON line per model; appends them to benchmarks/out/gpu_vit.jsonl. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ARCHS = {
    "uni": ("vit_large_patch16_224", {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0,
                                      "dynamic_img_size": True}),
    "hoptimus0": ("vit_giant_patch14_reg4_dinov2", {"img_size": 224, "init_values": 1e-5, "num_classes": 0,
                                                     "global_pool": "token"}),
}


def peak_matmul_tflops(n: int = 8192, repeats: int = 20) -> float:
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.float16)
    b = torch.randn(n, n, device="cuda", dtype=torch.float16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        torch.cuda.synchronize()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best / 1e12


def flops_per_patch(model, size: int) -> float:  # noqa: ANN001
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(8, 3, size, size, device="cuda", dtype=torch.float16)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patches", type=int, default=4096)
    ap.add_argument("--models", default="uni,hoptimus0")
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()

    import timm
    import torch
    from PIL import Image
    from torchvision import transforms

    from stbench.encoders import LoadedEncoder, get_encoder
    from stbench.extract import prepare_pipeline

    rng = np.random.default_rng(0)
    patches = rng.integers(0, 255, size=(args.patches, 224, 224, 3), dtype=np.uint8)
    peak = peak_matmul_tflops()
    out = Path(__file__).with_name("out")
    out.mkdir(exist_ok=True)
    for name in args.models.split(","):
        arch, kwargs = ARCHS[name]
        spec = get_encoder(name).spec
        model = timm.create_model(arch, pretrained=False, **kwargs).eval()
        flops = flops_per_patch(model.half().cuda(), spec.input_size)
        model.float()

        # Reference: per-image PIL + torchvision, chunks of 128, fp16 autocast.
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])
        ref = model.cuda()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
            for i in range(0, len(patches), 128):
                x = torch.stack([tf(Image.fromarray(p)) for p in patches[i : i + 128]]).cuda()
                ref(x).float().cpu()
        torch.cuda.synchronize()
        ref_rate = len(patches) / (time.perf_counter() - t0)

        loaded = LoadedEncoder(spec, model, "random", None)
        pipe = prepare_pipeline(loaded, device="cuda", compile=args.compile)
        pipe(patches[: pipe.forward_batch])  # warm-up (and compile)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, len(patches), pipe.read_batch):
            pipe(patches[i : i + pipe.read_batch])
        torch.cuda.synchronize()
        ours_rate = len(patches) / (time.perf_counter() - t0)
        row = {
            "bench": "gpu_vit", "model": name, "arch": arch, "gpu": torch.cuda.get_device_name(),
            "patches": len(patches), "gflops_per_patch": round(flops / 1e9, 2), "peak_fp16_tflops": round(peak, 1),
            "reference_patches_per_s": round(ref_rate, 1), "ours_patches_per_s": round(ours_rate, 1),
            "speedup": round(ours_rate / ref_rate, 2), "forward_batch": pipe.forward_batch,
            "achieved_tflops": round(flops * ours_rate / 1e12, 1),
            "share_of_peak": round(flops * ours_rate / 1e12 / peak, 3), "compile": args.compile,
            "date": time.strftime("%Y-%m-%d"),
        }
        print(json.dumps(row), flush=True)
        with (out / "gpu_vit.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        del model, ref, loaded, pipe
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
