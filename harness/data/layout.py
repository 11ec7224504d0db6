"""Writing a task in the HEST-Benchmark layout, all or nothing.

Every importer (her2st, the synthetic demo, later Visium and tables) writes through `TaskWriter`: files go
to a hidden temporary folder next to the destination (`stbench.tempfiles`) and appear under the task's name
only when `TaskWriter.commit` renames it, so an interrupted import never leaves a half-written task behind; the
next import into the data root removes what a killed one left.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stbench.errors import DataError, StbenchError
from stbench.tasks import GENES_FILE, TASK_META
from stbench.tempfiles import clean_stale, temp_path

if TYPE_CHECKING:
    from anndata import AnnData
    from PIL import Image as PILImage

    from stbench.data.slide import Slide

__all__ = [
    "TaskWriter", "leave_one_group_out", "kfold_groups", "PATCH_UM", "PATCH_PX", "TARGET_UM_PER_PX",
    "patch_boxes", "open_image", "image_size", "cut_patch", "iter_patches", "background_mask", "progress", "check_name",
]

PATCH_UM = 112.0  # HEST's field of view per patch
PATCH_PX = 224
TARGET_UM_PER_PX = PATCH_UM / PATCH_PX  # 0.5
_CHUNK = 64  # patches per write: bounds memory to ~10 MB of uint8
# Whole-slide H&E exports reach ~25k x 25k px; PIL's bomb guard (89 Mpx) would refuse every one of them.
_MAX_PIXELS = 2_000_000_000


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def check_name(kind: str, name: str) -> str:
    """Task and sample names become file names: letters, digits, ``_ . -`` (so never a path out of the data root)."""
    if not _NAME.fullmatch(name):
        raise StbenchError(f"{kind} name {name!r} must be letters, digits, '_', '.' or '-' (it becomes a file name)")
    return name


def patch_boxes(centres: np.ndarray, um_per_px: float) -> tuple[int, np.ndarray]:
    """Side in image pixels of a `PATCH_UM` patch and each centre's crop top-left corner (ints, may be < 0)."""
    side = max(1, int(round(PATCH_UM / um_per_px)))
    return side, np.rint(np.asarray(centres, dtype=float).reshape(-1, 2) - side / 2).astype(np.int64)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only; a file neither tifffile nor PIL can identify is a one-line `DataError`."""
    from PIL import Image

    from stbench.data.slide import TiffSlide, is_tiff

    if is_tiff(path):
        with TiffSlide(path) as slide:
            return slide.size
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = _MAX_PIXELS
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, Image.DecompressionBombError) as exc:
        raise DataError(path, f"cannot read image ({exc}); give a TIFF, JPEG or PNG") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def open_image(path: Path) -> PILImage.Image:
    """Decode the whole image once, as RGB; crops then come from memory. A blank image is an error."""
    from PIL import Image

    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = _MAX_PIXELS  # only for this open, not for the rest of the process
    try:
        image = Image.open(path)
        image.load()
    except (OSError, Image.DecompressionBombError) as exc:
        raise DataError(path, f"cannot read image ({exc})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    if image.mode != "RGB":  # convert() copies the whole image, so only when needed
        rgb = image.convert("RGB")
        image.close()
        image = rgb
    # A blank image (e.g. spaceranger's all-zero hires placeholder) would pass every other check; the
    # check runs on a 16x reduced copy, as a whole-slide image holds hundreds of Mpx.
    if all(lo == hi for lo, hi in image.reduce(16 if min(image.size) >= 1600 else 1).getextrema()):
        image.close()
        raise DataError(path, "image is blank (one colour everywhere)")
    return image


def cut_patch(image: PILImage.Image | Slide, x0: int, y0: int, side: int) -> np.ndarray:
    """One (224, 224, 3) uint8 patch from a decoded image or a `Slide`; where the box leaves the image the
    patch is white, not PIL's black."""
    from PIL import Image

    from stbench.data.slide import PilSlide, Slide

    slide = image if isinstance(image, Slide) else PilSlide(Path(), image)
    crop = Image.fromarray(slide.region(x0, y0, side, side))
    # Bilinear: patches are mostly upscaled (e.g. ~163 -> 224 px); box/area filtering only matters when shrinking.
    return np.asarray(crop.resize((PATCH_PX, PATCH_PX), Image.BILINEAR), dtype=np.uint8)


