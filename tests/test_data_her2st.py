"""The her2st importer on the six real HER2+ sections (read in place from the shared data folder)."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stbench.data.her2st import PATCH_UM, import_her2st
from stbench.data.layout import cut_patch as _cut
from stbench.errors import DataError, StbenchError
from stbench.expression import read_counts
from stbench.tasks import PatchFile, open_task

pytestmark = pytest.mark.realdata
SECTIONS = ["B4", "C2", "C3", "C4", "C5", "C6"]


def _joined_barcodes(source: Path, section: str) -> list[str]:
    """Spots with both a selected spotfile row and a count row, computed here independently of the importer."""
    spots = pd.read_csv(source / "data" / "ST-spotfiles" / f"{section}_selection.tsv", sep="\t")
    spots = spots[spots["selected"] == 1]
    placed = {f"{x}x{y}" for x, y in zip(spots["x"], spots["y"])}
    counted = pd.read_csv(source / "data" / "ST-cnts" / f"{section}.tsv.gz", sep="\t", usecols=[0]).iloc[:, 0]
    return [b for b in counted.astype(str) if b in placed]


def _header_genes(source: Path, section: str) -> list[str]:
    with gzip.open(source / "data" / "ST-cnts" / f"{section}.tsv.gz", "rt") as fh:
        return fh.readline().rstrip("\n").split("\t")[1:]


def _link_subset(source: Path, dest: Path, sections: list[str], with_image: list[str]) -> Path:
    """A her2st-shaped folder of symlinks to the real files: counts and spots for ``sections``, images for some."""
    for sub in ("ST-cnts", "ST-spotfiles"):
        (dest / "data" / sub).mkdir(parents=True, exist_ok=True)
    for s in sections:
        (dest / "data" / "ST-cnts" / f"{s}.tsv.gz").symlink_to(source / "data" / "ST-cnts" / f"{s}.tsv.gz")
        name = f"{s}_selection.tsv"
        (dest / "data" / "ST-spotfiles" / name).symlink_to(source / "data" / "ST-spotfiles" / name)
    for s in with_image:
        (dest / "data" / "ST-imgs" / s[0] / s).mkdir(parents=True)
        for jpg in (source / "data" / "ST-imgs" / s[0] / s).glob("*.jpg"):
            (dest / "data" / "ST-imgs" / s[0] / s / jpg.name).symlink_to(jpg)
    return dest


def test_patient_split_holds_out_b4(her2st_task_root: Path) -> None:
    task = open_task("her2st", her2st_task_root)  # lower case: names are matched case-insensitively
    assert sorted(task.samples) == SECTIONS
    assert len(task.folds) == 2
    tests = sorted(f.test for f in task.folds)
    assert tests == [("B4",), ("C2", "C3", "C4", "C5", "C6")]
    for fold in task.folds:
        assert set(fold.train) | set(fold.test) == set(SECTIONS)
    assert task.synthetic is False
    assert task.meta["split"] == "patient" and task.meta["importer"] == "stbench.data.her2st"
    assert task.meta["skipped"] == {}


def test_patches_match_joined_spots(her2st_task_root: Path, her2st_source: Path) -> None:
    task = open_task("HER2ST", her2st_task_root)
    for sid in SECTIONS:
        expected = _joined_barcodes(her2st_source, sid)
        with PatchFile(task.samples[sid].patches) as pf:
            assert pf.patch_shape == (224, 224, 3)
            assert len(pf) == len(expected) == task.meta["sections"][sid]["n_spots"]
            assert pf.barcodes == expected  # count-file order, nothing lost or invented
            first = next(pf.iter_chunks(8))[1]
            assert first.dtype == np.uint8 and first.shape == (8, 224, 224, 3)
            assert np.issubdtype(pf.coords.dtype, np.integer)
        adata = read_counts(task.samples[sid].adata)
        assert set(expected) <= set(adata.obs_names)
    assert 275 <= task.meta["sections"]["B4"]["n_spots"] <= 284  # 283 count rows, 284 spotfile rows


def test_scale_and_coords(her2st_task_root: Path) -> None:
    import h5py

    task = open_task("HER2ST", her2st_task_root)
    for sid in SECTIONS:
        um = task.meta["sections"][sid]["um_per_px"]
        assert 0.6 < um < 0.8
        with h5py.File(task.samples[sid].patches) as h5:
            assert h5.attrs["pixel_size"] == pytest.approx(0.5)
            assert h5.attrs["patch_size_target"] == 224
            assert h5.attrs["source_um_per_px"] == pytest.approx(um, abs=1e-4)
            coords = h5["coords"][()]
        adata = read_counts(task.samples[sid].adata)
        side = round(PATCH_UM / um)
        centres = coords + side / 2  # coords are the crop's top-left corner in full-resolution pixels
        np.testing.assert_allclose(centres, adata.obsm["spatial"], atol=1.0)
        np.testing.assert_allclose(adata.obsm["spatial"], adata.obs[["pixel_x", "pixel_y"]].to_numpy())
    ums = [task.meta["sections"][s]["um_per_px"] for s in SECTIONS]
    assert max(ums) - min(ums) < 0.02  # one scanner, one protocol: the fitted scales agree


def test_patch_is_the_crop_at_coords(
    her2st_task_root: Path, her2st_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-cut one spot straight from the JPEG at the stored corner: same pixels (x is the column)."""
    from PIL import Image

    task = open_task("HER2ST", her2st_task_root)
    side = round(PATCH_UM / task.meta["sections"]["C2"]["um_per_px"])
    with PatchFile(task.samples["C2"].patches) as pf:
        i = len(pf) // 2
        x0, y0 = (int(v) for v in pf.coords[i])
        stored = next(pf.iter_chunks(1, start=i))[1][0]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with Image.open(next((her2st_source / "data" / "ST-imgs" / "C" / "C2").glob("*.jpg"))) as im:
        ref = np.asarray(im.crop((x0, y0, x0 + side, y0 + side)).resize((224, 224), Image.BILINEAR))
    assert np.abs(ref.astype(int) - stored.astype(int)).mean() < 1.0


