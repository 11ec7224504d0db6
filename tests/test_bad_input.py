"""Issue 15: bad input refused early and by name, before anything is written; own data as it really comes.

Every case makes its own data. Each failed on the code before the fix (the failure it gave is in the test's
docstring): bad counts, options and embeddings became FAILED cells with failed run rows, aliases leaked the
test fold, duplicate genes contradicted the stored means, a demo name wrote outside the data root, and the
valid own-data layouts were refused.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from stbench.cli import cli
from stbench.encoders import encoders
from stbench.errors import DataError, ProtocolError, StbenchError, StoreError
from stbench.protocol import Protocol
from stbench.runner import ReducerChoice, check_task, run_task
from stbench.stores import Catalog, Store
from stbench.tasks import open_task
from tests._tiny import make_tiny_task, tiny_encoder


@pytest.fixture(scope="module", autouse=True)
def _tiny_encoder():
    if "test-tiny-cnn" not in encoders:
        encoders.register(tiny_encoder(), origin="tests")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_tiny_task(tmp_path / "data")
    return tmp_path / "data"


def _bench_run(root: Path, store: Path, *extra: str):  # noqa: ANN202
    return CliRunner().invoke(cli, ["run", "--task", "tiny", "--encoder", "test-tiny-cnn", "--reducer", "identity",
                                    "--data-root", str(root), "--store", str(store), "--no-progress", "--device", "cpu",
                                    *extra])


def _no_run_rows(store: Path) -> None:
    """Nothing was written for the refused input: no catalog, or one without run rows."""
    if (store / "catalog.duckdb").exists():
        with Catalog(store / "catalog.duckdb", read_only=True) as cat:
            assert cat.con.execute("SELECT count(*) FROM runs").fetchone() == (0,)


def _set_count(path: Path, row: int, col: int, value: float, *, dense: bool = False) -> None:
    adata = ad.read_h5ad(path)
    x = adata.X.toarray() if sp.issparse(adata.X) else np.array(adata.X)
    x[row, col] = value
    adata.X = x if dense else sp.csr_matrix(x)
    adata.write_h5ad(path)


# ---------------------------------------------------------------- counts


@pytest.mark.parametrize(("value", "shown"), [(np.nan, "nan"), (-3.0, "-3"), (np.inf, "inf")])
def test_bad_counts_in_a_task_are_refused_by_name_before_a_run(root: Path, tmp_path: Path, value: float,
                                                               shown: str) -> None:
    """Before: `FAILED: ValueError: Input y contains NaN.` (no file named) and a failed run row; negatives went
    through log1p with a RuntimeWarning."""
    _set_count(root / "TINY" / "adata" / "S1.h5ad", 3, 5, value)
    r = _bench_run(root, tmp_path / "store")
    assert r.exit_code == 2, r.output
    assert ("S1.h5ad: counts must be finite and non-negative, 1 value is not "
            f"({shown} at spot 'S1-3', gene 'G005'); give raw counts") in " ".join(r.output.split())
    assert "Traceback" not in r.output
    _no_run_rows(tmp_path / "store")


def test_bad_counts_in_a_dense_matrix_and_fractions_warn(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = root / "TINY" / "adata" / "S2.h5ad"
    _set_count(path, 0, 1, 2.5, dense=True)
    task = open_task("tiny", root)
    with caplog.at_level(logging.WARNING, logger="stbench"):
        check_task(task, task.genes)
    assert "S2.h5ad: counts are not whole numbers (e.g. 2.5 at spot 'S2-0', gene 'G001')" in caplog.text
    _set_count(path, 7, 0, -1.0, dense=True)
    with pytest.raises(DataError, match=r"S2\.h5ad: counts must be finite and non-negative, 1 value is not "
                                        r"\(-1 at spot 'S2-7', gene 'G000'\)"):
        check_task(task, task.genes)


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--alpha", "nan", "--alpha must be a finite non-negative number, not 'nan'"),
    ("--alpha", "inf", "--alpha must be a finite non-negative number, not 'inf'"),
    ("--alpha", "-1", "--alpha must be a finite non-negative number, not '-1'"),
    ("--seed", "-5", "--seed must be an integer from 0 to 2**32 - 1"),
    ("--seed", "4294967296", "--seed must be an integer from 0 to 2**32 - 1"),
])
def test_bad_options_are_refused_at_parse_time(root: Path, tmp_path: Path, option: str, value: str,
                                               message: str) -> None:
    """Before: --alpha nan/inf and --seed -5 became FAILED cells with failed run rows."""
    r = _bench_run(root, tmp_path / "store", option, value)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "store").exists()


def test_protocol_refuses_what_the_options_refuse() -> None:
    for alpha in ("nan", float("nan"), "inf", "-inf"):
        with pytest.raises(ProtocolError, match="finite non-negative"):
            Protocol.from_options(alpha=alpha)
    for seed in (-1, 2**32, True, 1.5):
        with pytest.raises(ProtocolError, match="--seed"):
            Protocol.from_options(seed=seed)  # type: ignore[arg-type]
    assert Protocol.from_options(alpha="0", seed=2**32 - 1).alpha == "0.0"
    assert Protocol.from_options(alpha="-0").fingerprint == Protocol.from_options(alpha="0").fingerprint


@pytest.mark.parametrize(("args", "message"), [
    (["data", "demo", "--seed", "-5"], "Invalid value for '--seed': -5 is not in the range 0<=x<=4294967295"),
    (["data", "demo", "--samples", "1"], "Invalid value for '--samples': 1 is not in the range x>=2"),
    (["data", "demo", "--spots", "3"], "Invalid value for '--spots': 3 is not in the range x>=16"),
    (["data", "import", "table", "--spot-pitch", "nan"], "Invalid value for '--spot-pitch': 'nan' is not a number"),
    (["data", "import", "table", "--spot-pitch", "-100"], "Invalid value for '--spot-pitch': -100.0 is not in the range"),
    (["data", "import", "table", "--max-background", "nan"],
     "Invalid value for '--max-background': 'nan' is not a number"),
])
def test_bad_data_options_are_refused_at_parse_time(tmp_path: Path, args: list[str], message: str) -> None:
    """Before: `bench data demo --seed -5` (or too few samples or spots) ended in a traceback from numpy or the
    demo; `--spot-pitch nan` and `--max-background nan` were taken, and turned the checks they drive off (NaN
    passes every comparison)."""
    required = ["--name", "MINE", "--sample", "A=a.csv", "--image", "A=a.png", "--counts", "A=c.csv",
                "--pixel-size", "1"] if args[1] == "import" else []
    r = CliRunner().invoke(cli, [*args, *required, "--data-root", str(tmp_path / "root")])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "root").exists() or not any((tmp_path / "root").iterdir())


# ---------------------------------------------------------------- duplicate genes


def test_duplicate_genes_are_kept_once_and_every_summary_matches_its_rows(
        root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Before: "7 genes from file" for 5 unique genes; the fold stored n_genes 7 and a mean of 7 PCCs over 5
    gene rows (today the catalog refuses that fold, so the run failed)."""
    genes = tmp_path / "genes.txt"
    genes.write_text("G001\nG002\nG001\nG003\nG004\nG002\nG005\n")
    store = tmp_path / "store"
    with caplog.at_level(logging.WARNING, logger="stbench"):
        r = _bench_run(root, store, "--genes", str(genes), "--reducer", "identity,pca")
    assert r.exit_code == 0, r.output
    assert "2 gene names repeat and are kept once (first occurrence): G001, G002; 5 unique genes" in caplog.text
    assert "5 genes from file" in " ".join(r.output.split())
    with Catalog(store / "catalog.duckdb", read_only=True) as cat:
        assert cat.inconsistencies() == []  # every fold row equals its gene rows, every run its folds
        folds = cat.con.execute("SELECT run_id, fold, n_genes, pcc_mean FROM fold_results").fetchall()
        assert len(folds) == 6 and {n for _, _, n, _ in folds} == {5}
        for run_id, fold, _, mean in folds:  # the identity, computed here independently
            pcc = [p for (p,) in cat.con.execute("SELECT pcc FROM gene_results WHERE run_id=? AND fold=?",
                                                 [run_id, fold]).fetchall()]
            assert len(pcc) == 5 and mean == pytest.approx(float(np.mean(pcc)), rel=1e-12)


