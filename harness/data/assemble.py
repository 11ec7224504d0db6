"""Assemble imported samples (her2st, Visium, cell/spot tables) into one HEST-layout task.

Importers only read their formats into `SampleSource` objects; everything a task needs beyond that is done
here once: the split rule, the gene list (HEST's rule or the user's), the checks that refuse bad input with
a one-line error, and the all-or-nothing write through `TaskWriter`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import stbench
from stbench.data.layout import (
    PATCH_PX,
    TARGET_UM_PER_PX,
    TaskWriter,
    check_name,
    image_size,
    iter_patches,
    kfold_groups,
    leave_one_group_out,
    patch_boxes,
    progress,
)
from stbench.errors import DataError, StbenchError
from stbench.expression import check_counts, unique_genes

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData
    from scipy.sparse import csr_matrix

__all__ = [
    "SampleSource", "write_task", "make_folds", "read_patients", "nearest_neighbour_um", "check_pitch",
    "check_inside", "check_name", "check_source_resolution", "MAX_BACKGROUND", "COARSE_UM_PER_PX",
]

log = logging.getLogger("stbench")

MAX_BACKGROUND = 0.5  # default: refuse a sample when more than half of its patches are glass
COARSE_UM_PER_PX = 1.0  # a source coarser than this is upsampled over 2x into 0.5 um/px patches: said and recorded


@dataclass
class SampleSource:
    """One sample as read from its files, not yet written: spots in patch order.

    ``centres`` are spot centres in full-resolution pixels (x = column); the patch file's ``coords`` and the
    h5ad's ``obsm['spatial']`` use that frame. Patches are cut from ``image``, whose pixels are
    ``image_scale`` times the full-resolution ones (1 for the full-resolution image, tissue_*_scalef otherwise).
    """

    id: str
    image: Path
    barcodes: list[str]
    centres: np.ndarray
    um_per_px: float  # of the full-resolution frame
    counts: csr_matrix  # rows follow ``barcodes``
    genes: list[str]  # columns of ``counts``; a repeated symbol keeps its first column
    obs: pd.DataFrame  # per-spot columns for the h5ad, index = barcodes
    patient: str | None = None
    image_scale: float = 1.0
    info: dict = field(default_factory=dict)  # per-sample entries of task.json
    counts_file: Path | None = None  # where ``counts`` were read, named when they are refused

    @property
    def image_um_per_px(self) -> float:
        return self.um_per_px / self.image_scale


def nearest_neighbour_um(centres: np.ndarray, um_per_px: float) -> float:
    """Median distance from each spot to its nearest neighbour, in um (the grid pitch for a spot array)."""
    from scipy.spatial import cKDTree

    xy = np.asarray(centres, dtype=float).reshape(-1, 2)
    if len(xy) < 2:
        return float("nan")
    dist, _ = cKDTree(xy).query(xy, k=2)
    return float(np.median(dist[:, 1]) * um_per_px)


def check_pitch(sample: str, centres: np.ndarray | None, um_per_px: float, expected_um: float, source: str,
                *, tolerance: float = 0.15, pitch_px: float | None = None) -> float:
    """Refuse a pixel size under which the spots are not ``expected_um`` apart (within ``tolerance``): the
    pitch in pixels as given (``pitch_px``, e.g. fitted on an array grid), else the centres' nearest neighbours."""
    pitch = pitch_px * um_per_px if pitch_px is not None else nearest_neighbour_um(centres, um_per_px)
    if np.isfinite(pitch) and abs(pitch / expected_um - 1) > tolerance:
        where = " on the array grid" if pitch_px is not None else ""
        raise DataError(
            None,
            f"{sample}: at {um_per_px:.4g} um/px ({source}) neighbouring spots are {pitch:.1f} um apart{where}, "
            f"not {expected_um:g} um: the pixel size does not match the spot grid",
        )
    return pitch


def check_inside(sample: SampleSource, size: tuple[int, int]) -> None:
    """Refuse spot centres that fall outside the image they are cut from."""
    w, h = size
    xy = np.asarray(sample.centres, dtype=float) * sample.image_scale
    out = (xy[:, 0] < 0) | (xy[:, 1] < 0) | (xy[:, 0] >= w) | (xy[:, 1] >= h)
    if out.any():
        i = int(np.argmax(out))
        raise DataError(
            sample.image,
            f"{sample.id}: {int(out.sum())} of {len(out)} spot centres lie outside the {w} x {h} px image "
            f"(e.g. {sample.barcodes[i]} at x={xy[i, 0]:.0f}, y={xy[i, 1]:.0f}): wrong image, coordinates at another "
            "resolution, or x and y swapped?",
        )


