"""Issue 15: own data as it really comes (raw-only and uncompressed spaceranger output, a subset of spots,
whole-slide TIFFs, coarse images, micrometre coordinates) is imported; bad counts are refused by name.

Every case makes its own data; each failed on the code before the fix (how is in each docstring).
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from stbench.cli import cli
from stbench.data.layout import cut_patch
from stbench.data.visium import import_visium
from stbench.errors import DataError
from stbench.expression import read_counts
from stbench.tasks import PatchFile, open_task

from .conftest import require_shared
from .test_data_import import PINK, _genes, _grid, _import, _nothing_written, _table_sample


def _pink(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 noisy pink tissue."""
    w, h = size
    rng = np.random.default_rng(seed)
    return np.clip(np.array(PINK) + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- spaceranger output as it comes


def _visium(folder: Path, *, keep: list[int] | None = None, off_tissue: tuple[int, ...] = (), kind: str = "filtered",
            gz: bool = True, features: str = "features.tsv", diameter: float = 65.0) -> tuple[Path, Path]:
    """A spaceranger outs/ on a 100 um hex grid at 1 um/px (64 spots, of which ``keep`` if given), its matrix in
    Matrix Market form (``kind`` filtered or raw, gzipped or not, features.tsv or the 2-column genes.tsv) and a
    full-resolution image. Spots in ``off_tissue`` are marked in_tissue 0 (a raw matrix still holds them)."""
    import scipy.io
    import scipy.sparse as sp

    spatial = folder / "outs" / "spatial"
    spatial.mkdir(parents=True)
    grid = [(r, c) for r in range(8) for c in range(16) if (r + c) % 2 == 0]
    idx = list(range(len(grid))) if keep is None else keep
    barcodes = [f"BC{i:04d}-1" for i in idx]
    pd.DataFrame({
        "barcode": barcodes, "in_tissue": [0 if i in off_tissue else 1 for i in idx],
        "array_row": [grid[i][0] for i in idx], "array_col": [grid[i][1] for i in idx],
        "pxl_row_in_fullres": [100 + grid[i][0] * 100 * np.sqrt(3) / 2 for i in idx],
        "pxl_col_in_fullres": [100 + grid[i][1] * 50 for i in idx],
    }).to_csv(spatial / "tissue_positions.csv", index=False)
    (spatial / "scalefactors_json.json").write_text(json.dumps({
        "spot_diameter_fullres": diameter, "tissue_hires_scalef": 0.5, "tissue_lowres_scalef": 0.1}))
    mtx = folder / "outs" / f"{kind}_feature_bc_matrix"
    mtx.mkdir()
    counts = np.random.default_rng(1).poisson(3, (len(barcodes), 10))
    opener = (lambda p, m: gzip.open(f"{p}.gz", m)) if gz else open
    with opener(mtx / "matrix.mtx", "wb") as fh:
        scipy.io.mmwrite(fh, sp.coo_matrix(counts.T))  # features x barcodes, as 10x writes it
    with opener(mtx / "barcodes.tsv", "wb") as fh:
        fh.write(("\n".join(barcodes) + "\n").encode())
    rows = [f"ENSG{i:05d}\tGENE{i}" + ("\tGene Expression" if features == "features.tsv" else "") for i in range(10)]
    with opener(mtx / features, "wb") as fh:
        fh.write(("\n".join(rows) + "\n").encode())
    Image.fromarray(_pink((900, 800))).save(folder / "he.png")
    return folder / "outs", folder / "he.png"


def _import_visium(outs: Path, image: Path, root: Path, **kw) -> object:  # noqa: ANN003
    path = import_visium({"S1": outs, "S2": outs}, root, "MINE", images={"S1": image, "S2": image},
                         genes=["GENE1", "GENE3"], **kw)
    return open_task("MINE", path.parent)


def test_raw_matrix_only_is_imported_restricted_to_spots_in_tissue(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Before: `no filtered_feature_bc_matrix.h5 or filtered_feature_bc_matrix/ folder`."""
    outs, image = _visium(tmp_path / "s", kind="raw", off_tissue=(0, 5, 6))
    with caplog.at_level(logging.WARNING, logger="stbench"):
        task = _import_visium(outs, image, tmp_path / "root")
    assert "S1: no filtered_feature_bc_matrix; using raw_feature_bc_matrix restricted to the 61 spots with " \
           "in_tissue == 1" in caplog.text
    adata = read_counts(task.samples["S1"].adata)
    assert adata.n_obs == 61 and not {"BC0000-1", "BC0005-1", "BC0006-1"} & set(adata.obs_names)
    assert task.meta["samples"]["S1"]["matrix"] == "raw_feature_bc_matrix (in_tissue == 1)"


def test_raw_h5_of_real_spaceranger_output(tmp_path: Path) -> None:
    """scanpy's real spaceranger 1.0.0 fixture with its matrix renamed raw_feature_bc_matrix.h5 (all 100 of its
    barcodes are in tissue). Before: refused, no filtered matrix."""
    src = require_shared("scanpy_visium_1.0.0")
    outs = tmp_path / "outs"
    shutil.copytree(src, outs)
    (outs / "filtered_feature_bc_matrix.h5").rename(outs / "raw_feature_bc_matrix.h5")
    genes = _genes(tmp_path, ["ENSG00000243485", "ENSG00000237613"])
    r = CliRunner().invoke(cli, ["data", "import", "visium", "--name", "RAW", "--sample", f"A={outs}",
                                 "--sample", f"B={outs}", "--allow-lowres", "--genes", str(genes),
                                 "--data-root", str(tmp_path / "root")])
    assert r.exit_code == 0, r.output
    task = open_task("RAW", tmp_path / "root")
    assert task.meta["samples"]["A"]["n_spots"] == 100
    assert task.meta["samples"]["A"]["matrix"] == "raw_feature_bc_matrix.h5 (in_tissue == 1)"
    info = task.meta["samples"]["A"]  # the hires PNG is coarser than 1 um/px: said and recorded, as for --image
    assert info["lowres"] is True and info["upsampled"] == round(info["image_um_per_px"] / 0.5, 2) > 2
    assert "upsampled" in " ".join(r.output.split())


@pytest.mark.parametrize(("gz", "features"), [(False, "features.tsv"), (True, "genes.tsv"), (False, "genes.tsv")])
def test_uncompressed_matrix_market_and_genes_tsv(tmp_path: Path, gz: bool, features: str) -> None:
    """Before: plain files gave `Did not find file .../matrix.mtx.gz`, and so did a gzipped genes.tsv (the older
    name of features.tsv). A plain genes.tsv folder (cellranger 2's layout) was read before too (scanpy's legacy
    reader) and stays readable."""
    outs, image = _visium(tmp_path / "s", gz=gz, features=features)
    task = _import_visium(outs, image, tmp_path / "root")
    adata = read_counts(task.samples["S2"].adata)
    assert adata.n_obs == 64 and list(adata.var_names) == [f"GENE{i}" for i in range(10)]
    np.testing.assert_array_equal(adata.X.toarray(), np.random.default_rng(1).poisson(3, (64, 10)))
    assert task.genes == ["GENE1", "GENE3"]


def test_a_few_scattered_spots_pass_the_grid_check_and_a_wrong_scale_still_fails(tmp_path: Path) -> None:
    """A QC-filtered export keeping 12 scattered spots of 64. Before: refused by the nearest-neighbour pitch
    (`neighbouring spots are ... um apart, not 100 um`) although the pixel size was right."""
    keep = [0, 7, 13, 20, 26, 33, 39, 44, 50, 55, 58, 63]
    outs, image = _visium(tmp_path / "s", keep=keep)
    task = _import_visium(outs, image, tmp_path / "root")
    assert read_counts(task.samples["S1"].adata).n_obs == 12
    from stbench.data.visium import array_pitch_px

    assert array_pitch_px(pd.read_csv(outs / "spatial" / "tissue_positions.csv")) == pytest.approx(100.0)
    outs, image = _visium(tmp_path / "t", keep=keep, diameter=130.0)  # says 0.5 um/px: a 50 um grid
    with pytest.raises(DataError, match=r"S1: at 0.5 um/px .* neighbouring spots are 50.0 um apart on the array grid"):
        _import_visium(outs, image, tmp_path / "root2")
    _nothing_written(tmp_path / "root2")


# ---------------------------------------------------------------- whole-slide TIFF


def _write_tiff(path: Path, data: np.ndarray, **kw) -> Path:  # noqa: ANN003
    import tifffile

    tifffile.imwrite(path, data, **kw)
    return path


def _pyramid(path: Path, rgb: np.ndarray) -> Path:
    """A tiled, deflate-compressed (lossless) pyramidal BigTIFF: level 0 plus two sub-resolutions."""
    import tifffile

    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(rgb, tile=(128, 128), photometric="rgb", compression="zlib", subifds=2)
        for step in (4, 16):
            tw.write(rgb[::step, ::step], tile=(128, 128), photometric="rgb", compression="zlib", subfiletype=1)
    return path


@pytest.mark.parametrize("layout", ["tiled-pyramid", "strips-uncompressed", "planar", "grey", "uint16", "rgba"])
def test_tiff_regions_equal_the_pixels(tmp_path: Path, layout: str) -> None:
    from stbench.data.slide import TiffSlide, open_slide

    rgb = _pink((700, 500), seed=3)
    rgb[40:60, :, 1] = 0  # a green-free band: a swapped axis or channel shows
    path = tmp_path / "s.tif"
    if layout == "tiled-pyramid":
        _pyramid(path, rgb)
    elif layout == "strips-uncompressed":
        _write_tiff(path, rgb, photometric="rgb")
    elif layout == "planar":
        _write_tiff(path, np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate", compression="zlib",
                    rowsperstrip=16)
    elif layout == "grey":
        rgb = np.repeat(rgb[:, :, :1], 3, axis=2)
        _write_tiff(path, rgb[:, :, 0], photometric="minisblack", tile=(64, 64), compression="zlib")
    elif layout == "uint16":
        _write_tiff(path, rgb.astype(np.uint16) << 8 | 0x7F, photometric="rgb", tile=(64, 64), compression="zlib")
    else:
        _write_tiff(path, np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)]), photometric="rgb", extrasamples=[2],
                    tile=(64, 64), compression="zlib")
    with open_slide(path) as slide:
        assert isinstance(slide, TiffSlide) and slide.size == (700, 500)
        np.testing.assert_array_equal(slide.region(100, 30, 224, 50), rgb[30:80, 100:324])
        edge = slide.region(650, -10, 100, 40)  # leaves the image right and above: white there
        np.testing.assert_array_equal(edge[10:, :50], rgb[:30, 650:700])
        assert (edge[:10] == 255).all() and (edge[:, 50:] == 255).all()


def test_a_pyramidal_bigtiff_is_imported_without_decoding_it_whole(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """Before: PIL decoded the full-resolution image whole (`open_image`, here made to fail). Now patches come
    region by region (tifffile + zarr) and equal PIL's cut of the same pixels."""
    import stbench.data.layout as layout

    files = {s: _table_sample(tmp_path / "src", s, _grid(4, 100.0)) for s in ("A1", "B1")}
    rgb = _pink((600, 600), seed=5)
    for f in files.values():
        f["image"] = _pyramid(tmp_path / "src" / "slide.tif", rgb)

    def whole(path):  # noqa: ANN001, ANN202
        raise AssertionError(f"{path} decoded whole")

    monkeypatch.setattr(layout, "open_image", whole)
    _import(files, tmp_path / "root")
    task = open_task("mine", tmp_path / "root")
    with PatchFile(task.samples["A1"].patches) as pf:
        patches = next(pf.iter_chunks(16))[1]
        corners = pf.coords
    image = Image.fromarray(rgb)
    for patch, (x, y) in zip(patches, corners):
        np.testing.assert_array_equal(patch, cut_patch(image, int(x), int(y), 112))


def test_a_blank_tiff_is_refused(tmp_path: Path) -> None:
    from stbench.data.slide import open_slide

    path = _pyramid(tmp_path / "blank.tif", np.zeros((600, 600, 3), np.uint8))
    with pytest.raises(DataError, match=r"blank\.tif: image is blank"):
        open_slide(path)


# ---------------------------------------------------------------- coarse images, micrometre coordinates


def test_a_coarse_image_is_said_and_recorded(tmp_path: Path) -> None:
    """2.1 um/px: a 112 um patch is 53 px, upsampled 4.2x. Before: nothing said, nothing recorded."""
    pitch = 100.0 / 2.1
    files = {s: _table_sample(tmp_path / "src", s, _grid(4, pitch, origin=60.0), image_size=(300, 300))
             for s in ("A1", "B1")}
    args = ["data", "import", "table", "--name", "MINE", "--pixel-size", "2.1", "--spot-pitch", "100",
            "--genes", str(_genes(tmp_path, ["G0", "G1"])), "--data-root", str(tmp_path / "root")]
    for sid, f in files.items():
        args += ["--sample", f"{sid}={f['table']}", "--image", f"{sid}={f['image']}",
                 "--counts", f"{sid}={f['counts']}"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())
    assert "is 2.1 um/px, coarser than 1 um/px: each 112 um patch is 53 px, upsampled 4.2x to 224 px" in flat
    assert "A1: 16 patches cut at 2.1 um/px (low-resolution image: patches are upsampled 4.2x)" in flat
    info = open_task("MINE", tmp_path / "root").meta["samples"]["A1"]
    assert info["lowres"] is True and info["upsampled"] == 4.2 and info["image_um_per_px"] == 2.1


def test_micrometre_coordinates_with_the_pixel_size(tmp_path: Path) -> None:
    """Xenium/HEST-1k tables give cell centres in um. Before: no --coords option (`No such option`)."""
    files = {s: _table_sample(tmp_path / "src", s, _grid(4, 200.0), image_size=(900, 900)) for s in ("A1", "B1")}
    for f in files.values():  # the same centres written in um at 0.5 um/px
        table = pd.read_csv(f["table"])
        table[["x", "y"]] = table[["x", "y"]] * 0.5
        table.rename(columns={"x": "x_centroid", "y": "y_centroid"}).to_csv(f["table"].with_suffix(".um.csv"),
                                                                            index=False)
    base = ["data", "import", "table", "--pixel-size", "0.5", "--genes", str(_genes(tmp_path, ["G0"])),
            "--data-root", str(tmp_path / "root")]
    for sid, f in files.items():
        base += ["--image", f"{sid}={f['image']}", "--counts", f"{sid}={f['counts']}"]
    px = [*base, "--name", "PX"] + [a for sid, f in files.items() for a in ("--sample", f"{sid}={f['table']}")]
    um = [*base, "--name", "UM", "--coords", "um", "--x-col", "x_centroid", "--y-col", "y_centroid"] + \
        [a for sid, f in files.items() for a in ("--sample", f"{sid}={f['table'].with_suffix('.um.csv')}")]
    for args in (px, um):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0, r.output
    a, b = open_task("PX", tmp_path / "root"), open_task("UM", tmp_path / "root")
    with PatchFile(a.samples["B1"].patches) as pa, PatchFile(b.samples["B1"].patches) as pb:
        np.testing.assert_array_equal(pa.coords, pb.coords)
        assert pb.coords[0].tolist() == [-12, -12]  # centre 100 px = 50 um, 224 px patch
        np.testing.assert_array_equal(next(pa.iter_chunks(16))[1], next(pb.iter_chunks(16))[1])
    assert b.meta["samples"]["B1"]["coords"] == "um"


# ---------------------------------------------------------------- counts at import


@pytest.mark.parametrize(("value", "shown"), [("", "nan"), ("-3", "-3")])
def test_bad_counts_at_import_are_refused_by_name(tmp_path: Path, value: str, shown: str) -> None:
    """An empty cell (NaN) or a negative count in a count table. Before: raw tracebacks from the HEST gene rule
    (`ValueError: Input contains NaN.`, `KeyError: '[nan] not in index'`)."""
    files = {s: _table_sample(tmp_path / "src", s, _grid(4, 100.0), n_genes=60) for s in ("A1", "B1")}
    counts = pd.read_csv(files["B1"]["counts"], dtype=str)
    counts.loc[2, "G7"] = value
    counts.to_csv(files["B1"]["counts"], index=False)
    with pytest.raises(DataError, match=rf"B1_counts\.csv: B1: counts must be finite and non-negative, 1 value is not "
                                        rf"\({shown} at spot 'B1_2', gene 'G7'\); give raw counts$"):
        _import(files, tmp_path / "root", genes=None)  # HEST's rule, where the tracebacks came from
    _nothing_written(tmp_path / "root")


def test_bad_counts_at_import_are_one_line_on_the_command_line(tmp_path: Path) -> None:
    """`bench data import table` with an empty count cell and HEST's gene rule. Before: a raw traceback
    (`ValueError: Input contains NaN.` from the gene rule)."""
    files = {s: _table_sample(tmp_path / "src", s, _grid(4, 100.0), n_genes=60) for s in ("A1", "B1")}
    counts = pd.read_csv(files["A1"]["counts"], dtype=str)
    counts.loc[5, "G3"] = ""
    counts.to_csv(files["A1"]["counts"], index=False)
    args = ["data", "import", "table", "--name", "MINE", "--pixel-size", "1", "--data-root", str(tmp_path / "root")]
    for sid, f in files.items():
        args += ["--sample", f"{sid}={f['table']}", "--image", f"{sid}={f['image']}", "--counts", f"{sid}={f['counts']}"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit) and "Traceback" not in r.output, r.output
    assert (f"{files['A1']['counts']}: A1: counts must be finite and non-negative, 1 value is not (nan at spot 'A1_5', "
            "gene 'G3'); give raw counts") in " ".join(r.output.split())
    _nothing_written(tmp_path / "root")


def test_duplicate_genes_given_at_import_are_kept_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An import's --genes list with repeats: the task's var_50genes.json lists each gene once."""
    files = {s: _table_sample(tmp_path / "src", s, _grid(4, 100.0)) for s in ("A1", "B1")}
    with caplog.at_level(logging.WARNING, logger="stbench"):
        _import(files, tmp_path / "root", genes=["G2", "G0", "G2", "G1", "G0"])
    assert "2 gene names repeat and are kept once (first occurrence): G2, G0; 3 unique genes" in caplog.text
    task = open_task("MINE", tmp_path / "root")
    assert task.genes == ["G2", "G0", "G1"]
    assert json.loads((task.path / "var_50genes.json").read_text())["genes"] == ["G2", "G0", "G1"]


def test_fractional_counts_at_import_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = {s: _table_sample(tmp_path / "src", s, _grid(4, 100.0)) for s in ("A1", "B1")}
    counts = pd.read_csv(files["A1"]["counts"])
    counts["G1"] = counts["G1"] / 3
    counts.to_csv(files["A1"]["counts"], index=False)
    with caplog.at_level(logging.WARNING, logger="stbench"):
        _import(files, tmp_path / "root")
    assert "A1_counts.csv: A1: counts are not whole numbers" in caplog.text and "gene 'G1'" in caplog.text
