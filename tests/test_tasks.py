"""Reading HEST task folders: names and aliases, folds from the folder, and one-line errors on bad input."""

import json
import re

import h5py
import numpy as np
import pytest

from stbench.errors import DataError, StbenchError
from stbench.tasks import Fold, PatchFile, Sample, canonical_task_name, find_task_dir, open_task
from tests._tiny import make_tiny_task


@pytest.mark.parametrize("typed,folder", [("luad", "LUNG"), ("Lung", "LUNG"), ("lymph-idc", "LYMPH_IDC"),
                                          ("lymph idc", "LYMPH_IDC"), ("ccrcc", "CCRCC"), ("skcm", "SKCM"),
                                          ("LymphIDC", "LYMPH_IDC"), ("lymph", "LYMPH_IDC"), ("rcc", "CCRCC"),
                                          ("her2", "HER2ST"), ("HER-2", "HER2ST"), (" idc ", "IDC")])
def test_task_names_are_case_insensitive_with_aliases(typed, folder):
    assert canonical_task_name(typed) == folder


def test_reader_takes_folds_from_the_folder(tmp_path):
    make_tiny_task(tmp_path, n_samples=4)
    task = open_task("tiny", tmp_path)
    assert task.name == "TINY" and len(task.folds) == 4 and len(task.samples) == 4
    assert task.folds[0].test == ("S0",) and set(task.folds[0].train) == {"S1", "S2", "S3"}
    assert len(task.genes) == 20 and task.synthetic
    with PatchFile(task.samples["S0"].patches) as pf:
        assert len(pf) == 24 and pf.patch_shape == (224, 224, 3)
        chunks = list(pf.iter_chunks(10))
        assert [len(c) for _, c in chunks] == [10, 10, 4] and chunks[0][1].dtype == np.uint8
        assert pf.barcodes[0] == "S0-0"


def test_unknown_task_suggests_and_missing_hest_task_says_fetch(tmp_path):
    make_tiny_task(tmp_path)
    with pytest.raises(StbenchError, match="Did you mean: TINY"):
        find_task_dir("tinny", tmp_path)
    with pytest.raises(StbenchError, match="bench data fetch --task skcm"):
        find_task_dir("skcm", tmp_path)
    with pytest.raises(StbenchError, match="bench data import her2st --source"):
        find_task_dir("her2st", tmp_path)


def test_empty_split_and_missing_test_split_are_errors(tmp_path):
    path = make_tiny_task(tmp_path)
    (path / "splits" / "test_1.csv").write_text("sample_id,patches_path,expr_path\n")
    with pytest.raises(DataError, match="test_1.csv: empty split"):
        open_task("TINY", tmp_path)
    (path / "splits" / "test_1.csv").unlink()
    with pytest.raises(DataError, match="test_1.csv: missing"):
        open_task("TINY", tmp_path)


def test_bad_gene_list_file(tmp_path):
    path = make_tiny_task(tmp_path)
    (path / "var_50genes.json").write_text(json.dumps({"nope": []}))
    with pytest.raises(DataError, match=r'var_50genes\.json: not a gene list: expected JSON '
                                        r'\{"genes": \[\.\.\.\]\}$'):
        open_task("TINY", tmp_path)


def test_patch_file_problems_name_the_file(tmp_path):
    path = make_tiny_task(tmp_path)
    f = path / "patches" / "S0.h5"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 3])  # truncated download
    with pytest.raises(DataError, match=r"S0\.h5: cannot open as HDF5"):
        PatchFile(f)
    with h5py.File(f, "w") as h5:
        h5["barcode"] = np.array([[b"a"], [b"b"]])
        h5["coords"] = np.zeros((2, 2))
    with pytest.raises(DataError, match=r"S0\.h5: patch file has no 'img' dataset "
                                        r"\(found: \['barcode', 'coords'\]\)"):
        PatchFile(f)
    with h5py.File(f, "w") as h5:
        h5["img"] = np.zeros((2, 224, 224, 3), np.uint8)
        h5["barcode"] = np.array([[b"a"], [b"a"]])
        h5["coords"] = np.zeros((2, 2))
    with pytest.raises(DataError, match=r"S0\.h5: duplicate barcode 'a' in 'barcode'"):
        PatchFile(f)


def test_a_sample_in_both_train_and_test_of_a_fold_is_refused_by_name(tmp_path):
    path = make_tiny_task(tmp_path)  # leave-one-out over S0, S1, S2: fold 0 tests S0, trains on S1, S2
    (path / "splits" / "test_0.csv").write_text(
        "sample_id,patches_path,expr_path\nS0,patches/S0.h5,adata/S0.h5ad\nS2,patches/S2.h5,adata/S2.h5ad\n")
    with pytest.raises(DataError, match=r"test_0\.csv: samples in both train and test of fold 0: \['S2'\]"):
        open_task("TINY", tmp_path)


