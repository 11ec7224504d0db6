"""Bring-your-own-data importers: geometry, splits, the refusals on generated data, and the real files.

Real files are read in place from the shared data folder: scanpy's spaceranger-1.0.0 fixture (100 spots, lowres
image only) and the six HER2+ sections, which the generic table importer must turn into the same task as the
dedicated her2st importer.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from stbench.cli import cli
from stbench.data.assemble import make_folds, nearest_neighbour_um, read_patients
from stbench.data.layout import background_mask, cut_patch, kfold_groups, patch_boxes
from stbench.data.table import import_table
from stbench.data.visium import import_visium, visium_scale
from stbench.errors import DataError, StbenchError
from stbench.expression import read_counts
from stbench.tasks import PatchFile, open_task

from .conftest import require_shared

PINK = (214, 140, 190)


# ---------------------------------------------------------------- pure pieces


def test_visium_scale_follows_the_65um_definition() -> None:
    s = visium_scale({"spot_diameter_fullres": 130.0, "tissue_hires_scalef": 0.2, "tissue_lowres_scalef": 0.05})
    assert s.um_per_px == pytest.approx(0.5) and s.hires_scalef == 0.2 and s.lowres_scalef == 0.05
    with pytest.raises(DataError, match="spot_diameter_fullres"):
        visium_scale({"spot_diameter_fullres": 0})


def test_patch_boxes() -> None:
    side, corners = patch_boxes(np.array([[100.0, 300.0], [0.0, 0.0]]), 0.5)
    assert side == 224 and corners.tolist() == [[-12, 188], [-112, -112]]
    side, corners = patch_boxes(np.array([[100.0, 300.0]]), 1.0)
    assert side == 112 and corners.tolist() == [[44, 244]]
    assert patch_boxes(np.array([[5.0, 5.0]]), 50.0)[0] == 2  # a coarse image: 112 um is 2 px, never 0


def test_background_mask() -> None:
    glass = np.full((1, 224, 224, 3), 240, np.uint8)
    tissue = np.broadcast_to(np.array(PINK, np.uint8), (1, 224, 224, 3))
    black = np.zeros((1, 224, 224, 3), np.uint8)
    assert background_mask(np.concatenate([glass, tissue, black])).tolist() == [True, False, False]


def test_splits() -> None:
    samples = ["a1", "a2", "b1", "c1", "d1"]
    patients = {"a1": "A", "a2": "A", "b1": "B", "c1": "C", "d1": "D"}
    assert make_folds("patient", samples, patients)[0] == (["b1", "c1", "d1"], ["a1", "a2"])
    assert len(make_folds("sample", samples, None)) == 5
    folds = make_folds("kfold:2", samples, patients)  # groups A,C in fold 0; B,D in fold 1
    assert folds == [(["b1", "d1"], ["a1", "a2", "c1"]), (["a1", "a2", "c1"], ["b1", "d1"])]
    assert len(kfold_groups({s: s for s in samples}, 5)) == 5
    with pytest.raises(DataError, match="kfold:6"):
        make_folds("kfold:6", samples, None)
    with pytest.raises(StbenchError, match="--patients"):
        make_folds("patient", samples, None)
    with pytest.raises(StbenchError, match="unknown split"):
        make_folds("random", samples, None)
    with pytest.raises(DataError, match="no patient given"):
        make_folds("patient", samples, {"a1": "A"})


def test_read_patients(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("sample_id,patient\nS1,P1\nS2,P1\n")
    (tmp_path / "p.tsv").write_text("S1\tP1\nS2\tP2\n")
    assert read_patients(tmp_path / "p.csv") == {"S1": "P1", "S2": "P1"}
    assert read_patients(tmp_path / "p.tsv") == {"S1": "P1", "S2": "P2"}
    (tmp_path / "bad.csv").write_text("S1\n")
    with pytest.raises(DataError, match="two columns"):
        read_patients(tmp_path / "bad.csv")


# ---------------------------------------------------------------- generated data


def _tissue_image(path: Path, size: tuple[int, int], tissue: tuple[int, int, int, int] | None = None) -> Path:
    """A noisy pink image; with ``tissue`` (x0, y0, x1, y1) only that box is tissue, the rest glass."""
    rng = np.random.default_rng(0)
    w, h = size
    arr = np.clip(np.array(PINK) + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    if tissue is not None:
        glass = np.full_like(arr, 242)
        x0, y0, x1, y1 = tissue
        glass[y0:y1, x0:x1] = arr[y0:y1, x0:x1]
        arr = glass
    Image.fromarray(arr).save(path)
    return path


def _table_sample(folder: Path, sid: str, xy: np.ndarray, *, n_genes: int = 12, drop: int = 0,
                  image_size: tuple[int, int] = (600, 600), tissue: tuple[int, int, int, int] | None = None) -> dict:
    """A table + counts (CSV) + image for one sample; ``drop`` removes count rows (ids without counts)."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"{sid}_{i}" for i in range(len(xy))]
    table = pd.DataFrame({"id": ids, "x": xy[:, 0], "y": xy[:, 1], "patient": sid[0]})
    table.to_csv(folder / f"{sid}.csv", index=False)
    rng = np.random.default_rng(len(xy))
    counts = pd.DataFrame(rng.poisson(5, (len(xy), n_genes)), columns=[f"G{i}" for i in range(n_genes)])
    counts.insert(0, "id", ids)
    counts.iloc[drop:].to_csv(folder / f"{sid}_counts.csv", index=False)
    return {"table": folder / f"{sid}.csv", "counts": folder / f"{sid}_counts.csv",
            "image": _tissue_image(folder / f"{sid}.png", image_size, tissue)}