def background_mask(patches: np.ndarray, *, brightness: float = 220.0, saturation: float = 0.1) -> np.ndarray:
    """True for patches that are mostly glass: bright (mean grey > ``brightness``) and unsaturated.

    Saturation is HSV's (max - min) / max, averaged over the patch; stained tissue is pink/purple, so even pale
    tissue is more saturated than the slide background.
    """
    # Every 4th pixel each way: the verdict is a patch average, and the full patch costs 16x more.
    x = np.asarray(patches)[:, ::4, ::4].astype(np.float32).reshape(len(patches), -1, 3)
    hi, lo = x.max(axis=-1), x.min(axis=-1)
    sat = np.where(hi > 0, (hi - lo) / np.maximum(hi, 1e-6), 0.0).mean(axis=1)
    return (x.mean(axis=(1, 2)) > brightness) & (sat < saturation)


def iter_patches(
    image_path: Path, corners: np.ndarray, side: int, advance: Callable[[int], None] = lambda n: None,
    background: list[int] | None = None,
) -> Iterator[np.ndarray]:
    """Patches at ``corners`` in order, in uint8 chunks; ``background`` (if given) collects their background count.
    A TIFF is read region by region (`stbench.data.slide`): memory holds one chunk of patches, not the slide."""
    from stbench.data.slide import open_slide

    image = open_slide(image_path)
    try:
        for start in range(0, len(corners), _CHUNK):
            block = np.stack([cut_patch(image, int(x), int(y), side) for x, y in corners[start : start + _CHUNK]])
            if background is not None:
                background.append(int(background_mask(block).sum()))
            advance(len(block))
            yield block
    finally:
        image.close()


