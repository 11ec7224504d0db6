"""Extraction throughput: stbench's pipeline vs a reference loop written the way the HEST code does it.

    python benchmarks/bench_extract_speed.py --her2st ../shared/data/her2st [--encoders efficientnet-lite0,resnet50]
        [--device cpu] [--repeats 1]

Both run the same encoder weights on the same patches (all 1193 real HER2+ spots, imported once into one
sample). Reference: a torch Dataset yielding chunks of 128 patches from the HDF5 file, each patch turned
into a PIL image and through torchvision ``ToTensor`` + ``Normalize``, a DataLoader (batch_size=1, one
worker, as HEST's ``embed_tiles``), model in NCHW under ``inference_mode`` (autocast on CUDA).
Ours: `stbench.extract.extract_sample` into a scratch store (so ours also pays for writing HDF5).
Encoders without local weights (resnet50 here) get random weights through ``--weights``: speed does not
depend on the values. Prints patches/s of each and the ratio; appends JSON lines to
benchmarks/out/extract_speed.jsonl.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def one_sample_task(her2st: Path, root: Path) -> str:
    """All real her2st patches as one sample of a task SPEED (counts are placeholders: speed only)."""
    import anndata as ad
    import h5py
    import scipy.sparse as sp

    from stbench.data.her2st import import_her2st
    from stbench.data.layout import TaskWriter
    from stbench.tasks import open_task

    import_her2st(her2st, root, progress=False)
    task = open_task("HER2ST", root)
    imgs = []
    for s in task.samples.values():
        with h5py.File(s.patches, "r") as h5:
            imgs.append(h5["img"][()])
    imgs = np.concatenate(imgs)
    n = len(imgs)
    barcodes = [f"p{i}" for i in range(n)]
    counts = ad.AnnData(sp.csr_matrix((n, 60), dtype=np.float32))
    counts.obs_names, counts.var_names = barcodes, [f"G{i}" for i in range(60)]
    one = counts[:1].copy()
    one.obs_names = ["x"]
    with TaskWriter(root, "SPEED") as w:
        w.add_sample("ALL", patches=[imgs], n_patches=n, barcodes=barcodes, coords=np.zeros((n, 2)), counts=counts)
        w.add_sample("X", patches=[imgs[:1]], n_patches=1, barcodes=["x"], coords=np.zeros((1, 2)), counts=one)
        w.commit([(["X"], ["ALL"])], [f"G{i}" for i in range(50)], {"synthetic": False, "source": "her2st patches"})
    return "SPEED"


def reference_loop(loaded, patches: Path, *, device: str, chunk: int = 128, workers: int = 1) -> tuple[int, float]:  # noqa: ANN001
    """HEST-style: per-image PIL + torchvision transforms, chunks of 128 through a DataLoader."""
    import h5py
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    spec = loaded.spec
    tf = transforms.Compose([transforms.Resize(spec.input_size) if spec.input_size != 224 else transforms.Lambda(lambda x: x),
                             transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])

    class Chunks(Dataset):
        def __init__(self) -> None:
            with h5py.File(patches, "r") as h5:
                self.n = len(h5["img"])

        def __len__(self) -> int:
            return (self.n + chunk - 1) // chunk

        def __getitem__(self, i: int) -> torch.Tensor:
            with h5py.File(patches, "r") as h5:
                imgs = h5["img"][i * chunk : (i + 1) * chunk]
            return torch.stack([tf(Image.fromarray(img)) for img in imgs])

    model = loaded.model.to(device)
    n = 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for batch in DataLoader(Chunks(), batch_size=1, num_workers=workers):
            x = batch[0].to(device)
            with torch.autocast("cuda", dtype=torch.float16, enabled=device.startswith("cuda") and spec.precision == "fp16"):
                out = model(x)
            out.float().cpu().numpy()
            n += len(x)
    return n, time.perf_counter() - t0


def random_weights(name: str, tmp: Path) -> str | None:
    """A weight file of random values for encoders with no weights on this machine."""
    import torch

    from stbench.encoders import get_encoder

    enc = get_encoder(name)
    if enc.available():
        return None
    import timm

    arch = {"resnet50": "resnet50"}.get(name)
    if arch is None:
        raise SystemExit(f"no weights for {name} here and no random-weight recipe in this benchmark")
    path = tmp / f"{name}-random.pth"
    torch.save(timm.create_model(arch, pretrained=False).state_dict(), path)
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--her2st", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "her2st")
    ap.add_argument("--encoders", default="efficientnet-lite0,resnet50")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reference-workers", type=int, default=1, help="DataLoader workers of the reference loop")
    args = ap.parse_args()

    import torch

    from stbench.encoders import get_encoder
    from stbench.extract import extract_sample, prepare_pipeline
    from stbench.stores import Store
    from stbench.tasks import open_task

    out_dir = Path(__file__).with_name("out")
    out_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        task = open_task(one_sample_task(args.her2st, tmp / "data"), tmp / "data")
        sample = task.samples["ALL"]
        for name in args.encoders.split(","):
            weights = random_weights(name, tmp)
            enc = get_encoder(name)
            ref_n, ref_s = reference_loop(enc.load(weights), sample.patches, device=args.device,
                                          workers=args.reference_workers)
            pipeline = prepare_pipeline(enc.load(weights), device=args.device)
            t0 = time.perf_counter()
            with Store(tmp / f"store-{name}") as st:
                extract_sample(pipeline, sample, st, task=task.name)
            ours_s = time.perf_counter() - t0
            row = {
                "bench": "extract_speed", "encoder": name, "weights": "random" if weights else "real",
                "device": args.device, "patches": ref_n, "reference_workers": args.reference_workers, "reference_patches_per_s": round(ref_n / ref_s, 1),
                "ours_patches_per_s": round(ref_n / ours_s, 1), "speedup": round(ref_s / ours_s, 2),
                "ours_forward_batch": pipeline.forward_batch, "torch_threads": torch.get_num_threads(),
                "date": time.strftime("%Y-%m-%d"),
            }
            print(json.dumps(row), flush=True)
            with (out_dir / "extract_speed.jsonl").open("a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