def _grid(n: int, pitch: float, origin: float = 100.0) -> np.ndarray:
    ij = np.array([(i, j) for i in range(n) for j in range(n)], dtype=float)
    return origin + ij * pitch


def _import(files: dict[str, dict], root: Path, **kw) -> Path:  # noqa: ANN003
    kw.setdefault("pixel_size", 1.0)
    kw.setdefault("genes", ["G0", "G1", "G2"])
    return import_table({s: f["table"] for s, f in files.items()}, {s: f["image"] for s, f in files.items()},
                        {s: f["counts"] for s, f in files.items()}, root, "MINE", **kw)


def _nothing_written(root: Path) -> None:
    assert not (root / "MINE").exists()
    assert not root.exists() or not [p for p in root.iterdir() if p.name.startswith(".")], "temporary folder left"


def test_table_import_writes_a_readable_task(tmp_path: Path) -> None:
    files = {s: _table_sample(tmp_path / "src", s, _grid(4, 100.0)) for s in ("A1", "A2", "B1")}
    path = _import(files, tmp_path / "root", split="patient", patient_col="patient", spot_pitch=100.0)
    task = open_task("mine", tmp_path / "root")
    assert path == task.path and sorted(task.samples) == ["A1", "A2", "B1"] and task.genes == ["G0", "G1", "G2"]
    assert sorted(f.test for f in task.folds) == [("A1", "A2"), ("B1",)]
    with PatchFile(task.samples["A1"].patches) as pf:
        assert pf.barcodes == [f"A1_{i}" for i in range(16)]
        assert pf.coords[0].tolist() == [44, 44]  # centre 100 px at 1 um/px, 112 px patch
        first = next(pf.iter_chunks(1))[1][0]
    with Image.open(files["A1"]["image"]) as im:
        np.testing.assert_array_equal(first, cut_patch(im.convert("RGB"), 44, 44, 112))  # x is the column
    adata = read_counts(task.samples["B1"].adata)
    raw = pd.read_csv(files["B1"]["counts"], index_col=0)
    np.testing.assert_array_equal(adata.X.toarray(), raw.loc[adata.obs_names].to_numpy())
    assert task.meta["samples"]["A1"]["patient"] == "A" and task.meta["importer"] == "stbench.data.table"


def test_coordinates_outside_the_image_are_refused(tmp_path: Path) -> None:
    files = {s: _table_sample(tmp_path / "src", s, _grid(4, 100.0), image_size=(350, 600)) for s in ("A1", "B1")}
    msg = r"A1: 4 of 16 spot centres lie outside the 350 x 600 px image \(e.g. A1_12 at x=400, y=100\): wrong image"
    with pytest.raises(DataError, match=msg):
        _import(files, tmp_path / "root")
    _nothing_written(tmp_path / "root")


