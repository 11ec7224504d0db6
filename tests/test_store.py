"""The store: atomic HDF5 embedding files and the DuckDB catalog (migrations, transactions)."""

import json

import duckdb
import numpy as np
import pytest

from stbench import metrics
from stbench.errors import StoreError
from stbench.stores import Catalog, EmbeddingWriter, Store, read_embeddings
from stbench.stores.catalog import SCHEMA_VERSION, FoldRecord


def _writer(path, n=5, dim=3):
    return EmbeddingWriter(path, n=n, dim=dim, barcodes=[f"b{i}" for i in range(n)],
                           coords=np.arange(2 * n).reshape(n, 2), attrs={"encoder": "e", "weights_fingerprint": "sha256:ab"})


def test_embedding_file_appears_only_when_complete(tmp_path):
    path = tmp_path / "e" / "s.h5"
    w = _writer(path)
    w.write(0, np.ones((3, 3), np.float32))
    assert not path.exists()
    with pytest.raises(StoreError, match="only 3 of 5"):
        w.commit()
    assert not path.exists() and list(path.parent.iterdir()) == []  # temporary file removed too
    w = _writer(path)
    w.write(0, np.ones((3, 3), np.float32))
    w.write(3, 2 * np.ones((2, 3), np.float32))
    w.commit()
    emb = read_embeddings(path)
    assert emb.embeddings.shape == (5, 3) and emb.embeddings[4, 0] == 2
    assert emb.barcodes[0] == "b0" and emb.attrs["encoder"] == "e"
    assert emb.attrs["stbench-encoding-type"] == "stbench-embeddings"


def test_unreadable_embedding_file_says_what_to_do(tmp_path):
    bad = tmp_path / "x.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(StoreError, match="delete it and rerun"):
        read_embeddings(bad)


def test_catalog_migrates_once_and_refuses_newer_schema(tmp_path):
    path = tmp_path / "catalog.duckdb"
    with Catalog(path) as cat:
        assert cat.schema_version == SCHEMA_VERSION
    with Catalog(path) as cat:  # reopening applies nothing twice
        assert cat.schema_version == SCHEMA_VERSION
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO _stbench_migrations VALUES ('m999_future', now())")
    con.close()
    with pytest.raises(StoreError, match="newer stbench"):
        Catalog(path)


def _run(run_id="r1"):
    return {"run_id": run_id, "task": "T", "task_fingerprint": "tf", "synthetic": False, "encoder": "e",
            "weights_fingerprint": "w", "reducer": "pca", "reducer_options": "{}", "protocol": "{}",
            "protocol_fingerprint": "p", "seed": 1, "solver": "lsqr", "alpha_rule": "hest", "gene_rule": "task",
            "n_folds": 2, "stbench_version": "0"}


def _fold(i, pcc):
    pcc = np.asarray(pcc)
    return FoldRecord(fold=i, n_train=10, n_test=5, n_features=3, alpha=0.1, genes=["G1", "G2"], pcc=pcc,
                      mse=np.array([1.0, 2.0]), summary=metrics.summarise_fold(pcc, np.array([1.0, 2.0])),
                      per_sample={"s1": (pcc, np.array([1.0, 2.0]), 5)}, train_samples=["a"], test_samples=["s1"],
                      seconds=0.1)


def test_fold_rows_are_written_in_one_transaction(tmp_path):
    with Catalog(tmp_path / "c.duckdb") as cat:
        run = _run()
        cat.start_run(run)
        cat.write_fold(run, _fold(0, [0.5, np.nan]))
        bad = _fold(1, [0.1, 0.2])
        bad.per_sample = {"s1": (bad.pcc, bad.mse, "not-an-int")}  # fails inside the transaction
        with pytest.raises(Exception):
            cat.write_fold(run, bad)
        assert cat.folds_done("r1") == {0}
        assert cat.con.execute("SELECT count(*) FROM gene_results WHERE fold=1").fetchall() == [(0,)]
        genes = cat.gene_table(run_ids=["r1"])
        assert genes["pcc"].to_list()[0] == 0.5 and np.isnan(genes["pcc"].to_list()[1])  # NaN stored as NaN
        cat.write_fold(run, _fold(1, [0.1, 0.3]))
        cat.finish_run("r1")
        s = cat.summary().to_dicts()[0]
        assert s["folds"] == 2 and s["n_nan"] == 1
        assert s["pcc_mean"] == pytest.approx((0.5 + 0.2) / 2)
        assert json.loads(cat.fold_table("r1")["genes"][0]) == ["G1", "G2"]


