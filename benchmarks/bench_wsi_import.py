"""Importing from a whole-slide TIFF: region reads (tifffile + zarr) against decoding the slide whole (PIL).

    python benchmarks/bench_wsi_import.py [--size 40000] [--spots 5000] [--um-per-px 0.25] [--scratch DIR] [--keep]

Writes a synthetic pyramidal BigTIFF of ``--size`` x ``--size`` RGB pixels with tifffile, tile by tile (JPEG
tiles of 256 px, four sub-resolutions; the pixels are never all in memory), then, each in a fresh process so
that its peak memory is its own (``ru_maxrss``):

- import: `bench data import table`'s code (`import_table`) cutting ``--spots`` 112 um patches from the slide,
  two samples of half the spots each on a 100 um grid, 60 genes given (no HEST gene rule), patch files
  written; patches are read region by region;
- whole decode (the baseline, the code before issue 15): `stbench.data.layout.open_image`, PIL decoding the
  full-resolution image whole (3 bytes a pixel), as every import did before cutting a patch;
- with ``--before DIR``, also the same import run by the code before issue 15, from DIR holding an importable
  ``stbench`` package of it (staged from git, e.g. ``git archive <commit> harness encoders reducers stores``
  unpacked and laid out as the package: harness/ as stbench/, the others inside it).

The slide is kept in the scratch folder with ``--keep`` (writing it takes minutes). Prints a JSON line and
appends it to benchmarks/out/wsi_import.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _results import append_result  # benchmarks/_results.py (run as python benchmarks/<file>.py)

TILE = 256
N_GENES = 60


def _tile_bank(n: int = 16) -> np.ndarray:
    """``n`` tissue-like (pink, nuclei, fibres) 256 px RGB tiles; the slide cycles through them."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:TILE, 0:TILE]
    bank = np.empty((n, TILE, TILE, 3), np.uint8)
    for k in range(n):
        img = np.array([225.0, 160.0, 200.0]) + rng.normal(0, 8, (TILE, TILE, 3))
        img[np.sin((xx * np.cos(k) + yy * np.sin(k)) / 3) > 0.6] *= 0.85  # fibres
        for _ in range(40):  # nuclei
            cy, cx, r = *rng.integers(0, TILE, 2), rng.integers(3, 7)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (80, 50, 120)
        bank[k] = np.clip(img, 0, 255).astype(np.uint8)
    return bank