def test_hidden_folders_such_as_an_import_in_progress_are_not_tasks(tmp_path):
    from stbench.tasks import list_task_dirs

    for name in ("REAL", ".REAL.tmp-host-123-456-0123abcd", ".OLD.old-1a2b3c4d", ".hidden"):
        (tmp_path / name / "splits").mkdir(parents=True)
    assert list_task_dirs(tmp_path) == [tmp_path / "REAL"]
    with pytest.raises(StbenchError, match="unknown task"):
        find_task_dir(".hidden", tmp_path)


def _task_folder(root, name="T", folds=None, genes=("G1", "G2"), header="sample_id,patches_path,expr_path"):
    """A task folder holding only what `open_task` reads: split files and the gene list (no data)."""
    path = root / name
    (path / "splits").mkdir(parents=True)
    for i, (train, test) in (folds or {0: (["A", "B"], ["C"])}).items():
        for part, ids in (("train", train), ("test", test)):
            rows = [header] + [f"{s},patches/{s}.h5,adata/{s}.h5ad" for s in ids]
            (path / "splits" / f"{part}_{i}.csv").write_text("\n".join(rows) + "\n")
    (path / "var_50genes.json").write_text(json.dumps({"genes": list(genes)}))
    return path


def test_a_task_without_task_json_is_real_data_with_empty_metadata(tmp_path):
    path = _task_folder(tmp_path, "Mine")
    task = open_task("mine", tmp_path)
    assert (task.name, task.path, task.meta, task.synthetic) == ("Mine", path, {}, False)
    assert task.genes == ["G1", "G2"]
    assert task.folds == [Fold(0, ("A", "B"), ("C",))]


def test_folds_are_numbered_by_their_file_names_in_numeric_order(tmp_path):
    path = _task_folder(tmp_path, folds={2: (["A"], ["B"]), 10: (["B"], ["A"]), 0: (["A"], ["C"])})
    (path / "splits" / "train_x.csv").write_text("not a split\n")  # neither train_<i>.csv: ignored
    (path / "splits" / "train_1.csv.bak").write_text("not a split\n")
    task = open_task("T", tmp_path)
    assert [(f.index, f.train, f.test) for f in task.folds] == [(0, ("A",), ("C",)), (2, ("A",), ("B",)),
                                                                (10, ("B",), ("A",))]


def test_a_task_without_train_splits_says_so(tmp_path):
    path = _task_folder(tmp_path)
    for f in (path / "splits").glob("train_*.csv"):
        f.rename(f.with_name("training_" + f.name))
    with pytest.raises(DataError, match=r"splits: no train_<i>\.csv split files$"):
        open_task("T", tmp_path)


def test_split_paths_default_to_the_hest_layout_and_given_ones_are_kept(tmp_path):
    path = _task_folder(tmp_path)
    (path / "splits" / "train_0.csv").write_text(
        "sample_id,patches_path,expr_path\n A ,  img/a.h5 , counts/a.h5ad \nB,,\n")
    (path / "splits" / "test_0.csv").write_text("sample_id\nC\n")  # HEST paths are optional columns
    task = open_task("T", tmp_path)
    assert task.samples == {"A": Sample("A", path / "img/a.h5", path / "counts/a.h5ad"),
                            "B": Sample("B", path / "patches/B.h5", path / "adata/B.h5ad"),
                            "C": Sample("C", path / "patches/C.h5", path / "adata/C.h5ad")}


def test_a_quoted_field_is_read_byte_for_byte_as_the_csv_module_needs_newline_empty(tmp_path):
    """Python's csv module reads quoted line breaks correctly only from a file opened with newline='': with
    universal newlines a quoted CRLF would silently become LF and name another file."""
    path = _task_folder(tmp_path)
    (path / "splits" / "train_0.csv").write_bytes(
        b'sample_id,patches_path,expr_path\r\nA,"img/a\r\nb.h5",counts/a.h5ad\r\nB,,\r\n')
    task = open_task("T", tmp_path)
    assert task.samples["A"].patches == path / "img" / "a\r\nb.h5"
    assert task.samples["B"].patches == path / "patches" / "B.h5"


