"""The catalog's API, table by table, against values written and computed here: embeddings, runs and their
status, folds, per-sample and per-spot rows, gene selections, summaries and filters, replacing and forgetting
results, and sessions (locks, read-only use, nesting)."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import numpy as np
import pytest

from stbench import metrics
from stbench.errors import StoreError
from stbench.stores.catalog import Catalog, FoldRecord
from stbench.stores.locks import FileLock


def _run(run_id="r1", **kw):
    base = {"run_id": run_id, "task": "TASK", "task_fingerprint": "tf", "synthetic": False, "encoder": "enc",
            "weights_fingerprint": "w", "reducer": "pca", "reducer_options": "{}", "protocol": "{}",
            "protocol_fingerprint": "p", "seed": 1, "solver": "lsqr", "alpha_rule": "hest", "gene_rule": "task",
            "n_folds": 2, "stbench_version": "0"}
    return {**base, **kw}


def _fold(i, pcc, mse=None, *, genes=None, per_sample=None, predictions=None, model_path=None, alpha=0.5):
    pcc = np.asarray(pcc, dtype=float)
    mse = np.arange(1, len(pcc) + 1, dtype=float) if mse is None else np.asarray(mse, dtype=float)
    genes = genes or [f"G{k}" for k in range(len(pcc))]
    return FoldRecord(fold=i, n_train=10 + i, n_test=4, n_features=3, alpha=alpha, genes=genes, pcc=pcc, mse=mse,
                      summary=metrics.summarise_fold(pcc, mse), per_sample=per_sample or {}, train_samples=["a", "b"],
                      test_samples=["s"], seconds=0.25, reducer_report={"k": i} if i else None, model_path=model_path,
                      predictions=predictions)


@pytest.fixture
def cat(tmp_path):
    with Catalog(tmp_path / "c.duckdb") as c:
        yield c


def test_embedding_rows_are_keyed_by_task_encoder_weights_and_sample(cat):
    row = dict(task="T", encoder="e", weights_fingerprint="w1", sample_id="S1", source_fingerprint="sha256:aa",
               path="embeddings/T/e/w1/S1.h5", n_patches=7, dim=3, stbench_version="9")
    cat.add_embedding(**row)
    cat.add_embedding(**{**row, "weights_fingerprint": "w2", "path": "p2", "n_patches": 8})
    assert cat.embedding("T", "e", "w1", "S1") == {"path": "embeddings/T/e/w1/S1.h5", "source_fingerprint": "sha256:aa",
                                                   "n_patches": 7, "dim": 3}
    assert cat.embedding("T", "e", "w2", "S1")["n_patches"] == 8
    assert cat.embedding("T", "e", "w1", "S2") is None and cat.embedding("T", "x", "w1", "S1") is None
    cat.add_embedding(**{**row, "n_patches": 9})  # the same key replaces its row
    assert cat.embedding("T", "e", "w1", "S1")["n_patches"] == 9
    assert cat.embedding_paths("t", "e", "w1") == {"S1": "embeddings/T/e/w1/S1.h5"}  # task matched case-insensitively
    assert cat.embedding_paths("T", "E", "w1") == {}  # encoder names are exact
    cat.forget_embedding("T", "e", "w1", "S1")
    assert cat.embedding("T", "e", "w1", "S1") is None and cat.embedding("T", "e", "w2", "S1") is not None


def test_run_status_goes_running_complete_or_failed_with_its_error(cat):
    assert cat.run_status("r1") is None
    cat.start_run(_run())
    assert cat.run_status("r1") == "running"
    cat.finish_run("r1", error="ValueError: bad")
    row = cat.rows("SELECT status, error, finished_at IS NOT NULL FROM runs")[0]
    assert row == ("failed", "ValueError: bad", True)
    cat.start_run(_run())  # a restart resets the row to running
    cat.finish_run("r1")
    assert cat.rows("SELECT status, error FROM runs") == [("complete", None)]
    assert cat.finished_since("r1", datetime(2000, 1, 1)) and not cat.finished_since("r1", datetime(3000, 1, 1))
    assert not cat.finished_since("nope", datetime(2000, 1, 1))


def test_a_fold_row_holds_what_was_written(cat):
    run = _run()
    cat.start_run(run)
    cat.write_fold(run, _fold(1, [0.5, np.nan, 0.1], model_path="models/r1/fold1-x.pt"))
    f = cat.fold_table("r1").to_dicts()[0]
    assert (f["fold"], f["n_train"], f["n_test"], f["n_features"], f["alpha"]) == (1, 11, 4, 3, 0.5)
    assert (f["n_genes"], f["n_nan"], f["seconds"]) == (3, 1, 0.25)
    assert f["pcc_mean"] == pytest.approx(0.3) and f["pcc_std"] == pytest.approx(0.2)
    assert f["mse_mean"] == pytest.approx(2.0) and f["pcc10"] is None
    assert json.loads(f["train_samples"]) == ["a", "b"] and json.loads(f["test_samples"]) == ["s"]
    assert json.loads(f["genes"]) == ["G0", "G1", "G2"] and json.loads(f["reducer_report"]) == {"k": 1}
    assert f["model_path"] == "models/r1/fold1-x.pt"
    assert cat.folds_done("r1") == {1} and cat.folds_done("r2") == set()
    g = cat.gene_table(run_ids=["r1"]).to_dicts()
    assert [r["gene"] for r in g] == ["G0", "G1", "G2"]
    assert (g[0]["task"], g[0]["encoder"], g[0]["reducer"], g[0]["reducer_options"], g[0]["seed"]) == ("TASK", "enc", "pca", "{}", 1)
    assert (g[0]["n_train"], g[0]["n_test"], g[0]["alpha"], g[0]["protocol_fingerprint"]) == (11, 4, 0.5, "p")
    assert g[0]["pcc"] == 0.5 and math.isnan(g[1]["pcc"]) and g[2]["mse"] == 3.0
    assert len(cat.gene_table()) == 3 and len(cat.gene_table(run_ids=[])) == 0


def test_per_sample_pccs_come_back_by_fold_and_sample_in_gene_order(cat):
    run = _run()
    cat.start_run(run)
    per = {"s2": (np.array([0.3, np.nan]), np.array([1.0, 2.0]), 5), "s1": (np.array([0.1, 0.2]), np.array([3.0, 4.0]), 6)}
    cat.write_fold(run, _fold(0, [0.4, 0.6], genes=["B", "A"], per_sample=per))
    out = cat.sample_pccs("r1")
    assert list(out) == [0] and list(out[0]) == ["s1", "s2"]
    assert out[0]["s1"] == [0.2, 0.1]  # genes in name order: A (second column), then B
    assert out[0]["s2"][0] != out[0]["s2"][0] and out[0]["s2"][1] == 0.3  # NaN kept as NaN
    rows = cat.rows("SELECT sample_id, gene, mse, n_spots FROM sample_gene_results ORDER BY 1, 2")
    assert rows == [("s1", "A", 4.0, 6), ("s1", "B", 3.0, 6), ("s2", "A", 2.0, 5), ("s2", "B", 1.0, 5)]
    assert cat.sample_pccs("other") == {}


def test_two_genes_with_the_same_numbers_in_a_sample_keep_a_row_each(cat):
    # rows are de-duplicated by their key before the batch insert (run, fold, sample, gene): genes whose
    # per-sample PCC, MSE or spot count coincide (two copies of one gene, or two genes silent in a sample) are
    # still two rows
    run = _run()
    cat.start_run(run)
    per = {"s1": (np.array([0.25, 0.25, 0.25]), np.array([1.5, 1.5, 1.5]), 4)}
    cat.write_fold(run, _fold(0, [0.3, 0.3, 0.3], mse=[2.0, 2.0, 2.0], genes=["A", "B", "C"], per_sample=per))
    assert cat.rows("SELECT gene, pcc, mse, n_spots FROM sample_gene_results ORDER BY gene") == [
        ("A", 0.25, 1.5, 4), ("B", 0.25, 1.5, 4), ("C", 0.25, 1.5, 4)]
    assert cat.rows("SELECT gene, pcc FROM gene_results ORDER BY gene") == [("A", 0.3), ("B", 0.3), ("C", 0.3)]


def test_batched_fold_rows_keep_every_float_bit_for_bit(cat):
    # gene, per-sample and sweep rows go in as one Arrow batch each (issue 12): the stored values must be the
    # very floats given, as row-by-row inserts stored them (no float32 detour, NaN stays NaN, subnormals and -0.0)
    run = _run()
    cat.start_run(run)
    odd = np.array([0.1 + 0.2, 5e-324, -0.0, np.nan, 1 / 3])
    per = {"s1": (odd, odd[::-1], 7)}
    rec = _fold(0, odd, mse=np.abs(odd[::-1]) + 1, per_sample=per)
    rec.sweep = ([1e-6, 0.1 + 0.2], np.vstack([odd, odd[::-1]]))
    cat.write_fold(run, rec)
    genes = cat.rows("SELECT pcc, mse FROM gene_results ORDER BY gene")
    samples = cat.rows("SELECT pcc, mse, n_spots FROM sample_gene_results ORDER BY gene")
    sweep = cat.rows("SELECT alpha, pcc FROM alpha_sweep ORDER BY alpha, gene")
    same = lambda a, b: (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    assert all(same(p, float(o)) and same(m, float(abs(r)) + 1) for (p, m), o, r in zip(genes, odd, odd[::-1]))
    assert all(same(p, float(o)) and same(m, float(r)) and n == 7 and type(n) is int
               for (p, m, n), o, r in zip(samples, odd, odd[::-1]))
    assert [a for a, _ in sweep] == [1e-6] * 5 + [0.1 + 0.2] * 5
    assert all(same(p, float(o)) for (_, p), o in zip(sweep, [*odd, *odd[::-1]]))
    assert cat.inconsistencies() == []

def test_spot_predictions_are_one_parquet_file_per_fold_one_row_per_spot_and_gene(cat, tmp_path):
    import pyarrow.parquet as pq

    run = _run()
    cat.start_run(run)
    preds = {"sample_id": np.array(["s", "s", "t"]), "barcode": ["b0", "b1", "c0"],
             "coords": np.array([[1, 2], [3, 4], [5, 6]]),
             "y_true": np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]), "y_pred": np.array([[0.5, 1.5], [2.5, 3.5], [4.5, 5.5]])}
    cat.write_fold(run, _fold(1, [0.1, 0.2], genes=["GA", "GB"], predictions=preds))
    rows = [tuple(r) for r in cat.spot_predictions(["r1"]).sort("barcode", "gene").iter_rows()]
    assert rows == [("r1", 1, "s", "b0", 1.0, 2.0, "GA", 0.0, 0.5), ("r1", 1, "s", "b0", 1.0, 2.0, "GB", 1.0, 1.5),
                    ("r1", 1, "s", "b1", 3.0, 4.0, "GA", 2.0, 2.5), ("r1", 1, "s", "b1", 3.0, 4.0, "GB", 3.0, 3.5),
                    ("r1", 1, "t", "c0", 5.0, 6.0, "GA", 4.0, 4.5), ("r1", 1, "t", "c0", 5.0, 6.0, "GB", 5.0, 5.5)]
    [(rel,)] = cat.rows("SELECT predictions_path FROM fold_results")
    assert rel.startswith("predictions/r1/fold1-") and rel.endswith(".parquet")  # relative to the store root
    first = tmp_path / rel
    meta = pq.ParquetFile(first).metadata
    assert meta.num_rows == 6 and meta.row_group(0).column(7).compression == "ZSTD"
    assert cat.rows("SELECT count(*) FROM spot_predictions") == [(0,)]  # nothing per spot in the catalog itself
    frame = cat.spot_predictions(["r1"], samples=["t"], genes=["GB"])
    assert frame["y_pred"].to_list() == [5.5] and str(frame["y_true"].dtype) == "Float32"
    cat.write_fold(run, _fold(1, [0.1, 0.2], genes=["GA", "GB"], predictions={**preds, "y_pred": preds["y_pred"] + 1}))
    assert len(cat.spot_predictions(["r1"])) == 6 and cat.spot_predictions(["r1"])["y_pred"].min() == 1.5
    assert not first.exists()  # the fold written again replaced its file
    assert len(cat.spot_predictions([])) == 0 and len(cat.spot_predictions(["other"])) == 0


def test_spot_predictions_written_before_parquet_are_still_read(cat):
    run = _run()
    cat.start_run(run)
    cat.write_fold(run, _fold(0, [0.1, 0.2], genes=["GA", "GB"]))
    cat.con.execute("INSERT INTO spot_predictions VALUES ('r1', 0, 's', 'b0', 1, 2, 'GA', 0.25, 0.75)")
    assert [tuple(r) for r in cat.spot_predictions(["r1"]).iter_rows()] == [("r1", 0, "s", "b0", 1.0, 2.0, "GA", 0.25, 0.75)]


def test_a_missing_predictions_file_is_a_one_line_error(cat, tmp_path):
    run = _run()
    cat.start_run(run)
    cat.write_fold(run, _fold(0, [0.1, 0.2], genes=["GA", "GB"], predictions={
        "sample_id": ["s"], "barcode": ["b"], "coords": [[0, 0]], "y_true": [[1.0, 2.0]], "y_pred": [[1.0, 2.0]]}))
    [(rel,)] = cat.rows("SELECT predictions_path FROM fold_results")
    (tmp_path / rel).unlink()
    with pytest.raises(StoreError, match="spot predictions file missing; run `bench store verify --repair`"):
        cat.spot_predictions(["r1"])


def test_gene_selections_are_keyed_by_task_fingerprint_fold_kind_and_key(cat):
    args = dict(task="T", task_fingerprint="tf", fold=0, kind="hvg", stbench_version="0")
    cat.add_selection(**args, key={"n": 200, "samples": ["a"]}, value={"genes": ["X"]})
    cat.add_selection(**args, key={"n": 100, "samples": ["a"]}, value={"genes": ["Y"]})
    cat.add_selection(**{**args, "fold": 1}, key={"n": 200, "samples": ["a"]}, value={"genes": ["Z"]})
    assert cat.selection("tf", 0, "hvg", {"samples": ["a"], "n": 200}) == {"genes": ["X"]}  # key order is irrelevant
    assert cat.selection("tf", 0, "svg", {"n": 200, "samples": ["a"]}) is None
    assert cat.selection("other", 0, "hvg", {"n": 200, "samples": ["a"]}) is None
    assert cat.selections("tf", 0) == {("hvg", '{"n": 100, "samples": ["a"]}'): {"genes": ["Y"]},
                                       ("hvg", '{"n": 200, "samples": ["a"]}'): {"genes": ["X"]}}
    cat.add_selection(**args, key={"n": 200, "samples": ["a"]}, value={"genes": ["W"]})  # replaced
    assert cat.selection("tf", 0, "hvg", {"n": 200, "samples": ["a"]}) == {"genes": ["W"]}


def test_summary_filters_and_orders_runs(cat):
    for rid, task, enc, red, alpha in (("r1", "B", "e1", "pca", "hest"), ("r2", "A", "e2", "identity", "hest"),
                                       ("r3", "A", "e1", "pca", "cv"), ("r4", "A", "e1", "pca", "hest")):
        run = _run(rid, task=task, encoder=enc, reducer=red, alpha_rule=alpha, n_folds=1)
        cat.start_run(run)
        cat.write_fold(run, _fold(0, [0.1, 0.3]))
        if rid != "r4":
            cat.finish_run(rid)
    s = cat.summary()
    assert s["run_id"].to_list() == ["r3", "r2", "r1"]  # by task, encoder, reducer, alpha rule; r4 incomplete
    assert cat.summary(include_incomplete=True)["run_id"].to_list() == ["r3", "r4", "r2", "r1"]
    assert cat.summary(task="a")["run_id"].to_list() == ["r3", "r2"]
    assert cat.summary(encoder="E1")["run_id"].to_list() == ["r3", "r1"]
    assert cat.summary(reducer="identity")["run_id"].to_list() == ["r2"]
    assert cat.summary(run_ids=["r1", "r4"])["run_id"].to_list() == ["r1"] and len(cat.summary(run_ids=[])) == 0
    row = s.row(0, named=True)
    assert (row["folds"], row["n_nan"], row["status"]) == (1, 0, "complete")
    assert row["pcc_mean"] == pytest.approx(0.2) and row["pcc_std"] == 0 and row["alpha_mean"] == 0.5
    assert row["mse_mean"] == pytest.approx(1.5)


def test_fitted_models_lists_complete_runs_with_a_model_for_the_fold_newest_first(cat):
    for rid, model in (("old", "models/old/fold0-a.pt"), ("new", "models/new/fold0-b.pt"), ("none", None)):
        run = _run(rid, reducer="bpbooster-gp", n_folds=1)
        cat.start_run(run)
        cat.write_fold(run, _fold(0, [0.1, 0.3], model_path=model))
        cat.finish_run(rid)
    cat.con.execute("UPDATE runs SET finished_at = finished_at - INTERVAL 1 HOUR WHERE run_id = 'old'")
    models = cat.fitted_models(task="task", encoder="ENC", reducer="bpbooster-gp", fold=0)
    assert models["run_id"].to_list() == ["new", "old"] and models["model_path"].to_list()[0] == "models/new/fold0-b.pt"
    assert len(cat.fitted_models(task="task", encoder="enc", reducer="bpbooster-gp", fold=1)) == 0
    assert len(cat.fitted_models(task="task", encoder="enc", reducer="pca", fold=0)) == 0


def test_start_run_with_force_deletes_every_row_and_file_of_the_run_only(cat, tmp_path):
    for rid in ("r1", "r2"):
        run = _run(rid)
        cat.start_run(run)
        cat.write_fold(run, _fold(0, [0.1, 0.3], per_sample={"s": (np.array([0.1, 0.2]), np.array([1.0, 1.0]), 3)},
                                  predictions={"sample_id": ["s"], "barcode": ["b"], "coords": [[0, 0]],
                                               "y_true": [[1.0, 2.0]], "y_pred": [[1.0, 2.0]]}))
    files = dict(cat.rows("SELECT run_id, predictions_path FROM fold_results"))
    cat.start_run(_run("r1"), force=True)
    for table in ("fold_results", "gene_results", "sample_gene_results"):
        assert cat.rows(f"SELECT DISTINCT run_id FROM {table}") == [("r2",)], table  # noqa: S608
    assert cat.run_status("r1") == "running"
    assert not (tmp_path / files["r1"]).exists() and (tmp_path / files["r2"]).exists()


def test_replace_run_swaps_the_whole_result_in_one_go_and_removes_unused_models(cat, tmp_path):
    run = _run()
    cat.start_run(run)
    old_model = tmp_path / "models" / "r1" / "fold0-old.pt"
    old_model.parent.mkdir(parents=True)
    old_model.write_bytes(b"old")
    for i in (0, 1):
        cat.write_fold(run, _fold(i, [0.1, 0.3], model_path="models/r1/fold0-old.pt" if i == 0 else None))
    cat.finish_run("r1")
    cat.replace_run(run, [_fold(0, [0.5, 0.7]), _fold(1, [0.2, 0.2])])
    assert [round(f["pcc_mean"], 6) for f in cat.fold_table("r1").to_dicts()] == [0.6, 0.2]
    assert cat.run_status("r1") == "complete" and not old_model.exists()
    assert cat.inconsistencies() == []
    bad = _fold(0, [0.9, 0.9])
    bad.summary = metrics.FoldSummary(**{**bad.summary.__dict__, "pcc_mean": 0.1})
    with pytest.raises(StoreError, match="inconsistent fold"):
        cat.replace_run(run, [bad, _fold(1, [0.0, 0.0])])
    assert [round(f["pcc_mean"], 6) for f in cat.fold_table("r1").to_dicts()] == [0.6, 0.2]  # rolled back whole


def test_forget_run_removes_results_and_marks_the_run_failed(cat):
    run = _run()
    cat.start_run(run)
    cat.write_fold(run, _fold(0, [0.1, 0.3]))
    cat.finish_run("r1")
    cat.forget_run("r1")
    assert cat.rows("SELECT status, error FROM runs") == [("failed", "its results were removed by `bench store verify --repair`")]
    assert cat.rows("SELECT count(*) FROM gene_results") == [(0,)] and cat.folds_done("r1") == set()


def test_sessions_nest_and_a_read_only_catalog_refuses_writes(tmp_path):
    path = tmp_path / "c.duckdb"
    with Catalog(path) as cat:
        with cat.session(write=True) as con:
            with cat.session() as inner:  # a read inside a write reuses its connection
                assert inner is con
        with cat.session(), pytest.raises(RuntimeError, match="cannot start inside a read session"):
            with cat.session(write=True):
                pass
        cat.start_run(_run())
    with Catalog(path, read_only=True) as ro:
        assert ro.run_status("r1") == "running" and ro.schema_version >= 3
        with pytest.raises(StoreError, match="open read-only"):
            ro.finish_run("r1")
    with pytest.raises(StoreError, match="no catalog at"):
        Catalog(tmp_path / "missing.duckdb", read_only=True)


def test_a_held_catalog_times_out_with_the_holder_named(tmp_path, monkeypatch):
    path = tmp_path / "c.duckdb"
    Catalog(path).close()
    lock = FileLock(tmp_path / "c.duckdb.lock", what="test")
    lock.acquire()
    try:
        with pytest.raises(StoreError, match=r"still busy after \d+ s \(held by PID \d+"):
            Catalog(path, lock_timeout=0.2)
        monkeypatch.setenv("STBENCH_LOCK_TIMEOUT", "0.1")
        with pytest.raises(StoreError, match="--lock-timeout"):
            Catalog(path, read_only=True)
    finally:
        lock.release()
    with Catalog(path, lock_timeout=0.1) as cat:  # free again
        assert cat.run_status("x") is None


def test_lock_timeout_setting():
    from stbench.stores.locks import DEFAULT_LOCK_TIMEOUT, lock_timeout

    assert lock_timeout(2) == 2.0 and lock_timeout() == DEFAULT_LOCK_TIMEOUT == 300.0
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STBENCH_LOCK_TIMEOUT", "12.5")
        assert lock_timeout() == 12.5 and lock_timeout(1) == 1.0
        mp.setenv("STBENCH_LOCK_TIMEOUT", "soon")
        with pytest.raises(StoreError, match="STBENCH_LOCK_TIMEOUT='soon' is not a number"):
            lock_timeout()


def test_finished_since_compares_times(cat):
    cat.start_run(_run())
    cat.finish_run("r1")
    (done,) = cat.rows("SELECT finished_at FROM runs")[0]
    assert cat.finished_since("r1", done) and not cat.finished_since("r1", done + timedelta(seconds=1))


def test_a_model_file_shared_by_two_runs_stays_until_neither_refers_to_it(cat, tmp_path):
    shared = tmp_path / "models" / "r1" / "fold0-shared.pt"  # one fit serves the runs of its group
    shared.parent.mkdir(parents=True)
    shared.write_bytes(b"state")
    for rid in ("r1", "r2"):
        run = _run(rid, n_folds=1)
        cat.start_run(run)
        cat.write_fold(run, _fold(0, [0.1, 0.3], model_path="models/r1/fold0-shared.pt"))
        cat.finish_run(rid)
    cat.forget_run("r1")
    assert shared.exists()  # r2 still refers to it
    cat.replace_run(_run("r2", n_folds=1), [_fold(0, [0.2, 0.4])])
    assert not shared.exists()


# -- what the mutation run (issue 16) found unchecked: top-k and baseline columns, sweeps, prediction files ------


def test_a_fold_rows_top_k_means_and_mse_baseline_are_those_of_its_gene_rows(cat):
    rng = np.random.default_rng(16)
    n = 230  # PCC-200 exists: 226 genes have a PCC
    pcc = rng.uniform(-0.3, 0.9, n)
    pcc[[3, 70, 150, 229]] = np.nan
    baseline = rng.uniform(0.5, 2.0, n)
    rec = _fold(0, pcc)
    rec.mse_baseline = list(baseline)  # a plain list of floats, as any sequence may be
    run = _run()
    cat.start_run(run)
    cat.write_fold(run, rec)
    f = cat.fold_table("r1").to_dicts()[0]
    best = np.sort(pcc[np.isfinite(pcc)])[::-1]  # computed here: the k best defined PCCs, averaged
    for k in (10, 50, 200):
        assert f[f"pcc{k}"] == pytest.approx(best[:k].sum() / k, rel=1e-12), k
    assert f["pcc50"] != pytest.approx(best[:51].sum() / 51, rel=1e-9)  # the 51st gene is not in PCC-50
    g = cat.gene_table(run_ids=["r1"]).to_pandas().set_index("gene").loc[rec.genes]
    np.testing.assert_array_equal(g["mse_baseline"].to_numpy(), baseline)
    assert f["mse_baseline"] == pytest.approx(baseline.sum() / n, rel=1e-12)
    assert f["mse_baseline"] == pytest.approx(g["mse_baseline"].mean(), rel=1e-12)
    assert cat.inconsistencies() == []
    for sql, needle in (("UPDATE fold_results SET mse_baseline = mse_baseline * 1.5", "mse_baseline"),
                        ("UPDATE gene_results SET mse_baseline = NULL WHERE gene = 'G5'", "mse_baseline"),
                        ("UPDATE fold_results SET pcc50 = pcc10", "pcc50"),
                        ("UPDATE fold_results SET pcc200 = NULL", "pcc200")):
        with cat.session(write=True):
            cat.con.execute("BEGIN TRANSACTION")
            cat.con.execute(sql)
            problems = cat.inconsistencies()
            cat.con.execute("ROLLBACK")
        assert any(needle in p for p in problems), (sql, problems)


def test_a_fold_without_a_baseline_stores_none_at_either_level(cat):
    run = _run()
    cat.start_run(run)
    cat.write_fold(run, _fold(0, [0.1, 0.3]))
    assert cat.rows("SELECT mse_baseline FROM fold_results") == [(None,)]
    assert cat.rows("SELECT DISTINCT mse_baseline FROM gene_results") == [(None,)]


def test_an_alpha_sweep_comes_back_per_fold_gene_and_alpha_and_goes_with_its_fold(cat):
    run = _run()
    cat.start_run(run)
    alphas = [10.0, 0.1, 1.0]  # as the grid came, not sorted
    curves = {0: np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]), 1: np.array([[0.7, 0.8], [0.9, 0.25], [0.35, 0.45]])}
    for i in (0, 1):
        rec = _fold(i, [0.3, 0.4], genes=["GB", "GA"])
        rec.sweep = (np.asarray(alphas), curves[i])
        cat.write_fold(run, rec)
    got = [tuple(r) for r in cat.alpha_curves(["r1"]).iter_rows()]
    expected = sorted((("r1", i, g, a, float(curves[i][row, col])) for i in (0, 1)
                       for row, a in enumerate(alphas) for col, g in enumerate(["GB", "GA"])),
                      key=lambda t: (t[1], t[2], t[3]))
    assert got == expected and len(got) == 12
    assert len(cat.alpha_curves([])) == 0 and len(cat.alpha_curves(["other"])) == 0
    cat.write_fold(run, _fold(1, [0.3, 0.4], genes=["GB", "GA"]))  # fold 1 again, without a sweep
    assert sorted({r[1] for r in cat.alpha_curves(["r1"]).iter_rows()}) == [0]
    cat.start_run(run, force=True)
    assert cat.rows("SELECT count(*) FROM alpha_sweep") == [(0,)]


@pytest.mark.parametrize("report", [None, {}])
def test_a_fold_without_a_reducer_report_stores_null(cat, report):
    run = _run()
    cat.start_run(run)
    rec = _fold(1, [0.1, 0.3])
    rec.reducer_report = report
    cat.write_fold(run, rec)
    assert cat.rows("SELECT reducer_report IS NULL FROM fold_results") == [(True,)]  # not the JSON text 'null' or '{}'


def test_prediction_files_have_one_schema_whatever_types_the_arrays_came_in(cat, tmp_path):
    """Integer coordinates or identifiers, float64 expression: every fold's file has the same column types,
    so the files of a run are read together (polars refuses files whose column types differ)."""
    import re

    import pyarrow as pa
    import pyarrow.parquet as pq

    run = _run()
    cat.start_run(run)
    as_ints = {"sample_id": np.array([7, 7, 8]), "barcode": [0, 1, 2], "coords": np.array([[1, 2], [3, 4], [5, 6]]),
               "y_true": np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]), "y_pred": np.array([[0.5, 1.5], [2.5, 3.5], [4.5, 5.5]])}
    as_text = {"sample_id": ["s"], "barcode": ["b"], "coords": np.array([[0.5, 1.5]], dtype=np.float32),
               "y_true": np.array([[1.0, 2.0]], dtype=np.float32), "y_pred": np.array([[1.25, 2.5]], dtype=np.float32)}
    cat.write_fold(run, _fold(0, [0.1, 0.2], genes=["GA", "GB"], predictions=as_ints))
    cat.write_fold(run, _fold(1, [0.1, 0.2], genes=["GA", "GB"], predictions=as_text))
    text = pa.dictionary(pa.int32(), pa.string())
    expected = {"run_id": text, "fold": pa.int32(), "sample_id": text, "barcode": pa.string(), "x": pa.float64(),
                "y": pa.float64(), "gene": text, "y_true": pa.float32(), "y_pred": pa.float32()}
    for i, rel in cat.rows("SELECT fold, predictions_path FROM fold_results ORDER BY fold"):
        assert re.fullmatch(rf"predictions/r1/fold{i}-[0-9a-f]{{8}}\.parquet", rel), rel  # like models' fold<i>-<8 hex>.pt
        schema = pq.read_schema(tmp_path / rel)
        assert {f.name: f.type for f in schema} == expected, rel
    frame = cat.spot_predictions(["r1"]).sort("fold", "barcode", "gene")
    assert [tuple(r) for r in frame.iter_rows()] == [
        ("r1", 0, "7", "0", 1.0, 2.0, "GA", 0.0, 0.5), ("r1", 0, "7", "0", 1.0, 2.0, "GB", 1.0, 1.5),
        ("r1", 0, "7", "1", 3.0, 4.0, "GA", 2.0, 2.5), ("r1", 0, "7", "1", 3.0, 4.0, "GB", 3.0, 3.5),
        ("r1", 0, "8", "2", 5.0, 6.0, "GA", 4.0, 4.5), ("r1", 0, "8", "2", 5.0, 6.0, "GB", 5.0, 5.5),
        ("r1", 1, "s", "b", 0.5, 1.5, "GA", 1.0, 1.25), ("r1", 1, "s", "b", 0.5, 1.5, "GB", 2.0, 2.5)]


def test_a_refused_fold_leaves_no_predictions_file_behind(cat, tmp_path):
    run = _run()
    cat.start_run(run)
    bad = _fold(0, [0.9, 0.5], genes=["GA", "GB"], predictions={
        "sample_id": ["s"], "barcode": ["b"], "coords": [[0, 0]], "y_true": [[1.0, 2.0]], "y_pred": [[1.0, 2.0]]})
    bad.summary = metrics.FoldSummary(**{**bad.summary.__dict__, "pcc_mean": 0.1})
    with pytest.raises(StoreError, match="inconsistent fold"):
        cat.write_fold(run, bad)
    assert cat.folds_done("r1") == set()
    assert [p for p in (tmp_path / "predictions").rglob("*") if p.is_file()] == []  # written aside, then removed


def test_files_recorded_with_absolute_paths_are_read_and_removed(cat, tmp_path):
    """Stores written before paths were recorded relative to the store root hold absolute ones."""
    run = _run()
    cat.start_run(run)
    model = tmp_path / "models" / "r1" / "fold0-abc.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"state")
    cat.write_fold(run, _fold(0, [0.1, 0.2], genes=["GA", "GB"], model_path="models/r1/fold0-abc.pt", predictions={
        "sample_id": ["s"], "barcode": ["b"], "coords": [[3, 4]], "y_true": [[1.0, 2.0]], "y_pred": [[1.5, 2.5]]}))
    [(rel,)] = cat.rows("SELECT predictions_path FROM fold_results")
    preds = tmp_path / rel
    cat.con.execute("UPDATE fold_results SET predictions_path = ?, model_path = ?", [str(preds), str(model)])
    assert cat.spot_predictions(["r1"])["y_pred"].to_list() == [1.5, 2.5]
    cat.forget_run("r1")
    assert not preds.exists() and not model.exists()


def test_a_fold_write_checks_that_fold_only(cat):
    """A damaged row elsewhere (another fold, another run) is for `bench store verify`, not a reason to refuse."""
    for rid in ("r1", "r2"):
        cat.start_run(_run(rid))
    cat.write_fold(_run("r1"), _fold(0, [0.1, 0.3]))
    cat.con.execute("UPDATE fold_results SET pcc_mean = 0.9 WHERE run_id = 'r1' AND fold = 0")
    cat.write_fold(_run("r1"), _fold(1, [0.2, 0.4]))  # same run, another fold
    cat.write_fold(_run("r2"), _fold(0, [0.2, 0.4]))  # another run, same fold
    assert cat.folds_done("r1") == {0, 1} and cat.folds_done("r2") == {0}
    assert cat.inconsistencies(runs=False) == ["run r1 fold 0: pcc_mean 0.9 but its gene rows give 0.2"]


def test_times_are_stored_in_utc_whatever_the_local_zone(cat, monkeypatch):
    import time
    from datetime import UTC

    monkeypatch.setenv("TZ", "XYZ-14")  # POSIX: 14 hours east of UTC
    time.tzset()
    try:
        cat.start_run(_run())
        cat.finish_run("r1")
        now = datetime.now(UTC).replace(tzinfo=None)
    finally:
        monkeypatch.undo()
        time.tzset()
    started, finished = cat.rows("SELECT started_at, finished_at FROM runs")[0]
    assert abs(started - now) < timedelta(minutes=5) and abs(finished - now) < timedelta(minutes=5)


def test_a_catalog_held_by_another_program_is_waited_for_and_said_so(tmp_path, caplog):
    """Another program (the duckdb shell) holding the file: waited for like our own lock, with one line saying so."""
    import subprocess
    import sys
    import threading
    import time

    path = tmp_path / "c.duckdb"
    Catalog(path).close()
    code = "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)  # holds the file until its stdin is closed
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match=r"still busy after \d+ s: .*lock.*--lock-timeout SECONDS"):
            Catalog(path, lock_timeout=0.3)
        release = threading.Timer(1.5, holder.stdin.close)
        start = time.monotonic()
        release.start()
        with caplog.at_level("WARNING", logger="stbench"), Catalog(path, lock_timeout=60) as cat:
            assert cat.run_status("x") is None
        assert time.monotonic() - start >= 1.5
        assert any("waiting for the catalog" in r.getMessage() for r in caplog.records), caplog.records
    finally:
        holder.kill()
        holder.wait()


def test_prediction_files_split_the_predictions_by_byte_stream_and_keep_dictionaries_for_the_rest(cat, tmp_path):
    """pyarrow applies BYTE_STREAM_SPLIT only to a column without a dictionary: the predictions (all distinct) are
    split, the columns that repeat (ids, coordinates, measured values) keep their dictionary."""
    import pyarrow.parquet as pq

    run = _run()
    cat.start_run(run)
    rng = np.random.default_rng(0)
    cat.write_fold(run, _fold(0, [0.1, 0.2], genes=["GA", "GB"], predictions={
        "sample_id": ["s"] * 20, "barcode": [f"b{i}" for i in range(20)], "coords": rng.normal(size=(20, 2)),
        "y_true": rng.integers(0, 3, size=(20, 2)).astype(np.float32), "y_pred": rng.normal(size=(20, 2))}))
    [(rel,)] = cat.rows("SELECT predictions_path FROM fold_results")
    meta = pq.ParquetFile(tmp_path / rel).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: set(meta.column(i).encodings) for i in range(meta.num_columns)}
    assert "BYTE_STREAM_SPLIT" in encodings["y_pred"] and "RLE_DICTIONARY" not in encodings["y_pred"]
    for column in ("run_id", "sample_id", "barcode", "gene", "x", "y", "y_true"):
        assert "RLE_DICTIONARY" in encodings[column] and "BYTE_STREAM_SPLIT" not in encodings[column], column
    assert pq.ParquetFile(tmp_path / rel).metadata.row_group(0).column(0).compression == "ZSTD"