def test_force_restart_deletes_old_rows(tmp_path):
    with Store(tmp_path) as st:
        run = _run()
        st.catalog.start_run(run)
        st.catalog.write_fold(run, _fold(0, [0.5, 0.1]))
        st.catalog.start_run(run, force=True)
        assert st.catalog.folds_done("r1") == set()
        assert st.catalog.run_status("r1") == "running"
        assert st.embedding_path("T", "enc", "sha256:abc", "S1").name == "S1.h5"


def test_read_only_catalog_that_does_not_exist(tmp_path):
    with pytest.raises(StoreError, match="run `bench run` first"):
        Catalog(tmp_path / "nope.duckdb", read_only=True)


def _fold12(i, shift=0.0):
    """A fold of 12 genes (so PCC-10 exists and differs from the mean), one of them without a PCC."""
    pcc = np.concatenate([np.arange(1, 12) / 20.0 + shift, [np.nan]])
    mse = np.arange(12, dtype=np.float64) + 1
    genes = [f"G{k:02d}" for k in range(12)]
    return FoldRecord(fold=i, n_train=10, n_test=5, n_features=3, alpha=0.1, genes=genes, pcc=pcc, mse=mse,
                      summary=metrics.summarise_fold(pcc, mse), per_sample={}, train_samples=["a"],
                      test_samples=["s1"], seconds=0.1)


def test_stored_fold_row_is_what_its_gene_rows_give(tmp_path):
    with Catalog(tmp_path / "c.duckdb") as cat:
        run = _run()
        cat.start_run(run)
        cat.write_fold(run, _fold12(0))
        f = cat.fold_table("r1").to_dicts()[0]
        pcc = np.arange(1, 12) / 20.0  # the 11 defined PCCs, computed here
        assert f["pcc_mean"] == pytest.approx(pcc.mean(), rel=1e-12)
        assert f["pcc_std"] == pytest.approx(np.sqrt(((pcc - pcc.mean()) ** 2).mean()), rel=1e-12)
        assert f["pcc10"] == pytest.approx(np.sort(pcc)[-10:].mean(), rel=1e-12)
        assert f["mse_mean"] == pytest.approx(6.5, rel=1e-12) and (f["n_genes"], f["n_nan"]) == (12, 1)
        assert f["pcc50"] is None or np.isnan(f["pcc50"])


def test_run_summary_std_is_the_population_std_of_its_fold_rows(tmp_path):
    with Catalog(tmp_path / "c.duckdb") as cat:
        run = _run()
        cat.start_run(run)
        cat.write_fold(run, _fold12(0))
        cat.write_fold(run, _fold12(1, shift=0.2))
        cat.finish_run("r1")
        folds = [f["pcc_mean"] for f in cat.fold_table("r1").to_dicts()]
        s = cat.summary().to_dicts()[0]
        assert folds[1] - folds[0] == pytest.approx(0.2)
        assert s["pcc_mean"] == pytest.approx(np.mean(folds), rel=1e-12)
        assert s["pcc_std"] == pytest.approx(0.1, rel=1e-9)  # population std of two values 0.2 apart
        assert cat.inconsistencies() == []


def test_a_fold_that_contradicts_its_gene_rows_is_refused_and_nothing_is_written(tmp_path):
    with Catalog(tmp_path / "c.duckdb") as cat:
        run = _run()
        cat.start_run(run)
        bad = _fold12(0)
        bad.summary = metrics.FoldSummary(**{**bad.summary.__dict__, "pcc_mean": bad.summary.pcc_top[10]})
        with pytest.raises(StoreError, match="inconsistent fold: run r1 fold 0: pcc_mean"):
            cat.write_fold(run, bad)
        assert cat.folds_done("r1") == set()
        assert cat.con.execute("SELECT count(*) FROM gene_results").fetchall() == [(0,)]


