"""Import the HER2+ breast-cancer sections of Andersson et al. 2021 (almaan/her2st) as a HEST-layout task.

Source layout (as in the almaan/her2st repository)::

    data/ST-cnts/<section>.tsv.gz             raw counts, spots x genes, rows named "<x>x<y>"
    data/ST-spotfiles/<section>_selection.tsv x, y, pixel_x, pixel_y, selected, ...
    data/ST-imgs/<patient>/<section>/*.jpg    full-resolution H&E

The images carry no usable scale (EXIF says 72 dpi), so the scale is fitted per section from the spot grid:
legacy ST spots sit on a 200 um centre-to-centre grid. Each spot becomes one patch covering 112 um,
resampled to 224 x 224 px (0.5 um/px) like HEST's patches. The resampling is an upscale (~163 -> 224 px),
so PIL's bilinear filter is used; box/area filtering only matters when shrinking.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import stbench
from stbench.data.layout import TaskWriter, leave_one_group_out
from stbench.errors import DataError

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData
    from PIL import Image as PILImage
    from scipy.sparse import csr_matrix

__all__ = ["import_her2st", "SPOT_PITCH_UM", "PATCH_UM", "PATCH_PX", "TARGET_UM_PER_PX"]

log = logging.getLogger("stbench")

SPOT_PITCH_UM = 200.0  # legacy ST: array units are 200 um apart
PATCH_UM = 112.0  # HEST's field of view per patch
PATCH_PX = 224
TARGET_UM_PER_PX = PATCH_UM / PATCH_PX  # 0.5
_CHUNK = 64  # patches per write: bounds memory to ~10 MB of uint8
_MAX_PIXELS = 400_000_000  # the JPEGs are ~92 Mpx; PIL's bomb guard (89 Mpx) would refuse them


@dataclass
class _Section:
    """One section after the spot join: counts and coordinates in the same (count-file) spot order."""

    id: str
    patient: str
    image: Path
    barcodes: list[str]
    spots: pd.DataFrame  # array_x, array_y, pixel_x, pixel_y; index = barcodes
    counts: csr_matrix
    genes: list[str]
    um_per_px: float
    n_dropped: int  # selected spotfile rows without a count row
    n_unplaced: int  # count rows without a selected spotfile row


def _read_counts(path: Path) -> tuple[list[str], list[str], csr_matrix]:
    """(barcodes, genes, CSR counts) of one ST-cnts file.

    Parsed with numpy (integer counts): ~15x faster than pandas on these 15,000-column tables, and
    duplicate gene names are kept as written where pandas would rename them.
    """
    from scipy.sparse import csr_matrix

    try:
        with gzip.open(path, "rt") as fh:
            genes = fh.readline().rstrip("\n").split("\t")[1:]
            barcodes, values = [], []
            for line in fh:
                if line.strip():
                    barcode, _, rest = line.rstrip("\n").partition("\t")
                    barcodes.append(barcode)
                    values.append(rest)
        if not barcodes:
            raise DataError(path, "count table holds no spots")
        dense = np.loadtxt(values, delimiter="\t", dtype=np.int32, ndmin=2)
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(path, f"cannot read count table ({exc})") from exc
    if dense.shape[1] != len(genes):
        raise DataError(path, f"header names {len(genes)} genes but rows hold {dense.shape[1]} values")
    if len(set(barcodes)) != len(barcodes):
        raise DataError(path, "duplicate spot ids in the count table")
    return barcodes, genes, csr_matrix(dense.astype(np.float32))


def _fit_um_per_px(spots: pd.DataFrame) -> float:
    """um per pixel from the slopes of pixel ~ array coordinate on both axes (least squares)."""
    a = np.polyfit(spots["array_x"].to_numpy(float), spots["pixel_x"].to_numpy(float), 1)[0]
    c = np.polyfit(spots["array_y"].to_numpy(float), spots["pixel_y"].to_numpy(float), 1)[0]
    return SPOT_PITCH_UM / float(np.mean([abs(a), abs(c)]))


def _find_image(source: Path, section: str) -> Path | None:
    folder = source / "data" / "ST-imgs" / section[0] / section
    images = sorted(p for p in folder.glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".tif", ".tiff", ".png"})
    return images[0] if images else None


def _load_section(source: Path, section: str, image: Path) -> _Section | str:
    """Join spotfile rows to count rows; a string return is the reason to skip the section."""
    import pandas as pd

    spot_file = source / "data" / "ST-spotfiles" / f"{section}_selection.tsv"
    if not spot_file.exists():
        return f"no spot file {spot_file}"
    barcodes, genes, counts = _read_counts(source / "data" / "ST-cnts" / f"{section}.tsv.gz")
    try:
        sf = pd.read_csv(spot_file, sep="\t")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(spot_file, f"cannot read spot file ({exc})") from exc
    missing = {"x", "y", "pixel_x", "pixel_y"} - set(sf.columns)
    if missing:
        raise DataError(spot_file, f"spot file lacks columns {sorted(missing)}")
    if "selected" in sf.columns:  # spots flagged as under tissue
        sf = sf[sf["selected"] == 1]
    sf = sf.assign(barcode=[f"{int(x)}x{int(y)}" for x, y in zip(sf["x"], sf["y"])])
    sf = sf.drop_duplicates("barcode").set_index("barcode")
    # Keep the count file's spot order: the h5ad rows and the patches then follow the same order.
    keep = [i for i, b in enumerate(barcodes) if b in sf.index]
    kept = [barcodes[i] for i in keep]
    if len(kept) < 3:
        return f"only {len(kept)} spots join the spot file to the count table"
    spots = pd.DataFrame(
        {
            "array_x": sf.loc[kept, "x"].to_numpy(int),
            "array_y": sf.loc[kept, "y"].to_numpy(int),
            "pixel_x": sf.loc[kept, "pixel_x"].to_numpy(float),
            "pixel_y": sf.loc[kept, "pixel_y"].to_numpy(float),
        },
        index=pd.Index(kept, name="barcode"),
    )
    um_per_px = _fit_um_per_px(spots)
    if not 0.05 < um_per_px < 10:  # a broken spot file, not a microscope
        raise DataError(spot_file, f"spot grid gives an implausible scale of {um_per_px:.3g} um/px")
    return _Section(
        id=section, patient=section[0], image=image, barcodes=kept, spots=spots, counts=counts[keep],
        genes=genes, um_per_px=um_per_px, n_dropped=len(sf) - len(kept),
        n_unplaced=len(barcodes) - len(kept),
    )


def _to_anndata(sec: _Section, genes: list[str]) -> AnnData:
    """Raw counts of the section's joined spots for ``genes`` (float32 CSR, integer-valued)."""
    import anndata as ad
    import pandas as pd

    first: dict[str, int] = {}
    for i, g in enumerate(sec.genes):  # first occurrence if a symbol repeats
        first.setdefault(g, i)
    col = [first[g] for g in genes]
    obs = sec.spots.copy()
    obs.index = obs.index.astype(str)
    obs.index.name = None
    adata = ad.AnnData(X=sec.counts[:, col], obs=obs, var=pd.DataFrame(index=pd.Index(genes, dtype=str)))
    adata.obsm["spatial"] = sec.spots[["pixel_x", "pixel_y"]].to_numpy(np.float64)
    adata.uns["um_per_px"] = sec.um_per_px
    return adata