def test_duplicates_in_a_task_gene_list_and_an_import_gene_list(root: Path, tmp_path: Path) -> None:
    path = root / "TINY" / "var_50genes.json"
    path.write_text(json.dumps({"genes": ["G003", "G001", "G003", "G002"]}))
    assert open_task("tiny", root).genes == ["G003", "G001", "G002"]
    assert Protocol.from_options(genes="file", gene_list=("A", "B", "A")).gene_list == ("A", "B")


# ---------------------------------------------------------------- leakage through aliases


def _add_test_row(root: Path, fold: int, row: str) -> None:
    split = root / "TINY" / "splits" / f"test_{fold}.csv"
    split.write_text(split.read_text() + row + "\n")


def test_a_training_sample_named_again_in_the_test_split_is_refused(root: Path) -> None:
    """Before: accepted (the overlap check compared ids only), and the test fold leaked into training."""
    _add_test_row(root, 0, "S1b,patches/S1.h5,adata/S1.h5ad")  # S1 trains fold 0
    with pytest.raises(DataError, match=r"test_0\.csv: test sample 'S1b' of fold 0 names the patch file of training "
                                        r"sample 'S1' \(S1\.h5\): one sample under two ids leaks"):
        open_task("tiny", root)
    _add_test_row(root, 0, "")  # a different path to the same file counts too
    split = root / "TINY" / "splits" / "test_0.csv"
    split.write_text(split.read_text().replace("S1b,patches/S1.h5,adata/S1.h5ad",
                                               "S1b,patches/S0.h5,patches/../adata/S1.h5ad"))
    with pytest.raises(DataError, match=r"names the count file of training sample 'S1'"):
        open_task("tiny", root)