@pytest.mark.parametrize("sql,needle", [
    ("UPDATE fold_results SET pcc_mean = pcc10", "pcc_mean"),
    ("UPDATE fold_results SET pcc_std = pcc_std * 1.01", "pcc_std"),
    ("UPDATE fold_results SET n_nan = 0", "n_nan 0 but 1"),
    ("UPDATE fold_results SET mse_mean = mse_mean * 12", "mse_mean"),
    ("DELETE FROM gene_results WHERE gene = 'G03'", "n_genes 12 but 11"),
    ("UPDATE gene_results SET alpha = 0.2 WHERE gene = 'G05'", "another alpha"),
    ("DELETE FROM fold_results WHERE fold = 1", "complete with 1 of 2 folds"),
])
def test_inconsistencies_name_what_disagrees(tmp_path, sql, needle):
    with Catalog(tmp_path / "c.duckdb") as cat:
        run = _run()
        cat.start_run(run)
        cat.write_fold(run, _fold12(0))
        cat.write_fold(run, _fold12(1, shift=0.1))
        cat.finish_run("r1")
        assert cat.inconsistencies() == []
        cat.con.execute(sql)
        problems = cat.inconsistencies()
        assert problems and any(needle in p for p in problems), problems


# -- integrity: a checksum of every embedding file -------------------------------------------------------


def _committed(path, n=5, dim=3):
    w = _writer(path, n=n, dim=dim)
    w.write(0, np.arange(n * dim, dtype=np.float32).reshape(n, dim) / 7)
    return w.commit()


def test_a_flipped_bit_in_the_embeddings_is_a_one_line_error_naming_the_file_and_the_fix(tmp_path):
    import h5py

    path = _committed(tmp_path / "s.h5")
    with h5py.File(path, "r+") as h5:  # rewritten through HDF5 itself: an HDF5 checksum would follow the edit
        row = h5["embeddings"][2]
        row.view(np.uint32)[1] ^= 1  # the lowest mantissa bit of one float
        h5["embeddings"][2] = row
    with pytest.raises(StoreError) as err:
        read_embeddings(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: checksum mismatch")
    assert "delete it and rerun" in message and "bench store verify --repair" in message
    from stbench.stores.embeddings import embedding_checksum_ok

    assert embedding_checksum_ok(path) is False and embedding_checksum_ok(_committed(tmp_path / "t.h5")) is True


def test_a_flipped_bit_in_the_file_bytes_is_caught(tmp_path):
    import h5py

    path = _committed(tmp_path / "s.h5")
    with h5py.File(path, "r") as h5:
        offset = h5["embeddings"].id.get_offset()  # contiguous float32 data starts here
    data = bytearray(path.read_bytes())
    data[offset + 4 * 7] ^= 1  # little-endian: the low byte of the eighth float
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="checksum mismatch"):
        read_embeddings(path)


def test_rows_written_out_of_order_get_the_same_checksum(tmp_path):
    from stbench.stores.embeddings import CHECKSUM_ATTR

    in_order = read_embeddings(_committed(tmp_path / "a.h5"))
    w = _writer(tmp_path / "b.h5")
    rows = np.arange(15, dtype=np.float32).reshape(5, 3) / 7
    w.write(3, rows[3:])
    w.write(0, rows[:3].astype(np.float64))  # converted to float32 before it is stored and hashed
    out_of_order = read_embeddings(w.commit())
    assert out_of_order.attrs[CHECKSUM_ATTR] == in_order.attrs[CHECKSUM_ATTR]
    assert in_order.attrs["stbench-encoding-version"] == 2


def test_version_1_files_without_a_checksum_are_still_read(tmp_path):
    import h5py
    from stbench.stores.embeddings import CHECKSUM_ATTR, embedding_checksum_ok

    path = _committed(tmp_path / "s.h5")
    with h5py.File(path, "r+") as h5:  # as stbench wrote files before checksums
        h5.attrs["stbench-encoding-version"] = 1
        del h5.attrs[CHECKSUM_ATTR]
    assert embedding_checksum_ok(path) is None
    assert read_embeddings(path).embeddings.shape == (5, 3)


def test_a_new_writer_removes_what_a_killed_one_left_and_keeps_a_live_ones(tmp_path):
    import subprocess
    import sys

    from stbench.tempfiles import parse_temp_name, temp_path

    folder = tmp_path / "e"
    live = _writer(folder / "a.h5")  # open in this process: its temporary file must survive
    me = parse_temp_name(live.tmp.name)
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    dead = folder / f".b.h5.tmp-{me.host}-{child.pid}-{me.start}-0123abcd"
    dead.write_bytes(b"half an HDF5 file")
    assert temp_path(folder / "b.h5").name != dead.name
    _committed(folder / "b.h5")
    assert sorted(p.name for p in folder.iterdir()) == sorted([live.tmp.name, "b.h5"])
    live.abort()