def _crop_boxes(sec: _Section) -> tuple[int, np.ndarray]:
    """Patch side in source pixels and each spot's crop top-left corner (integers, may be negative)."""
    side = int(round(PATCH_UM / sec.um_per_px))
    centres = sec.spots[["pixel_x", "pixel_y"]].to_numpy(float)
    return side, np.rint(centres - side / 2).astype(np.int64)


def _cut(image: PILImage.Image, x0: int, y0: int, side: int) -> np.ndarray:
    """One (224, 224, 3) uint8 patch; where the box leaves the image the patch is white, not PIL's black."""
    from PIL import Image

    w, h = image.size
    box = (x0, y0, x0 + side, y0 + side)
    if x0 >= 0 and y0 >= 0 and box[2] <= w and box[3] <= h:
        crop = image.crop(box)
    else:
        crop = Image.new("RGB", (side, side), (255, 255, 255))
        inner = (max(x0, 0), max(y0, 0), min(box[2], w), min(box[3], h))
        if inner[0] < inner[2] and inner[1] < inner[3]:
            crop.paste(image.crop(inner), (inner[0] - x0, inner[1] - y0))
    return np.asarray(crop.resize((PATCH_PX, PATCH_PX), Image.BILINEAR), dtype=np.uint8)


def _open_image(path: Path) -> PILImage.Image:
    """Decode the whole JPEG once; crops then come from memory."""
    from PIL import Image

    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = _MAX_PIXELS  # only for this open, not for the rest of the process
    try:
        image = Image.open(path)
        image.load()
    except OSError as exc:
        raise DataError(path, f"cannot read image ({exc})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    if image.mode != "RGB":  # convert() copies ~280 MB, so only when needed
        rgb = image.convert("RGB")
        image.close()
        image = rgb
    return image


def _patches(sec: _Section, corners: np.ndarray, side: int, advance: Callable[[int], None]) -> Iterator[np.ndarray]:
    """Patches of one section in spot order, in uint8 chunks of ``_CHUNK``."""
    image = _open_image(sec.image)
    try:
        for start in range(0, len(corners), _CHUNK):
            block = np.stack([_cut(image, int(x), int(y), side) for x, y in corners[start : start + _CHUNK]])
            advance(len(block))
            yield block
    finally:
        image.close()


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[str, int], None]]:
    """Yields ``step(section, n)``: a rich bar over spots on stderr when enabled, a no-op otherwise."""
    if not enabled:
        yield lambda section, n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("her2st {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    ) as bar:
        task = bar.add_task("", total=total)
        yield lambda section, n: bar.update(task, advance=n, description=section)


def _discover(source: Path) -> list[str]:
    if not source.is_dir():
        raise DataError(source, "her2st source folder does not exist")
    cnt_dir = source / "data" / "ST-cnts"
    sections = sorted(p.name[: -len(".tsv.gz")] for p in cnt_dir.glob("*.tsv.gz"))
    if not sections:
        raise DataError(cnt_dir, "no count files (<section>.tsv.gz); is this a copy of almaan/her2st?")
    return sections


def import_her2st(
    source: Path,
    root: Path,
    *,
    name: str = "HER2ST",
    split: str = "patient",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write ``<root>/<name>/`` in the HEST layout from a her2st folder; returns the task folder.

    Sections come from ``data/ST-cnts``; one without an image or spot file is skipped with a warning on
    the ``stbench`` logger and listed under ``skipped`` in task.json. Patient = first letter of the section
    id. ``split='patient'`` holds out one patient per fold, ``'section'`` one section. Counts keep the genes
    present in every imported section. The 50-gene list follows HEST: chosen on all sections, test included.
    Reads: ``source``. Writes: ``<root>/<name>/`` (atomically, via `TaskWriter`).
    """
    source, root = Path(source), Path(root)
    if split not in ("patient", "section"):
        raise ValueError(f"split must be 'patient' or 'section', not {split!r}")
    sections = _discover(source)
    writer = TaskWriter(root, name, overwrite=overwrite)  # fails now, before any work, if the task exists

    loaded: list[_Section] = []
    skipped: dict[str, str] = {}
    for sid in sections:
        image = _find_image(source, sid)
        result = _load_section(source, sid, image) if image else f"no image under data/ST-imgs/{sid[0]}/{sid}/"
        if isinstance(result, str):
            skipped[sid] = result
            log.warning("her2st: skipping section %s: %s", sid, result)
            continue
        if result.n_dropped:
            log.info("her2st: %s: %d selected spots have no count row, dropped", sid, result.n_dropped)
        loaded.append(result)
    if not loaded:
        raise DataError(source, f"no section has counts, spots and an image (skipped: {skipped})")

    # Genes present in every section, in the first section's column order (deterministic).
    common = set(loaded[0].genes).intersection(*(s.genes for s in loaded[1:]))
    genes = list(dict.fromkeys(g for g in loaded[0].genes if g in common))
    groups = {s.id: (s.patient if split == "patient" else s.id) for s in loaded}
    folds = leave_one_group_out(groups)  # raises early when fewer than two groups remain

    adatas = []
    with writer, _progress(progress, sum(len(s.barcodes) for s in loaded)) as step:
        for sec in loaded:
            adata = _to_anndata(sec, genes)
            side, corners = _crop_boxes(sec)
            writer.add_sample(
                sec.id,
                patches=_patches(sec, corners, side, lambda n, sid=sec.id: step(sid, n)),
                n_patches=len(sec.barcodes), barcodes=sec.barcodes, coords=corners, counts=adata,
                patch_size=PATCH_PX,
                attrs={"pixel_size": TARGET_UM_PER_PX, "patch_size_target": PATCH_PX,
                       "source_um_per_px": sec.um_per_px, "source_patch_px": side},
            )
            adatas.append(adata)
        from stbench.expression import hest_gene_rule

        top50 = hest_gene_rule(adatas)
        meta = {
            "synthetic": False,
            "source": "her2st (Andersson et al. 2021, Nat Commun)",
            "importer": "stbench.data.her2st",
            "split": split,
            "gene_rule": "HEST: highly variable genes chosen on all sections (test included)",
            "n_genes_common": len(genes),
            "sections": {
                s.id: {"patient": s.patient, "um_per_px": round(s.um_per_px, 5), "n_spots": len(s.barcodes),
                       "n_dropped": s.n_dropped, "n_unplaced": s.n_unplaced}
                for s in loaded
            },
            "skipped": skipped,
            "stbench_version": stbench.__version__,
        }
        return writer.commit(folds, top50, meta)