def test_pixel_size_that_breaks_the_grid_is_refused(tmp_path: Path) -> None:
    files = {s: _table_sample(tmp_path / "src", s, _grid(4, 100.0)) for s in ("A1", "B1")}
    with pytest.raises(DataError, match=r"neighbouring spots are 50.0 um apart, not 100 um"):
        _import(files, tmp_path / "root", pixel_size=0.5, spot_pitch=100.0)
    _nothing_written(tmp_path / "root")


def test_ids_without_counts_are_refused(tmp_path: Path) -> None:
    files = {"A1": _table_sample(tmp_path / "src", "A1", _grid(4, 100.0), drop=3),
             "B1": _table_sample(tmp_path / "src", "B1", _grid(4, 100.0))}
    with pytest.raises(DataError, match=r"A1: 3 of 16 ids of the table match no count row \(e.g. 'A1_0'\)"):
        _import(files, tmp_path / "root")
    _nothing_written(tmp_path / "root")


def test_unreadable_image_is_refused(tmp_path: Path) -> None:
    files = {s: _table_sample(tmp_path / "src", s, _grid(4, 100.0)) for s in ("A1", "B1")}
    files["B1"]["image"].write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"B1\.png: cannot read image"):
        _import(files, tmp_path / "root")
    _nothing_written(tmp_path / "root")


def test_swapped_axes_are_refused_as_background(tmp_path: Path) -> None:
    """Tissue only in a band x < 300: spots placed with x and y swapped land on glass."""
    xy = np.array([(x, y) for x in (60, 160, 260) for y in range(60, 1000, 100)], dtype=float)
    files = {s: _table_sample(tmp_path / "src", s, xy, image_size=(1000, 1000), tissue=(0, 0, 320, 1000))
             for s in ("A1", "B1")}
    _import(files, tmp_path / "ok")  # the right way round
    with pytest.raises(DataError, match=r"A1: \d+% of patches are background .*x and y swapped"):
        _import(files, tmp_path / "root", x_col="y", y_col="x")
    _nothing_written(tmp_path / "root")
    _import(files, tmp_path / "root", x_col="y", y_col="x", max_background=1.0)  # the user's override
    assert (tmp_path / "root" / "MINE").is_dir()


def _spaceranger(folder: Path, *, diameter: float = 65.0, image_size: tuple[int, int] = (1000, 900),
                 extra_barcode: bool = False) -> tuple[Path, Path]:
    """A spaceranger-shaped outs/ (Matrix Market, tissue_positions.csv with header) on a 100 um hex grid at
    1 um/px, and its full-resolution image."""
    import scipy.io
    import scipy.sparse as sp

    spatial = folder / "outs" / "spatial"
    spatial.mkdir(parents=True)
    rows = [(r, c) for r in range(8) for c in range(16) if (r + c) % 2 == 0]
    barcodes = [f"BC{i:04d}-1" for i in range(len(rows))]
    pos = pd.DataFrame({
        "barcode": barcodes, "in_tissue": 1, "array_row": [r for r, _ in rows], "array_col": [c for _, c in rows],
        "pxl_row_in_fullres": [100 + r * 100 * np.sqrt(3) / 2 for r, _ in rows],
        "pxl_col_in_fullres": [100 + c * 50 for _, c in rows],
    })
    pos.to_csv(spatial / "tissue_positions.csv", index=False)
    (spatial / "scalefactors_json.json").write_text(json.dumps({
        "spot_diameter_fullres": diameter, "tissue_hires_scalef": 0.5, "tissue_lowres_scalef": 0.1,
        "fiducial_diameter_fullres": 100.0}))
    mtx = folder / "outs" / "filtered_feature_bc_matrix"
    mtx.mkdir()
    counts = np.random.default_rng(1).poisson(3, (len(barcodes), 10))
    with gzip.open(mtx / "matrix.mtx.gz", "wb") as fh:
        scipy.io.mmwrite(fh, sp.coo_matrix(counts.T))  # features x barcodes, as 10x writes it
    with gzip.open(mtx / "barcodes.tsv.gz", "wt") as fh:
        fh.write("\n".join(barcodes + (["ZZZZ-1"] if extra_barcode else [])) + "\n")
    if extra_barcode:  # one more matrix column than positions
        with gzip.open(mtx / "matrix.mtx.gz", "wb") as fh:
            scipy.io.mmwrite(fh, sp.coo_matrix(np.vstack([counts, counts[:1]]).T))
    with gzip.open(mtx / "features.tsv.gz", "wt") as fh:
        fh.write("".join(f"ENSG{i:05d}\tGENE{i}\tGene Expression\n" for i in range(10)))
    return folder / "outs", _tissue_image(folder / "he.png", image_size)