def test_a_split_file_without_sample_id_column_is_refused(tmp_path):
    _task_folder(tmp_path, header="id,patches_path,expr_path")
    with pytest.raises(DataError, match=r"train_0\.csv: split file has no sample_id column "
                                        r"\(expected sample_id,patches_path,expr_path\)$"):
        open_task("T", tmp_path)


def test_an_unreadable_split_file_names_the_file_and_the_reason(tmp_path):
    path = _task_folder(tmp_path)
    (path / "splits" / "test_0.csv").unlink()
    (path / "splits" / "test_0.csv").mkdir()  # exists, cannot be read as a file
    with pytest.raises(DataError, match=r"test_0\.csv: cannot read split file \(Is a directory\)$"):
        open_task("T", tmp_path)


def test_a_missing_gene_list_says_which_file_hest_tasks_have(tmp_path):
    path = _task_folder(tmp_path)
    (path / "var_50genes.json").unlink()
    with pytest.raises(DataError, match=r"var_50genes\.json: gene list missing \(every HEST task has "
                                        r"var_50genes\.json\)$"):
        open_task("T", tmp_path)


@pytest.mark.parametrize("genes", [[], ["G1", 7]], ids=["empty", "non-string"])
def test_an_empty_or_non_string_gene_list_is_refused(tmp_path, genes):
    _task_folder(tmp_path, genes=genes)
    with pytest.raises(DataError, match=r"var_50genes\.json: gene list is empty or holds non-strings$"):
        open_task("T", tmp_path)


def _patch_file(path, n=3, img=None, barcode=None, coords=None, **img_options):
    """A small patch file (8x8 patches: the reader does not require 224), with any dataset overridden."""
    with h5py.File(path, "w") as h5:
        h5.create_dataset("img", data=np.zeros((n, 8, 8, 3), np.uint8) if img is None else img, **img_options)
        h5["barcode"] = np.array([[f"b{i}".encode()] for i in range(n)]) if barcode is None else barcode
        h5["coords"] = np.zeros((n, 2)) if coords is None else coords
    return path


def test_a_missing_patch_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nope\.h5: patch file does not exist$"):
        PatchFile(tmp_path / "nope.h5")


@pytest.mark.parametrize("img", [np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 8, 8, 4), np.uint8),
                                 np.zeros((2, 8, 3), np.uint8)], ids=["float", "rgba", "3-d"])
def test_img_must_be_n_h_w_3_uint8(tmp_path, img):
    f = _patch_file(tmp_path / "p.h5", n=2, img=img)
    with pytest.raises(DataError, match=rf"p\.h5: 'img' must be \(N,H,W,3\) uint8, found "
                                        rf"{re.escape(str(img.shape))} {img.dtype}$"):
        PatchFile(f)


def test_an_empty_patch_file_is_refused_and_a_single_patch_is_fine(tmp_path):
    with pytest.raises(DataError, match=r"p\.h5: patch file holds no patches$"):
        PatchFile(_patch_file(tmp_path / "p.h5", n=0))
    with PatchFile(_patch_file(tmp_path / "one.h5", n=1)) as pf:
        assert len(pf) == 1 and pf.barcodes == ["b0"] and pf.coords.shape == (1, 2)


@pytest.mark.parametrize("n_barcodes,n_coords", [(2, 3), (3, 4)])
def test_barcode_and_coords_must_count_one_per_patch(tmp_path, n_barcodes, n_coords):
    f = _patch_file(tmp_path / "p.h5", n=3, barcode=np.array([[f"b{i}".encode()] for i in range(n_barcodes)]),
                    coords=np.zeros((n_coords, 2)))
    with pytest.raises(DataError, match=rf"p\.h5: 'img' has 3 patches but 'barcode' {n_barcodes} "
                                        rf"and 'coords' {n_coords}$"):
        PatchFile(f)


def test_the_duplicated_barcode_is_the_one_named(tmp_path):
    f = _patch_file(tmp_path / "p.h5", n=3, barcode=np.array([[b"a"], [b"b"], [b"b"]]))
    with pytest.raises(DataError, match=r"p\.h5: duplicate barcode 'b' in 'barcode'$"):
        PatchFile(f)


def test_a_corrupt_patch_chunk_fails_the_read_naming_the_file(tmp_path):
    f = _patch_file(tmp_path / "p.h5", n=4, img=np.full((4, 8, 8, 3), 7, np.uint8), chunks=(2, 8, 8, 3),
                    compression="gzip")
    with h5py.File(f, "r") as h5:
        chunk = h5["img"].id.get_chunk_info(1)  # patches 2-3, compressed
    with f.open("r+b") as fh:  # metadata intact, so the file opens and validates; the data is garbage
        fh.seek(chunk.byte_offset)
        fh.write(b"\xff" * chunk.size)
    with PatchFile(f) as pf:
        chunks = pf.iter_chunks(2)
        assert next(chunks)[0] == 0
        with pytest.raises(DataError, match=r"p\.h5: failed reading 'img', truncated file\? \("):
            next(chunks)