def read_patients(path: Path) -> dict[str, str]:
    """sample -> patient from a CSV/TSV with columns ``sample_id,patient`` (header optional, two columns)."""
    import csv

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise DataError(path, f"cannot read patient file ({exc.strerror})") from exc
    dialect = "excel-tab" if "\t" in text.splitlines()[0] else "excel" if text.strip() else "excel"
    rows = [r for r in csv.reader(text.splitlines(), dialect=dialect) if r and not r[0].startswith("#")]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["sample_id", "patient"]:
        rows = rows[1:]
    if not rows or any(len(r) < 2 for r in rows):
        raise DataError(path, "expected two columns per line: sample_id,patient")
    return {r[0].strip(): r[1].strip() for r in rows}


def make_folds(
    split: str, samples: Sequence[str], patients: dict[str, str] | None
) -> list[tuple[list[str], list[str]]]:
    """Folds for ``split``: ``patient`` (leave one patient out), ``sample`` (leave one sample out) or ``kfold:K``
    (K folds over patients when they are known, else over samples)."""
    if patients is not None:
        missing = [s for s in samples if s not in patients]
        if missing:
            raise DataError(None, f"no patient given for samples {missing}")
    if split == "patient":
        if patients is None:
            raise StbenchError("--split patient needs the patients: --patients FILE (sample_id,patient) or a column")
        return leave_one_group_out({s: patients[s] for s in samples})
    if split == "sample":
        return leave_one_group_out({s: s for s in samples})
    m = re.fullmatch(r"kfold:(\d+)", split)
    if not m:
        raise StbenchError(f"unknown split {split!r}: use patient, sample or kfold:K")
    return kfold_groups({s: (patients[s] if patients else s) for s in samples}, int(m.group(1)))


def check_source_resolution(sample: SampleSource) -> None:
    """Say (a warning) and record in the sample's task.json entry when its image is coarser than
    `COARSE_UM_PER_PX`: its 112 um patches are fewer pixels than 224, upsampled."""
    um = sample.image_um_per_px
    if um <= COARSE_UM_PER_PX:
        return
    factor = um / TARGET_UM_PER_PX
    log.warning("%s: %s is %.3g um/px, coarser than %g um/px: each 112 um patch is %d px, upsampled %.1fx to %d px",
                sample.id, sample.image, um, COARSE_UM_PER_PX, patch_boxes(np.zeros((1, 2)), um)[0], factor, PATCH_PX)
    sample.info.update(lowres=True, image_um_per_px=round(um, 5), upsampled=round(factor, 2))


def _columns(sample: SampleSource, genes: list[str]) -> list[int]:
    """The count columns of ``genes`` in the sample (the first occurrence if a symbol repeats)."""
    first: dict[str, int] = {}
    for i, g in enumerate(sample.genes):
        first.setdefault(g, i)
    return [first[g] for g in genes]


def _to_anndata(sample: SampleSource, genes: list[str]) -> AnnData:
    """Raw counts of the sample's spots for ``genes`` (float32 CSR, integer-valued), obs from the source."""
    import anndata as ad
    import pandas as pd

    obs = sample.obs.copy()
    obs.index = pd.Index([str(b) for b in sample.barcodes])
    adata = ad.AnnData(
        X=sample.counts[:, _columns(sample, genes)].astype(np.float32),
        obs=obs, var=pd.DataFrame(index=pd.Index(genes, dtype=str)),
    )
    adata.obsm["spatial"] = np.asarray(sample.centres, dtype=np.float64)
    adata.uns["um_per_px"] = sample.um_per_px
    return adata


def _choose_genes(samples: Sequence[SampleSource], genes: Sequence[str] | None) -> list[str]:
    """Genes measured in every sample, in the first sample's order; a user list must be among them."""
    common = set(samples[0].genes).intersection(*(s.genes for s in samples[1:]))
    kept = list(dict.fromkeys(g for g in samples[0].genes if g in common))
    if not kept:
        raise DataError(None, "the samples share no gene name")
    if genes is not None:
        absent = [g for g in genes if g not in common]
        if absent:
            shown = ", ".join(absent[:8]) + (" ..." if len(absent) > 8 else "")
            raise DataError(
                None, f"{len(absent)} of {len(genes)} genes of --genes are not measured in every sample: {shown}"
            )
    return kept


