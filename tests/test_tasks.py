"""Reading HEST task folders: names and aliases, folds from the folder, and one-line errors on bad input."""

import json

import h5py
import numpy as np
import pytest

from stbench.errors import DataError, StbenchError
from stbench.tasks import PatchFile, canonical_task_name, find_task_dir, open_task
from tests._tiny import make_tiny_task


@pytest.mark.parametrize("typed,folder", [("luad", "LUNG"), ("Lung", "LUNG"), ("lymph-idc", "LYMPH_IDC"),
                                          ("lymph idc", "LYMPH_IDC"), ("ccrcc", "CCRCC"), ("skcm", "SKCM")])
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
    with pytest.raises(DataError, match="var_50genes.json: not a gene list"):
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
    with pytest.raises(DataError, match="no 'img' dataset"):
        PatchFile(f)
    with h5py.File(f, "w") as h5:
        h5["img"] = np.zeros((2, 224, 224, 3), np.uint8)
        h5["barcode"] = np.array([[b"a"], [b"a"]])
        h5["coords"] = np.zeros((2, 2))
    with pytest.raises(DataError, match="duplicate barcode 'a'"):
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
