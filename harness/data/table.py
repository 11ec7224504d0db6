"""Read a cell or spot table plus a count matrix (Xenium cells, binned spots, any platform) into a `SampleSource`.

One table row = one patch: the row's ``x``/``y`` are its centre in pixels of the given H&E image, whose pixel
size the user states (``pixel_size`` um/px), or in micrometres (``coords="um"``, as Xenium's cells.parquet and
HEST-1k give them), divided by that pixel size. Counts come from an h5ad (obs_names = ids) or a CSV/TSV/parquet
matrix whose first column (or the id column, when present) holds the same ids and whose other columns are genes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from stbench.data.assemble import MAX_BACKGROUND, SampleSource, check_pitch, write_task
from stbench.errors import DataError, StbenchError

__all__ = ["read_table_sample", "import_table", "read_count_matrix", "COORD_UNITS"]

log = logging.getLogger("stbench")

COORD_UNITS = ("px", "um")  # table x/y: image pixels, or micrometres (Xenium, HEST-1k)


def _separator(path: Path) -> str:
    return "\t" if ".tsv" in path.suffixes or ".txt" in path.suffixes else ","


def _read_frame(path: Path, what: str):  # noqa: ANN202 (polars DataFrame)
    import polars as pl

    path = Path(path)
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        return pl.read_csv(path, separator=_separator(path), infer_schema_length=10_000)
    except FileNotFoundError as exc:
        raise DataError(path, f"{what} does not exist") from exc
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataError(path, f"cannot read {what} ({str(exc).splitlines()[0]})") from exc


def read_count_matrix(path: Path, id_col: str) -> tuple[list[str], list[str], np.ndarray]:
    """(ids, genes, CSR counts) from an h5ad, or a CSV/TSV/parquet table indexed by ``id_col`` or its first column."""
    import polars as pl
    from scipy.sparse import csr_matrix

    path = Path(path)
    if path.suffix == ".h5ad":
        import anndata as ad

        try:
            adata = ad.read_h5ad(path)
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(path, f"cannot read counts ({exc})") from exc
        ids, genes = [str(i) for i in adata.obs_names], [str(g) for g in adata.var_names]
        return ids, genes, csr_matrix(adata.X, dtype=np.float32)
    frame = _read_frame(path, "count matrix")
    key = id_col if id_col in frame.columns else frame.columns[0]
    genes = [c for c in frame.columns if c != key]
    schema = frame.schema  # built anew on every access: once, not per column
    bad = [c for c in genes if not schema[c].is_numeric()]
    if bad:
        raise DataError(path, f"count columns must be numeric; {len(bad)} are not (e.g. {bad[0]!r}); ids in {key!r}?")
    ids = [str(i) for i in frame[key].cast(pl.String).to_list()]
    return ids, genes, csr_matrix(frame.drop(key).to_numpy().astype(np.float32))


def read_table_sample(
    sample_id: str, table: Path, image: Path, counts: Path, *, pixel_size: float, x_col: str = "x",
    y_col: str = "y", id_col: str = "id", patient_col: str | None = None, spot_pitch: float | None = None,
    coords: str = "px",
) -> SampleSource:
    """One sample from a table of rows (id, x, y) and a count matrix with the same ids.

    x and y are image pixels, or with ``coords="um"`` micrometres from the image's origin (Xenium's
    cells.parquet, HEST-1k), turned into pixels with ``pixel_size``. Rows keep the table's order. A table id
    without a count row is an error; count rows without a table row are dropped with a warning. With
    ``spot_pitch`` (um) the pixel size must put neighbours that far apart.
    """
    import polars as pl

    if not 0 < pixel_size < float("inf"):
        raise StbenchError(f"{sample_id}: --pixel-size must be a positive number of um per pixel")
    if coords not in COORD_UNITS:
        raise StbenchError(f"--coords must be {' or '.join(COORD_UNITS)}, not {coords!r}")
    frame = _read_frame(Path(table), "table")
    wanted = [c for c in (id_col, x_col, y_col, patient_col) if c]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        shown = ", ".join(frame.columns[:12])
        raise DataError(table, f"no column {missing[0]!r} (columns: {shown}); see --x-col/--y-col/--id-col")
    ids = [str(i) for i in frame[id_col].cast(pl.String).to_list()]
    if len(set(ids)) != len(ids):
        raise DataError(table, f"{sample_id}: ids in {id_col!r} repeat")
    try:
        centres = frame.select(pl.col(x_col).cast(pl.Float64), pl.col(y_col).cast(pl.Float64)).to_numpy()
    except pl.exceptions.PolarsError as exc:
        raise DataError(table, f"{sample_id}: {x_col!r}/{y_col!r} must be numbers (pixels)") from exc
    if not np.isfinite(centres).all():
        raise DataError(table, f"{sample_id}: missing or infinite coordinates in {x_col!r}/{y_col!r}")
    if coords == "um":
        centres = centres / pixel_size
    patient = None
    if patient_col:
        values = set(frame[patient_col].cast(pl.String).to_list())
        if len(values) != 1:
            raise DataError(
                table, f"{sample_id}: column {patient_col!r} must hold one patient per sample, found {sorted(values)[:5]}"
            )
        patient = values.pop()

    count_ids, genes, matrix = read_count_matrix(counts, id_col)
    row = {b: i for i, b in enumerate(count_ids)}
    if len(row) != len(count_ids):
        raise DataError(counts, f"{sample_id}: ids repeat in the count matrix")
    unmatched = [b for b in ids if b not in row]
    if unmatched:
        raise DataError(
            counts, f"{sample_id}: {len(unmatched)} of {len(ids)} ids of the table match no count row "
                    f"(e.g. {unmatched[0]!r}); is --id-col right and are the files from the same sample?",
        )
    unplaced = len(count_ids) - len(ids)
    if unplaced:
        log.warning("table: %s: %d count rows have no table row and are left out", sample_id, unplaced)
    pitch = None
    if spot_pitch:
        pitch = check_pitch(sample_id, centres, pixel_size, spot_pitch, "--pixel-size")
    import pandas as pd

    return SampleSource(
        id=sample_id, image=Path(image), barcodes=ids, centres=centres, um_per_px=float(pixel_size),
        counts=matrix[[row[b] for b in ids]], genes=genes,
        obs=pd.DataFrame({"pixel_x": centres[:, 0], "pixel_y": centres[:, 1]}), patient=patient,
        counts_file=Path(counts),
        info={"table": str(Path(table).resolve()), "image": str(Path(image).resolve()),
              "counts": str(Path(counts).resolve()), "um_per_px": float(pixel_size), "coords": coords,
              "n_spots": len(ids), "n_unplaced": unplaced, **({"pitch_um": round(pitch, 2)} if pitch else {})},
    )


def import_table(
    tables: dict[str, Path],
    images: dict[str, Path],
    counts: dict[str, Path],
    root: Path,
    name: str,
    *,
    pixel_size: float | dict[str, float],
    x_col: str = "x",
    y_col: str = "y",
    id_col: str = "id",
    patient_col: str | None = None,
    spot_pitch: float | None = None,
    coords: str = "px",
    split: str = "sample",
    patients: dict[str, str] | None = None,
    genes: list[str] | None = None,
    max_background: float = MAX_BACKGROUND,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write ``<root>/<name>/`` from per-sample tables, images and counts (each keyed by sample id).

    ``pixel_size`` is one um/px for all images or one per sample; ``coords`` says whether the tables' x/y are
    pixels (``px``) or micrometres (``um``). Patients come from ``patients`` or, per
    sample, from ``patient_col``. Everything is read and checked before anything is written.
    """
    for what, given in (("--image", images), ("--counts", counts)):
        if set(given) != set(tables):
            raise StbenchError(f"{what} must name the same samples as --sample: missing "
                               f"{sorted(set(tables) - set(given))}, extra {sorted(set(given) - set(tables))}")
    sizes = pixel_size if isinstance(pixel_size, dict) else dict.fromkeys(tables, pixel_size)
    if set(sizes) != set(tables):
        raise StbenchError(f"--pixel-size has no value for samples {sorted(set(tables) - set(sizes))}")
    sources = [
        read_table_sample(sid, tables[sid], images[sid], counts[sid], pixel_size=sizes[sid], x_col=x_col, y_col=y_col,
                          id_col=id_col, patient_col=patient_col, spot_pitch=spot_pitch, coords=coords)
        for sid in tables
    ]
    if patients is None and patient_col:
        patients = {s.id: s.patient for s in sources}
    for s in sources:
        s.patient = (patients or {}).get(s.id, s.patient)
    meta = {"source": "cell/spot tables", "importer": "stbench.data.table"}
    return write_task(sources, root, name, split=split, patients=patients, genes=genes, meta=meta,
                      max_background=max_background, overwrite=overwrite, show_progress=progress, label="table")