def test_her2st_spelled_with_a_hyphen_finds_its_folder():
    assert canonical_task_name("her2-st") == canonical_task_name("HER2_ST") == "HER2ST"


def test_a_corrupt_task_json_is_a_one_line_error_naming_it(tmp_path):
    path = make_tiny_task(tmp_path)
    (path / "task.json").write_text("{not json")
    with pytest.raises(DataError, match=r"task\.json: not valid JSON .*fix it or delete it"):
        open_task("TINY", tmp_path)


def test_a_split_file_saved_with_a_byte_order_mark_is_read(tmp_path):
    path = make_tiny_task(tmp_path)
    split = path / "splits" / "test_0.csv"
    split.write_bytes(b"\xef\xbb\xbf" + split.read_bytes())  # as Excel saves CSV
    assert open_task("TINY", tmp_path).folds[0].test == ("S0",)


# -- one sample under two ids (issue 15): by resolved path, in open_task -----------------------------------------

@pytest.mark.parametrize("kind", ["patch", "count"])
def test_a_test_sample_naming_a_training_samples_file_is_refused_by_name(tmp_path, kind):
    from stbench.tasks import _check_same_files

    (tmp_path / "sub").mkdir()
    train = [Sample("A", tmp_path / "A.h5", tmp_path / "A.h5ad"), Sample("B", tmp_path / "B.h5", tmp_path / "B.h5ad")]
    # the same file written another way: through ../, which resolve() removes
    same = {"patch": tmp_path / "sub" / ".." / "B.h5", "count": tmp_path / "sub" / ".." / "B.h5ad"}
    fresh = {"patch": tmp_path / "C.h5", "count": tmp_path / "C.h5ad"}
    test = [Sample("C", fresh["patch"], fresh["count"]),
            Sample("B2", same["patch"] if kind == "patch" else tmp_path / "B2.h5",
                   same["count"] if kind == "count" else tmp_path / "B2.h5ad")]
    with pytest.raises(DataError) as err:
        _check_same_files(train, test, tmp_path / "test_3.csv", 3)
    name = "B.h5" if kind == "patch" else "B.h5ad"
    assert str(err.value) == (f"{tmp_path / 'test_3.csv'}: test sample 'B2' of fold 3 names the {kind} file of "
                              f"training sample 'B' ({name}): one sample under two ids leaks the test fold into "
                              "training")


def test_samples_with_their_own_files_pass_the_same_file_check(tmp_path):
    from stbench.tasks import _check_same_files

    train = [Sample("A", tmp_path / "A.h5", tmp_path / "A.h5ad")]
    # a test sample whose patch file has the name of a training sample's count file is not the same file kind
    _check_same_files(train, [Sample("C", tmp_path / "C.h5", tmp_path / "C.h5ad")], tmp_path / "t.csv", 0)
    _check_same_files(train, [Sample("D", tmp_path / "A.h5ad", tmp_path / "D.h5ad")], tmp_path / "t.csv", 0)


def test_a_gene_list_with_repeats_is_read_once_each(tmp_path):
    make_tiny_task(tmp_path, "TINY", n_samples=2)
    path = tmp_path / "TINY" / "var_50genes.json"
    path.write_text(json.dumps({"genes": ["G002", "G001", "G002"]}))
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("stbench").addHandler(handler)
    try:
        assert open_task("tiny", tmp_path).genes == ["G002", "G001"]
    finally:
        logging.getLogger("stbench").removeHandler(handler)
    assert records[0].getMessage().startswith(f"{path}: 1 gene names repeat")


def test_open_task_refuses_a_test_row_that_names_a_training_samples_files(tmp_path):
    make_tiny_task(tmp_path, "TINY", n_samples=3)
    splits = tmp_path / "TINY" / "splits"
    train_row = (splits / "train_0.csv").read_text().splitlines()[1].split(",")
    with (splits / "test_0.csv").open("a") as fh:
        fh.write(",".join(["ALIAS", *train_row[1:]]) + "\n")
    with pytest.raises(DataError) as err:
        open_task("tiny", tmp_path)
    assert str(err.value).startswith(f"{splits / 'test_0.csv'}: test sample 'ALIAS' of fold 0 names the patch file "
                                     f"of training sample {train_row[0]!r}")
