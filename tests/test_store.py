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
