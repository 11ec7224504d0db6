"""Read a spaceranger ``outs/`` folder (10x Visium) and its H&E image into a `SampleSource`.

Files read::

    filtered_feature_bc_matrix.h5  or  filtered_feature_bc_matrix/ (Matrix Market: matrix.mtx, barcodes.tsv,
        features.tsv or genes.tsv, each plain or gzipped); without either, the raw_feature_bc_matrix of the same
        forms, restricted to the spots marked in_tissue == 1
    spatial/tissue_positions.csv (header)  or  spatial/tissue_positions_list.csv (no header)
        barcode, in_tissue, array_row, array_col, pxl_row_in_fullres, pxl_col_in_fullres
    spatial/scalefactors_json.json
    the full-resolution H&E given to spaceranger (TIFF, JPEG, PNG), or with ``allow_lowres`` the
    tissue_hires/lowres PNG in spatial/

Scale: 10x defines ``spot_diameter_fullres`` as the pixels spanning "a theoretical 65 um spot" (the capture
spots themselves are 55 um), so um/px = 65 / spot_diameter_fullres. Using 55 would shrink the 100 um grid to
~85 um; the grid check below refuses a scale that does not put neighbouring spots ~100 um apart, measured on
the array grid (array_row, array_col against their pixel centres), so it holds for any subset of spots.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stbench.data.assemble import MAX_BACKGROUND, SampleSource, check_pitch, write_task
from stbench.errors import DataError, StbenchError

__all__ = ["VisiumScale", "array_pitch_px", "import_visium", "read_visium", "visium_scale", "SPOT_PITCH_UM",
           "SCALEFACTOR_SPOT_UM"]

log = logging.getLogger("stbench")

SPOT_PITCH_UM = 100.0  # Visium: centre-to-centre distance of neighbouring spots
SCALEFACTOR_SPOT_UM = 65.0  # the spot size spot_diameter_fullres refers to (10x's definition)
_POSITION_COLS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]


@dataclass(frozen=True)
class VisiumScale:
    """Pixel sizes derived from scalefactors_json.json."""

    um_per_px: float  # full-resolution image
    hires_scalef: float | None
    lowres_scalef: float | None


def visium_scale(factors: dict) -> VisiumScale:
    """um/px of the full-resolution image from spaceranger's scale factors (pure)."""
    diameter = float(factors.get("spot_diameter_fullres") or 0)
    if not diameter > 0:
        raise DataError(None, "scalefactors_json.json has no positive spot_diameter_fullres")
    return VisiumScale(
        SCALEFACTOR_SPOT_UM / diameter, factors.get("tissue_hires_scalef"), factors.get("tissue_lowres_scalef")
    )


def _outs(path: Path) -> Path:
    path = Path(path)
    if (path / "outs").is_dir():  # the spaceranger run folder rather than outs/ itself
        path = path / "outs"
    if not path.is_dir():
        raise DataError(path, "spaceranger outs/ folder does not exist")
    return path


def _find(folder: Path, *names: str) -> Path | None:
    """The first of ``names`` present in ``folder``, each tried gzipped and plain."""
    for name in names:
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.exists():
                return candidate
    return None


def _read_mtx(folder: Path):  # noqa: ANN202 (AnnData)
    """A Matrix Market folder as 10x writes it (features x barcodes), gzipped (spaceranger >= 1.0) or plain, with
    ``features.tsv`` or the older ``genes.tsv``; gene symbols (2nd column) as var names, gene expression only."""
    import anndata as ad
    import pandas as pd
    import scipy.io

    matrix, barcodes = _find(folder, "matrix.mtx"), _find(folder, "barcodes.tsv")
    features = _find(folder, "features.tsv", "genes.tsv")
    absent = [n for n, f in (("matrix.mtx", matrix), ("barcodes.tsv", barcodes), ("features.tsv or genes.tsv",
                                                                                   features)) if f is None]
    if absent:
        raise DataError(folder, f"Matrix Market folder lacks {', '.join(absent)} (plain or .gz)")
    x = scipy.io.mmread(matrix).T.tocsr()  # mmread opens .gz itself
    feats = pd.read_csv(features, sep="\t", header=None, dtype=str)
    codes = pd.read_csv(barcodes, sep="\t", header=None, dtype=str)[0]
    if x.shape != (len(codes), len(feats)):
        raise DataError(matrix, f"matrix is {x.shape[1]} x {x.shape[0]} but {features.name} lists {len(feats)} "
                                f"features and {barcodes.name} {len(codes)} barcodes")
    keep = (feats[2] == "Gene Expression").to_numpy() if feats.shape[1] > 2 else np.ones(len(feats), bool)
    names = feats[1] if feats.shape[1] > 1 else feats[0]
    return ad.AnnData(x[:, keep], obs=pd.DataFrame(index=pd.Index(codes, dtype=str)),
                      var=pd.DataFrame(index=pd.Index(names[keep], dtype=str)))