def write_task(
    samples: Sequence[SampleSource],
    root: Path,
    name: str,
    *,
    split: str,
    patients: dict[str, str] | None = None,
    genes: Sequence[str] | None = None,
    meta: dict | None = None,
    max_background: float = MAX_BACKGROUND,
    overwrite: bool = False,
    show_progress: bool = False,
    label: str = "import",
    samples_key: str = "samples",
) -> Path:
    """Validate ``samples`` and write ``<root>/<name>/``; returns the task folder.

    Checks before any patch is cut: names, folds, genes, every image readable and every spot centre inside
    its image. While cutting, a sample whose share of glass patches exceeds ``max_background`` is refused
    (usually swapped x/y). Any error leaves no task folder behind (`TaskWriter` writes to a temporary folder).
    ``genes`` is the evaluation list; without it HEST's rule picks 50 on all samples (test included).
    task.json holds ``meta`` (which may override the defaults, e.g. the split's name) and, under ``samples_key``,
    each sample's patient and ``info``.
    """
    check_name("task", name)
    if not samples:
        raise DataError(None, "no samples to import")
    ids = [check_name("sample", s.id) for s in samples]
    if len(set(ids)) != len(ids):
        raise StbenchError(f"sample ids repeat: {sorted(i for i in set(ids) if ids.count(i) > 1)}")
    writer = TaskWriter(Path(root), name, overwrite=overwrite)  # fails now if the task exists
    folds = make_folds(split, ids, patients)
    if genes is not None:
        genes = unique_genes(genes, "--genes")
    common = _choose_genes(samples, genes)
    for s in samples:
        if not s.barcodes:
            raise DataError(None, f"{s.id}: no spots to import")
        # the counts that will be written: finite and non-negative, else refused naming the file
        check_counts(s.counts[:, _columns(s, common)], s.counts_file, obs_names=s.barcodes,
                     var_names=common, what=f"{s.id}: counts")
        check_inside(s, image_size(s.image))
        check_source_resolution(s)

    adatas = []
    with writer, progress(show_progress, sum(len(s.barcodes) for s in samples), label) as step:
        for s in samples:
            adata = _to_anndata(s, common)
            # coords are full-resolution corners (HEST); the crop box lives in the image's own pixels.
            _, corners = patch_boxes(s.centres, s.um_per_px)
            side, boxes = patch_boxes(np.asarray(s.centres) * s.image_scale, s.image_um_per_px)
            background: list[int] = []
            writer.add_sample(
                s.id,
                patches=iter_patches(s.image, boxes, side, lambda n, sid=s.id: step(sid, n), background),
                n_patches=len(s.barcodes), barcodes=s.barcodes, coords=corners, counts=adata, patch_size=PATCH_PX,
                attrs={"pixel_size": TARGET_UM_PER_PX, "patch_size_target": PATCH_PX,
                       "source_um_per_px": s.image_um_per_px, "source_patch_px": side},
            )
            frac = sum(background) / len(s.barcodes)
            if frac > max_background:
                raise DataError(
                    s.image,
                    f"{s.id}: {frac:.0%} of patches are background (bright, unsaturated; "
                    f"limit {max_background:.0%}): "
                    "are x and y swapped, or is this the wrong image? (--max-background raises the limit)",
                )
            s.info.setdefault("background_fraction", round(frac, 4))
            adatas.append(adata)
        if genes is None:
            from stbench.expression import hest_gene_rule

            try:
                chosen = hest_gene_rule(adatas)
            except DataError as exc:
                raise DataError(exc.path, f"{exc.problem}; give the genes with --genes FILE") from exc
            rule = "HEST: highly variable genes chosen on all samples (test included)"
        else:
            chosen, rule = list(genes), "given by the user"
        full = {
            "synthetic": False, "split": split, "gene_rule": rule, "n_genes_common": len(common),
            samples_key: {s.id: {"patient": s.patient, **s.info} for s in samples},
            **(meta or {}), "stbench_version": stbench.__version__,
        }
        return writer.commit(folds, chosen, full)