def test_visium_full_resolution_import(tmp_path: Path) -> None:
    outs, image = _spaceranger(tmp_path / "s")
    nn = nearest_neighbour_um(pd.read_csv(outs / "spatial" / "tissue_positions.csv")[
        ["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(), 1.0)
    assert nn == pytest.approx(100.0)
    (tmp_path / "patients.csv").write_text("S1,P1\nS2,P2\n")
    r = CliRunner().invoke(cli, [
        "data", "import", "visium", "--name", "MINE", "--sample", f"S1={outs}", "--sample", f"S2={outs}",
        "--image", f"S1={image}", "--image", f"S2={image}", "--patients", str(tmp_path / "patients.csv"),
        "--genes", str(_genes(tmp_path, ["GENE1", "GENE3"])), "--data-root", str(tmp_path / "root")])
    assert r.exit_code == 0, r.output
    assert "S1: 64 patches cut at 1 um/px" in r.output and "split patient" in r.output
    task = open_task("MINE", tmp_path / "root")
    assert task.genes == ["GENE1", "GENE3"] and sorted(f.test for f in task.folds) == [("S1",), ("S2",)]
    with PatchFile(task.samples["S1"].patches) as pf:
        assert pf.coords[0].tolist() == [44, 44] and len(pf) == 64
    assert task.meta["samples"]["S1"]["um_per_px"] == 1.0 and task.meta["samples"]["S1"]["lowres"] is False


def _genes(tmp_path: Path, genes: list[str]) -> Path:
    (tmp_path / "genes.txt").write_text("\n".join(genes) + "\n")
    return tmp_path / "genes.txt"


def test_visium_refusals(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outs, image = _spaceranger(tmp_path / "a", diameter=130.0)  # says 0.5 um/px: the grid becomes 50 um
    with pytest.raises(DataError, match=r"S1: at 0.5 um/px .* neighbouring spots are 50.0 um apart on the array grid, "
                                           r"not 100 um"):
        import_visium({"S1": outs, "S2": outs}, root, "MINE", images={"S1": image, "S2": image}, genes=["GENE1"])
    outs, image = _spaceranger(tmp_path / "b", extra_barcode=True)
    with pytest.raises(DataError, match=r"S1: 1 of 65 barcodes of filtered_feature_bc_matrix have no spot position"):
        import_visium({"S1": outs, "S2": outs}, root, "MINE", images={"S1": image, "S2": image}, genes=["GENE1"])
    outs, image = _spaceranger(tmp_path / "c", image_size=(500, 500))
    with pytest.raises(DataError, match=r"S1: 44 of 64 spot centres lie outside the 500 x 500 px image"):
        import_visium({"S1": outs, "S2": outs}, root, "MINE", images={"S1": image, "S2": image}, genes=["GENE1"])
    with pytest.raises(StbenchError, match=r"S1: no full-resolution H&E: pass --image S1=PATH"):
        import_visium({"S1": outs, "S2": outs}, root, "MINE", genes=["GENE1"])
    _nothing_written(root)
    r = CliRunner().invoke(cli, ["data", "import", "visium", "--name", "MINE", "--sample", f"S1={outs}",
                                 "--sample", f"S2={outs}", "--image", f"S1={tmp_path / 'none.tif'}",
                                 "--image", f"S2={image}", "--data-root", str(root)])
    assert r.exit_code == 2 and "cannot read image" in r.output and "Traceback" not in r.output
    _nothing_written(root)


# ---------------------------------------------------------------- real files


def test_scanpy_visium_fixture_with_lowres(tmp_path: Path) -> None:
    import h5py

    src = require_shared("scanpy_visium_1.0.0")
    factors = json.loads((src / "spatial" / "scalefactors_json.json").read_text())
    pos = pd.read_csv(src / "spatial" / "tissue_positions_list.csv", header=None, index_col=0)
    with h5py.File(src / "filtered_feature_bc_matrix.h5") as h5:
        barcodes = [b.decode() for b in h5["matrix/barcodes"][()]]
        genes = [g.decode() for g in h5["matrix/features/name"][()]]
    r = CliRunner().invoke(cli, [
        "data", "import", "visium", "--name", "VIS", "--sample", f"A={src}", "--sample", f"B={src}",
        "--allow-lowres", "--genes", str(_genes(tmp_path, genes[:5])), "--data-root", str(tmp_path / "root")])
    assert r.exit_code == 0, r.output
    um_full = 65 / factors["spot_diameter_fullres"]
    um_low = um_full / factors["tissue_lowres_scalef"]
    assert f"A: 100 patches cut at {um_low:.4g} um/px (low-resolution image" in r.output
    task = open_task("VIS", tmp_path / "root")
    info = task.meta["samples"]["A"]
    assert info["image"].endswith("tissue_lowres_image.png")  # the hires PNG of this fixture is blank
    assert info["um_per_px"] == pytest.approx(um_full, abs=1e-5) and info["n_spots"] == len(barcodes) == 100
    assert info["image_um_per_px"] == pytest.approx(um_low, abs=1e-4)
    with PatchFile(task.samples["A"].patches) as pf:
        assert pf.barcodes == barcodes
        side = round(112 / um_full)
        centres = pos.loc[barcodes, [5, 4]].to_numpy(float)  # pxl_col, pxl_row = x, y in full resolution
        np.testing.assert_allclose(pf.coords + side / 2, centres, atol=1.0)
        patches = next(pf.iter_chunks(100))[1]
    assert background_mask(patches).mean() < 0.1  # in-tissue spots land on tissue
    adata = read_counts(task.samples["A"].adata)
    assert list(adata.obs_names) == barcodes and list(adata.var_names) == genes
    np.testing.assert_allclose(adata.obsm["spatial"], centres)
    assert adata.X.sum() > 0 and np.array_equal(adata.X.toarray(), np.round(adata.X.toarray()))
    with pytest.raises(StbenchError, match="--allow-lowres"):
        import_visium({"A": src, "B": src}, tmp_path / "root2", "VIS", genes=genes[:5])


@pytest.mark.realdata
def test_her2st_through_the_table_importer_gives_the_same_task(
    her2st_task_root: Path, her2st_source: Path, tmp_path: Path
) -> None:
    """Tables built here from the her2st files (spotfile joined to the count file, pixel size fitted on the
    200 um grid) + the count files themselves: same samples, spots, counts, genes, splits and patches."""
    ref = open_task("HER2ST", her2st_task_root)
    tables, images, counts, sizes = {}, {}, {}, {}
    for sid in sorted(ref.samples):
        spots = pd.read_csv(her2st_source / "data" / "ST-spotfiles" / f"{sid}_selection.tsv", sep="\t")
        spots = spots[spots["selected"] == 1].assign(id=lambda d: d["x"].astype(str) + "x" + d["y"].astype(str))
        spots = spots.drop_duplicates("id").set_index("id")
        cnt = her2st_source / "data" / "ST-cnts" / f"{sid}.tsv.gz"
        order = pd.read_csv(cnt, sep="\t", usecols=[0]).iloc[:, 0].astype(str)
        joined = spots.loc[[b for b in order if b in spots.index]]
        table = pd.DataFrame({"id": joined.index, "px": joined["pixel_x"], "py": joined["pixel_y"], "patient": sid[0]})
        table.to_csv(tmp_path / f"{sid}.csv", index=False)
        slopes = [abs(np.polyfit(joined[a], joined[p], 1)[0]) for a, p in (("x", "pixel_x"), ("y", "pixel_y"))]
        tables[sid], counts[sid], sizes[sid] = tmp_path / f"{sid}.csv", cnt, 200.0 / float(np.mean(slopes))
        images[sid] = next((her2st_source / "data" / "ST-imgs" / sid[0] / sid).glob("*.jpg"))
    import_table(tables, images, counts, tmp_path / "root", "HER2T", pixel_size=sizes, x_col="px", y_col="py",
                 patient_col="patient", spot_pitch=200.0, split="patient")
    new = open_task("HER2T", tmp_path / "root")
    assert sorted(new.samples) == sorted(ref.samples)
    assert [(f.train, f.test) for f in new.folds] == [(f.train, f.test) for f in ref.folds]
    assert new.genes == ref.genes
    for sid in ref.samples:
        a, b = read_counts(ref.samples[sid].adata), read_counts(new.samples[sid].adata)
        assert list(a.obs_names) == list(b.obs_names) and list(a.var_names) == list(b.var_names)
        assert (a.X != b.X).nnz == 0
        np.testing.assert_allclose(a.obsm["spatial"], b.obsm["spatial"])
        with PatchFile(ref.samples[sid].patches) as pa, PatchFile(new.samples[sid].patches) as pb:
            assert pa.barcodes == pb.barcodes
            np.testing.assert_array_equal(pa.coords, pb.coords)
            for (_, x), (_, y) in zip(pa.iter_chunks(128), pb.iter_chunks(128)):
                assert np.abs(x.astype(int) - y.astype(int)).mean() < 0.5


def test_xenium_alias_parquet_h5ad_and_per_sample_pixel_size(tmp_path: Path) -> None:
    """The CLI path: `import xenium` = `import table`; parquet table + counts, h5ad counts, ID=UM pixel sizes."""
    import anndata as ad

    a = _table_sample(tmp_path / "src", "A1", _grid(4, 100.0))
    b = _table_sample(tmp_path / "src", "B1", _grid(4, 200.0), image_size=(900, 900))  # a 2x finer image
    pd.read_csv(a["table"]).to_parquet(tmp_path / "A1.parquet")
    pd.read_csv(a["counts"]).to_parquet(tmp_path / "A1_counts.parquet")
    raw = pd.read_csv(b["counts"], index_col=0)
    adata = ad.AnnData(raw.to_numpy(np.float32), obs=pd.DataFrame(index=raw.index), var=pd.DataFrame(index=raw.columns))
    adata.write_h5ad(tmp_path / "B1.h5ad")
    args = ["data", "import", "xenium", "--name", "MINE", "--sample", f"A1={tmp_path / 'A1.parquet'}",
            "--sample", f"B1={b['table']}", "--image", f"A1={a['image']}", "--image", f"B1={b['image']}",
            "--counts", f"A1={tmp_path / 'A1_counts.parquet'}", "--counts", f"B1={tmp_path / 'B1.h5ad'}",
            "--genes", str(_genes(tmp_path, ["G3", "G1"])), "--spot-pitch", "100",
            "--data-root", str(tmp_path / "root")]
    r = CliRunner().invoke(cli, [*args, "--pixel-size", "A1=1.0"])
    assert r.exit_code != 0 and "--pixel-size has no value for samples ['B1']" in r.output
    r = CliRunner().invoke(cli, [*args, "--pixel-size", "A1=1.0", "--pixel-size", "B1=oops"])
    assert r.exit_code == 2 and "--pixel-size" in r.output
    r = CliRunner().invoke(cli, [*args, "--pixel-size", "A1=1.0", "--pixel-size", "B1=0.5", "--split", "kfold:2"])
    assert r.exit_code == 0, r.output
    assert "B1: 16 patches cut at 0.5 um/px" in r.output and "split kfold:2" in r.output
    task = open_task("MINE", tmp_path / "root")
    assert task.genes == ["G3", "G1"] and sorted(f.test for f in task.folds) == [("A1",), ("B1",)]
    with PatchFile(task.samples["B1"].patches) as pf:
        assert pf.coords[0].tolist() == [-12, -12]  # 112 um = 224 px at 0.5 um/px, centred on (100, 100)
    np.testing.assert_array_equal(read_counts(task.samples["B1"].adata).X.toarray(), raw.to_numpy())