def _read_matrix(outs: Path, positions, sample_id: str) -> tuple[object, Path, str]:  # noqa: ANN001
    """(AnnData, path, what was read): the filtered matrix, else the raw one restricted to the spots marked
    ``in_tissue == 1`` (which is what spaceranger's filtering keeps); each as .h5 or a Matrix Market folder."""
    import scanpy as sc

    for kind in ("filtered", "raw"):
        h5, mtx = outs / f"{kind}_feature_bc_matrix.h5", outs / f"{kind}_feature_bc_matrix"
        path = h5 if h5.exists() else mtx if mtx.is_dir() else None
        if path is None:
            continue
        try:
            adata = sc.read_10x_h5(h5) if path == h5 else _read_mtx(mtx)
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(path, f"cannot read the count matrix ({exc})") from exc
        if kind == "filtered":
            return adata, path, path.name
        in_tissue = set(positions.index[positions["in_tissue"] == 1])
        adata = adata[[b in in_tissue for b in adata.obs_names]].copy()
        if adata.n_obs == 0:
            raise DataError(path, f"{sample_id}: no barcode of the raw matrix is marked in_tissue == 1 in the spot "
                                  "positions; are they from the same run?")
        log.warning("visium: %s: no filtered_feature_bc_matrix; using %s restricted to the %d spots with "
                    "in_tissue == 1", sample_id, path.name, adata.n_obs)
        return adata, path, f"{path.name} (in_tissue == 1)"
    raise DataError(outs, "no filtered_feature_bc_matrix or raw_feature_bc_matrix (.h5 or Matrix Market folder)")


def array_pitch_px(positions) -> float:  # noqa: ANN001 (DataFrame)
    """Pixels between neighbouring spots, fitted from the array grid: pixel centres as an affine function of
    (array_row, array_col), whose column step (two array columns, 100 um on Visium) is measured. Unlike
    nearest-neighbour distances this holds for any subset of spots (QC-filtered exports keep a few scattered
    ones); NaN when the spots do not span the grid (fewer than three, or all on one line)."""
    design = np.column_stack([positions["array_row"].to_numpy(float), positions["array_col"].to_numpy(float),
                              np.ones(len(positions))])
    if len(design) < 3 or np.linalg.matrix_rank(design) < 3:
        return float("nan")
    xy = positions[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)
    coef, *_ = np.linalg.lstsq(design, xy, rcond=None)  # rows: per array_row, per array_col, origin
    return float(2 * np.hypot(*coef[1]))


def _read_positions(spatial: Path):  # noqa: ANN202 (DataFrame)
    import pandas as pd

    for name, header in (("tissue_positions.csv", 0), ("tissue_positions_list.csv", None)):
        path = spatial / name
        if path.exists():
            try:
                pos = pd.read_csv(path, header=header, dtype={0: str} if header is None else {"barcode": str})
            except (OSError, ValueError, pd.errors.ParserError) as exc:
                raise DataError(path, f"cannot read spot positions ({exc})") from exc
            if header is None:
                if pos.shape[1] != len(_POSITION_COLS):
                    raise DataError(
                        path, f"expected {len(_POSITION_COLS)} columns ({','.join(_POSITION_COLS)}), found {pos.shape[1]}"
                    )
                pos.columns = _POSITION_COLS
            missing = set(_POSITION_COLS) - set(pos.columns)
            if missing:
                raise DataError(path, f"spot positions lack columns {sorted(missing)}")
            return pos.drop_duplicates("barcode").set_index("barcode"), path
    raise DataError(spatial, "no tissue_positions.csv or tissue_positions_list.csv")


def _lowres_image(spatial: Path, scale: VisiumScale) -> tuple[Path, float]:
    """The hires PNG (else the lowres one) and its scale factor; a blank placeholder is passed over."""
    from stbench.data.layout import open_image

    reasons = []
    for kind, scalef in (("hires", scale.hires_scalef), ("lowres", scale.lowres_scalef)):
        path = spatial / f"tissue_{kind}_image.png"
        if not path.exists() or not scalef:
            reasons.append(f"{path.name} {'absent' if not path.exists() else 'has no scale factor'}")
            continue
        try:
            open_image(path).close()  # small (<= 2000 px): decoding it twice costs nothing
        except DataError as exc:
            reasons.append(f"{path.name}: {exc.problem}")
            log.warning("visium: not using %s: %s", path, exc.problem)
            continue
        return path, float(scalef)
    raise DataError(spatial, "no usable low-resolution image: " + "; ".join(reasons))