def test_patches_are_mostly_tissue(her2st_task_root: Path) -> None:
    task = open_task("HER2ST", her2st_task_root)
    for sid in SECTIONS:
        with PatchFile(task.samples[sid].patches) as pf:
            white = np.concatenate([(b.min(axis=-1) > 220).mean(axis=(1, 2)) for _, b in pf.iter_chunks(64)])
        assert (white < 0.5).mean() > 0.9, f"{sid}: too many blank patches, crops off the tissue?"


def test_counts_genes_and_gene_list(her2st_task_root: Path, her2st_source: Path) -> None:
    task = open_task("HER2ST", her2st_task_root)
    common = set(_header_genes(her2st_source, SECTIONS[0]))
    for sid in SECTIONS[1:]:
        common &= set(_header_genes(her2st_source, sid))
    adatas = {sid: read_counts(task.samples[sid].adata) for sid in SECTIONS}
    var = list(adatas["B4"].var_names)
    assert set(var) == common and len(var) == task.meta["n_genes_common"]
    for sid, a in adatas.items():
        assert list(a.var_names) == var, f"{sid}: genes differ between sections"
        for col in ("array_x", "array_y", "pixel_x", "pixel_y"):
            assert col in a.obs
        x = a.X.toarray()
        assert (x >= 0).all() and np.array_equal(x, np.round(x)), "raw integer counts expected"
    genes = json.loads((task.path / "var_50genes.json").read_text())["genes"]
    assert len(genes) == len(set(genes)) == 50 and set(genes) <= set(var)
    assert not any("BLANK" in g or "Control" in g for g in genes)
    # A few spots of B4 carry exactly the source table's numbers.
    source = pd.read_csv(her2st_source / "data" / "ST-cnts" / "B4.tsv.gz", sep="\t", index_col=0, nrows=5)
    sub = adatas["B4"][list(source.index), genes[:10]].X.toarray()
    np.testing.assert_array_equal(sub, source[genes[:10]].to_numpy())


def test_section_split_has_six_folds(her2st_source: Path, tmp_path: Path) -> None:
    import_her2st(her2st_source, tmp_path, name="HER2ST_SEC", split="section", progress=False)
    task = open_task("HER2ST_SEC", tmp_path)
    assert len(task.folds) == 6
    assert sorted(f.test for f in task.folds) == [(s,) for s in SECTIONS]
    assert task.meta["split"] == "section"


def test_missing_image_is_skipped_with_a_message(
    her2st_source: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = _link_subset(her2st_source, tmp_path / "src", ["B4", "C2", "C3"], with_image=["B4", "C2"])
    with caplog.at_level(logging.WARNING, logger="stbench"):
        path = import_her2st(src, tmp_path / "root", progress=True)  # also runs the progress bar code
    assert any("C3" in r.getMessage() and "skipping" in r.getMessage() for r in caplog.records)
    task = open_task("HER2ST", tmp_path / "root")
    assert path == task.path
    assert sorted(task.samples) == ["B4", "C2"] and len(task.folds) == 2
    assert "C3" in task.meta["skipped"]
    # Genes: the intersection over the imported sections only.
    assert task.meta["n_genes_common"] == len(set(_header_genes(src, "B4")) & set(_header_genes(src, "C2")))

    before = (task.path / "task.json").read_text()
    with pytest.raises(StbenchError, match="already exists"):
        import_her2st(src, tmp_path / "root", progress=False)
    assert (task.path / "task.json").read_text() == before
    import_her2st(src, tmp_path / "root", overwrite=True, progress=False)
    assert sorted(open_task("HER2ST", tmp_path / "root").samples) == ["B4", "C2"]
    assert not [p for p in (tmp_path / "root").iterdir() if p.name.startswith(".")], "temporary folders left"


def test_second_import_without_overwrite_raises(her2st_task_root: Path, her2st_source: Path) -> None:
    with pytest.raises(StbenchError, match="already exists"):
        import_her2st(her2st_source, her2st_task_root, progress=False)
    assert len(open_task("HER2ST", her2st_task_root).folds) == 2


def test_missing_source_and_empty_source(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere"):
        import_her2st(missing, tmp_path / "root", progress=False)
    (tmp_path / "empty" / "data" / "ST-cnts").mkdir(parents=True)
    with pytest.raises(DataError, match="no count files"):
        import_her2st(tmp_path / "empty", tmp_path / "root", progress=False)
    assert not (tmp_path / "root" / "HER2ST").exists()


def test_only_one_patient_left_is_an_error(her2st_source: Path, tmp_path: Path) -> None:
    src = _link_subset(her2st_source, tmp_path / "src", ["B4", "C2"], with_image=["C2"])
    with pytest.raises(DataError, match="two groups"):
        import_her2st(src, tmp_path / "root", progress=False)
    assert not (tmp_path / "root" / "HER2ST").exists()


def test_cut_pads_with_white_outside_the_image() -> None:
    from PIL import Image

    image = Image.new("RGB", (100, 80), (10, 20, 30))
    inside = _cut(image, 10, 10, 50)
    assert (inside == [10, 20, 30]).all()
    corner = _cut(image, -50, -50, 100)  # only the bottom-right quarter overlaps the image
    assert (corner[:100, :100] == 255).all() and (corner[-100:, -100:] == [10, 20, 30]).all()
    assert corner.shape == (224, 224, 3) and corner.dtype == np.uint8