def write_slide(path: Path, size: int) -> None:
    """A tiled, JPEG-compressed pyramidal BigTIFF, written one tile at a time."""
    import tifffile

    bank = _tile_bank()

    def tiles(side: int):  # noqa: ANN202
        n = -(-side // TILE)
        for ty in range(n):
            for tx in range(n):
                yield bank[(ty * 7 + tx * 3) % len(bank)]

    levels = [size // 2**i for i in range(5)]
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for i, side in enumerate(levels):
            tw.write(tiles(side), shape=(side, side, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb",
                     compression="jpeg", compressionargs={"level": 85},
                     **({"subifds": len(levels) - 1} if i == 0 else {"subfiletype": 1}))


def write_inputs(folder: Path, slide: Path, size: int, spots: int, um_per_px: float) -> dict:
    """Two samples' tables and counts: ``spots`` centres spread over a 100 um grid covering the slide."""
    import pandas as pd

    pitch = 100.0 / um_per_px
    n = int((size - pitch) // pitch)
    if n * n < spots:
        raise SystemExit(f"a {size} px slide at {um_per_px} um/px holds only {n * n} spots on a 100 um grid")
    grid = [divmod(int(k), n) for k in np.linspace(0, n * n - 1, spots)]  # rows top to bottom, as spots are listed
    rng = np.random.default_rng(1)
    out = {}
    for sid, part in (("A", grid[: spots // 2]), ("B", grid[spots // 2 :])):
        ids = [f"{sid}_{i}_{j}" for i, j in part]
        xy = (np.array(part, float)[:, ::-1] + 1) * pitch
        pd.DataFrame({"id": ids, "x": xy[:, 0], "y": xy[:, 1]}).to_csv(folder / f"{sid}.csv", index=False)
        counts = pd.DataFrame(rng.poisson(4, (len(ids), N_GENES)), columns=[f"G{g}" for g in range(N_GENES)])
        counts.insert(0, "id", ids)
        counts.to_csv(folder / f"{sid}_counts.csv", index=False)
        out[sid] = {"table": folder / f"{sid}.csv", "counts": folder / f"{sid}_counts.csv", "image": slide}
    return out


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_import(folder: str, slide: str, size: str, spots: str, um_per_px: str) -> None:
    from stbench.data.table import import_table

    files = write_inputs(Path(folder), Path(slide), int(size), int(spots), float(um_per_px))
    before = _rss_mb()
    t0 = time.perf_counter()
    import_table({s: f["table"] for s, f in files.items()}, {s: f["image"] for s, f in files.items()},
                 {s: f["counts"] for s, f in files.items()}, Path(folder) / "root", "WSI",
                 pixel_size=float(um_per_px), genes=[f"G{g}" for g in range(50)], overwrite=True)
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 1), "rss_before_mb": round(before),
                      "rss_peak_mb": round(_rss_mb())}))


def child_decode(slide: str) -> None:
    from stbench.data.layout import open_image

    before = _rss_mb()
    t0 = time.perf_counter()
    try:
        image = open_image(Path(slide))
        shape, error = list(image.size), None
    except Exception as exc:  # noqa: BLE001 - the baseline may be unable to decode it: say how
        shape, error = None, f"{type(exc).__name__}: {exc}"
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 1), "rss_before_mb": round(before),
                      "rss_peak_mb": round(_rss_mb()), "size": shape, "error": error}))


def _child(*args: str, pythonpath: Path | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)} if pythonpath else None
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False,
                          env=env)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: {' | '.join(tail)}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=40_000, help="slide side in pixels")
    ap.add_argument("--spots", type=int, default=5000)
    ap.add_argument("--um-per-px", type=float, default=0.25, help="the slide's pixel size (0.25: a 40x scan)")
    ap.add_argument("--scratch", type=Path, default=None,
                    help="folder for the slide and the task [default: a temp folder]")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (the slide) for the next run")
    ap.add_argument("--before", type=Path, default=None, help="a folder holding the pre-issue-15 stbench package")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        {"import": child_import, "decode": child_decode}[args.child[0]](*args.child[1:])
        return

    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="stbench-bench-wsi-"))
    scratch.mkdir(parents=True, exist_ok=True)
    slide = scratch / f"slide_{args.size}.tif"
    try:
        write_s = None
        if not slide.exists():
            t0 = time.perf_counter()
            write_slide(slide, args.size)
            write_s = round(time.perf_counter() - t0, 1)
        slide_mb = round(slide.stat().st_size / 1e6)
        load = os.getloadavg()[0]
        imported = _child("import", str(scratch), str(slide), str(args.size), str(args.spots), str(args.um_per_px))
        decoded = _child("decode", str(slide))
        before = None
        if args.before:
            before = _child("import", str(scratch), str(slide), str(args.size), str(args.spots), str(args.um_per_px),
                            pythonpath=args.before.resolve())
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    row = {"bench": "wsi_import", "size_px": args.size, "spots": args.spots, "um_per_px": args.um_per_px,
           "patch_px": round(112 / args.um_per_px), "slide_mb": slide_mb, "write_slide_s": write_s,
           "rgb_whole_mb": round(args.size**2 * 3 / 2**20),
           "import": imported, "whole_decode": decoded, **({"import_before_issue_15": before} if before else {}),
           "cpus": os.cpu_count(), "python": platform.python_version(), "load_before": round(load, 2),
           "load_after": round(os.getloadavg()[0], 2), "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(row))
    append_result("wsi_import", row)


if __name__ == "__main__":
    main()