def read_visium(sample_id: str, outs: Path, image: Path | None = None, *, allow_lowres: bool = False,
                patient: str | None = None) -> SampleSource:
    """One Visium sample: the spots of the filtered matrix, in matrix order, with their full-resolution centres.

    Without ``image`` the hires (else lowres) PNG is used when ``allow_lowres``; its pixel size is recorded in
    ``info``. Checks: every matrix barcode has a position; the scale gives a ~100 um spot grid.
    """
    outs = _outs(outs)
    spatial = outs / "spatial"
    positions, pos_path = _read_positions(spatial)
    adata, matrix_path, matrix_what = _read_matrix(outs, positions, sample_id)
    try:
        scale = visium_scale(json.loads((spatial / "scalefactors_json.json").read_text()))
    except (OSError, ValueError) as exc:
        raise DataError(spatial / "scalefactors_json.json", f"cannot read scale factors ({exc})") from exc
    except DataError as exc:
        raise DataError(spatial / "scalefactors_json.json", exc.problem) from exc

    barcodes = [str(b) for b in adata.obs_names]
    unplaced = [b for b in barcodes if b not in positions.index]
    if unplaced:
        raise DataError(
            pos_path,
            f"{sample_id}: {len(unplaced)} of {len(barcodes)} barcodes of {matrix_path.name} have no spot position "
            f"(e.g. {unplaced[0]}); are the matrix and the spatial/ folder from the same run?",
        )
    # The array grid (every listed spot, in and off tissue) gives the pitch, however few spots are kept.
    check_pitch(sample_id, None, scale.um_per_px, SPOT_PITCH_UM,
                f"from spot_diameter_fullres in {spatial / 'scalefactors_json.json'}",
                pitch_px=array_pitch_px(positions))
    spots = positions.loc[barcodes]
    off = int((spots["in_tissue"] != 1).sum())
    if off:
        log.warning("visium: %s: %d of %d spots of the matrix are marked off tissue", sample_id, off, len(barcodes))

    if image is not None:
        image_path, image_scale = Path(image), 1.0
    elif allow_lowres:
        image_path, image_scale = _lowres_image(spatial, scale)
    else:
        raise StbenchError(
            f"{sample_id}: no full-resolution H&E: pass --image {sample_id}=PATH (the image given to spaceranger), "
            "or --allow-lowres to cut patches from spatial/tissue_hires_image.png at a much coarser pixel size"
        )
    centres = spots[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)  # x = column
    obs = spots[["in_tissue", "array_row", "array_col"]].reset_index(drop=True).assign(
        pixel_x=centres[:, 0], pixel_y=centres[:, 1])
    from scipy.sparse import csr_matrix

    return SampleSource(
        id=sample_id, image=image_path, barcodes=barcodes, centres=centres, um_per_px=scale.um_per_px,
        counts=csr_matrix(adata.X, dtype=np.float32), genes=[str(g) for g in adata.var_names], obs=obs,
        patient=patient, image_scale=image_scale, counts_file=matrix_path,
        info={"source": str(outs.resolve()), "matrix": matrix_what, "image": str(image_path.resolve()),
              "um_per_px": round(scale.um_per_px, 5),
              "image_um_per_px": round(scale.um_per_px / image_scale, 5), "image_scale": image_scale,
              "lowres": image is None, "n_spots": len(barcodes), "n_off_tissue": off},
    )


def import_visium(
    samples: dict[str, Path],
    root: Path,
    name: str,
    *,
    images: dict[str, Path] | None = None,
    allow_lowres: bool = False,
    split: str = "sample",
    patients: dict[str, str] | None = None,
    genes: list[str] | None = None,
    max_background: float = MAX_BACKGROUND,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write ``<root>/<name>/`` from spaceranger folders (``samples``: id -> outs/) and their H&E ``images``.

    Reads every sample and checks it before anything is written; see `write_task` for splits and genes.
    """
    images = images or {}
    unknown = sorted(set(images) - set(samples))
    if unknown:
        raise StbenchError(f"--image names samples that were not given with --sample: {unknown}")
    sources = [read_visium(sid, path, images.get(sid), allow_lowres=allow_lowres,
                           patient=(patients or {}).get(sid)) for sid, path in samples.items()]
    meta = {"source": "10x Visium (spaceranger outs/)", "importer": "stbench.data.visium"}
    return write_task(sources, root, name, split=split, patients=patients, genes=genes, meta=meta,
                      max_background=max_background, overwrite=overwrite, show_progress=progress, label="visium")