@contextmanager
def progress(enabled: bool, total: int, label: str) -> Iterator[Callable[[str, int], None]]:
    """Yields ``step(sample, n)``: a rich bar over patches on stderr when enabled, a no-op otherwise."""
    if not enabled:
        yield lambda sample, n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(f"{label} {{task.description}}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    ) as bar:
        task = bar.add_task("", total=total)
        yield lambda sample, n: bar.update(task, advance=n, description=sample)


def kfold_groups(groups: dict[str, str], k: int) -> list[tuple[list[str], list[str]]]:
    """``k`` folds over the sorted group names, dealt round-robin; a group's samples stay in one test fold."""
    names = sorted(set(groups.values()))
    if not 2 <= k <= len(names):
        raise DataError(None, f"kfold:{k} needs between 2 and {len(names)} folds here ({len(names)} groups: {names})")
    folds = []
    for i in range(k):
        held = set(names[i::k])
        folds.append((sorted(s for s, g in groups.items() if g not in held),
                      sorted(s for s, g in groups.items() if g in held)))
    return folds


def leave_one_group_out(groups: dict[str, str]) -> list[tuple[list[str], list[str]]]:
    """Folds holding out one group (patient or section) each: ``[(train_ids, test_ids), ...]``.

    ``groups`` maps sample id -> group; folds follow the sorted group names, samples their sorted ids.
    """
    names = sorted(set(groups.values()))
    if len(names) < 2:
        raise DataError(None, f"a leave-one-out split needs at least two groups, found {names}")
    folds = []
    for g in names:
        test = sorted(s for s, sg in groups.items() if sg == g)
        train = sorted(s for s, sg in groups.items() if sg != g)
        folds.append((train, test))
    return folds


class TaskWriter:
    """Build ``<root>/<name>/`` (patches, adata, splits, gene list, task.json) in a temporary folder.

    Use as a context manager: on an exception the temporary folder is removed and nothing appears.
    """

    def __init__(self, root: Path, name: str, *, overwrite: bool = False) -> None:
        self.root = Path(root)
        self.name = check_name("task", name)  # every importer writes here: no name reaches outside the root
        self.dest = self.root / name
        clean_stale(self.root)  # first: it may put back a task that a killed overwrite had moved aside
        if self.dest.exists() and not overwrite:
            raise StbenchError(f"{self.dest} already exists; pass --overwrite to replace it")
        self.overwrite = overwrite
        self.tmp = temp_path(self.dest)
        self.samples: list[str] = []

    def __enter__(self) -> TaskWriter:
        (self.tmp / "patches").mkdir(parents=True)
        (self.tmp / "adata").mkdir()
        (self.tmp / "splits").mkdir()
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self.tmp.exists():  # not committed: an error, or the caller forgot commit()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def add_sample(
        self,
        sample_id: str,
        *,
        patches: Iterable[np.ndarray],
        n_patches: int,
        barcodes: Sequence[str],
        coords: np.ndarray,
        counts: AnnData,
        patch_size: int = 224,
        attrs: dict | None = None,
    ) -> None:
        """Write one sample: ``patches`` yields uint8 arrays (k, size, size, 3) in barcode order.

        ``counts`` holds raw counts with obs_names equal to ``barcodes`` (same order is not required).
        """
        import h5py

        check_name("sample", sample_id)
        if len(barcodes) != n_patches or len(coords) != n_patches:
            raise ValueError(f"{sample_id}: {n_patches} patches, {len(barcodes)} barcodes, {len(coords)} coords")
        if len(set(barcodes)) != len(barcodes):
            raise DataError(None, f"{sample_id}: duplicate barcodes")
        missing = set(barcodes) - set(counts.obs_names)
        if missing:
            raise DataError(None, f"{sample_id}: {len(missing)} barcodes have no count row")
        path = self.tmp / "patches" / f"{sample_id}.h5"
        with h5py.File(path, "w") as h5:
            img = h5.create_dataset(
                "img", shape=(n_patches, patch_size, patch_size, 3), dtype=np.uint8,
                chunks=(min(64, n_patches), patch_size, patch_size, 3),
            )
            written = 0
            for block in patches:
                img[written : written + len(block)] = block
                written += len(block)
            if written != n_patches:
                raise ValueError(f"{sample_id}: expected {n_patches} patches, got {written}")
            h5.create_dataset("barcode", data=np.asarray(barcodes, dtype=object).reshape(-1, 1),
                              dtype=h5py.string_dtype("utf-8"))
            h5.create_dataset("coords", data=np.asarray(coords, dtype=np.int64).reshape(-1, 2))
            for k, v in (attrs or {}).items():
                h5.attrs[k] = v
        counts.write_h5ad(self.tmp / "adata" / f"{sample_id}.h5ad")
        self.samples.append(sample_id)

    def commit(self, folds: Sequence[tuple[Sequence[str], Sequence[str]]], genes: Sequence[str], meta: dict) -> Path:
        """Write splits, the gene list and task.json, then move the folder into place."""
        unknown = {s for tr, te in folds for s in (*tr, *te)} - set(self.samples)
        if unknown:
            raise ValueError(f"splits name samples that were not written: {sorted(unknown)}")
        for i, (train, test) in enumerate(folds):
            for kind, ids in (("train", train), ("test", test)):
                with (self.tmp / "splits" / f"{kind}_{i}.csv").open("w", newline="") as fh:
                    w = csv.writer(fh)
                    w.writerow(["sample_id", "patches_path", "expr_path"])
                    for sid in ids:
                        w.writerow([sid, f"patches/{sid}.h5", f"adata/{sid}.h5ad"])
        (self.tmp / GENES_FILE).write_text(json.dumps({"genes": list(genes)}, indent=1))
        (self.tmp / TASK_META).write_text(json.dumps({"name": self.name, **meta}, indent=1))
        if self.dest.exists():
            old = temp_path(self.dest, "old")
            self.dest.rename(old)
            self.tmp.rename(self.dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.tmp.rename(self.dest)
        return self.dest