def test_a_copy_of_a_training_sample_in_the_test_split_is_refused_by_content(root: Path, tmp_path: Path) -> None:
    """Before: accepted; the PCC rose as the test fold was partly trained on."""
    task_dir = root / "TINY"
    shutil.copy(task_dir / "patches" / "S2.h5", task_dir / "patches" / "S9.h5")
    shutil.copy(task_dir / "adata" / "S2.h5ad", task_dir / "adata" / "S9.h5ad")
    _add_test_row(root, 0, "S9,patches/S9.h5,adata/S9.h5ad")
    r = _bench_run(root, tmp_path / "store")
    assert r.exit_code == 2, r.output
    assert ("test_0.csv: test sample 'S9' of fold 0 has the same patch file content as training sample 'S2' "
            "(S9.h5 = S2.h5): one sample under two ids leaks the test fold into training") in " ".join(r.output.split())
    _no_run_rows(tmp_path / "store")


# ---------------------------------------------------------------- names and embeddings


def test_every_reader_of_an_embedding_file_refuses_nan(tmp_path: Path) -> None:
    """`read_embeddings` itself refuses non-finite values naming the file, so `bench explain` and the
    leaderboard's layouts do as the runner does. Before: the values were returned, NaN and all."""
    import re

    from stbench.stores import EmbeddingWriter, read_embeddings

    path = tmp_path / "S1.h5"
    emb = np.ones((3, 4), np.float32)
    emb[1, 0], emb[2, 3] = np.inf, np.nan
    writer = EmbeddingWriter(path, n=3, dim=4, barcodes=["a", "b", "c"], coords=np.zeros((3, 2)), attrs={})
    writer.write(0, emb)
    writer.commit()
    with pytest.raises(StoreError, match=rf"^{re.escape(str(path))}: 2 of 3 embeddings hold NaN or infinite values "
                                         r"\(first: barcode 'b'\); delete the file"):
        read_embeddings(path)


@pytest.mark.parametrize("name", ["../../x", "ABSOLUTE", "a/b", ".hidden", "x/../../y"])
def test_demo_name_cannot_leave_the_data_root(tmp_path: Path, name: str) -> None:
    """Before: `bench data demo --name ../../x` (or an absolute path) wrote a task outside the data root."""
    root = tmp_path / "a" / "b" / "root"
    root.mkdir(parents=True)
    name = str(tmp_path / "abs") if name == "ABSOLUTE" else name  # inside tmp_path: a failure litters nothing
    before = sorted(tmp_path.rglob("*"))
    r = CliRunner().invoke(cli, ["data", "demo", "--name", name, "--spots", "16", "--data-root", str(root)])
    assert r.exit_code != 0 and f"task name {name!r} must be letters, digits, '_', '.' or '-'" in r.output, r.output
    assert sorted(tmp_path.rglob("*")) == before


def test_nan_in_a_stored_embedding_is_refused_naming_the_file(root: Path, tmp_path: Path) -> None:
    """Before: `ValueError: Input X contains NaN.` (no file named) and a failed run row."""
    import h5py

    from stbench.stores import EmbeddingWriter

    store = tmp_path / "store"
    task = open_task("tiny", root)
    with Store(store) as st:
        run_task(task, "test-tiny-cnn", [ReducerChoice("identity")], Protocol.from_options(), st, device="cpu")
    path = next((store / "embeddings").rglob("S1.h5"))
    with h5py.File(path) as h5:  # rewritten through the writer: a valid checksum over a NaN
        emb, barcodes, coords, attrs = h5["embeddings"][()], list(h5["barcodes"].asstr()[()]), h5["coords"][()], \
            {k: v for k, v in h5.attrs.items() if not k.startswith("stbench-")}
    emb[4, 2] = np.nan
    writer = EmbeddingWriter(path, n=len(emb), dim=emb.shape[1], barcodes=barcodes, coords=coords, attrs=attrs)
    writer.write(0, emb)
    writer.commit()
    with Store(store) as st, pytest.raises(StbenchError, match=rf"{path}: 1 of 24 embeddings hold NaN or infinite "
                                                              r"values \(first: barcode 'S1-4'\); delete the file"):
        run_task(open_task("tiny", root), "test-tiny-cnn", [ReducerChoice("pca")], Protocol.from_options(), st,
                 device="cpu")
    with Catalog(store / "catalog.duckdb", read_only=True) as cat:
        assert cat.con.execute("SELECT reducer, status FROM runs").fetchall() == [("identity", "complete")]
