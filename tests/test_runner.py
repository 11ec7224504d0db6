"""The runner end to end on a tiny task: stored rows, reuse, resume, fold isolation, and bad input."""

import json

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from stbench import runner
from stbench.cli import cli
from stbench.encoders import encoders
from stbench.protocol import Protocol
from stbench.reducers import Reducer, TrainFold, reducers
from stbench.runner import ReducerChoice, run_task
from stbench.stores import Store
from stbench.tasks import open_task
from tests._tiny import make_tiny_task, tiny_encoder

SEEN: list = []


class SpyReducer(Reducer):
    """Records what fit sees; otherwise the identity."""

    name = "test-spy"

    def fit(self, train: TrainFold):
        SEEN.append(train)
        return self

    def transform(self, X):
        return np.asarray(X, np.float32)


@pytest.fixture(scope="session", autouse=True)
def _test_plugins():
    if "test-tiny-cnn" not in encoders:
        encoders.register(tiny_encoder(), origin="tests")
    if "test-spy" not in reducers:
        reducers.register(SpyReducer, origin="tests")


@pytest.fixture
def root(tmp_path):
    make_tiny_task(tmp_path / "data")
    return tmp_path / "data"


def _run(root, store_dir, reducers_=("identity", "pca"), protocol=None, **kw):
    task = open_task("tiny", root)
    with Store(store_dir) as st:
        return run_task(task, "test-tiny-cnn", [ReducerChoice(r) for r in reducers_], protocol or Protocol.from_options(),
                        st, device="cpu", **kw)


def test_run_stores_every_number_and_reads_back_the_summary(root, tmp_path):
    res = _run(root, tmp_path / "s")
    assert [r.reducer for r in res] == ["identity", "pca"]
    for r in res:
        assert len(r.folds) == 3 and not r.cached and r.synthetic
        assert all(np.isfinite(f["pcc_mean"]) for f in r.folds)
    with Store(tmp_path / "s") as st:
        genes = st.catalog.gene_table(run_ids=[res[0].run_id])
        assert len(genes) == 3 * 20  # folds x task genes
        row = genes.row(0, named=True)
        assert row["protocol_fingerprint"] == Protocol.from_options().fingerprint and row["seed"] == 1
        assert row["alpha"] == pytest.approx(100 / (8 * 20))  # HEST rule on 8 features, 20 genes
        n = st.catalog.con.execute("SELECT count(*) FROM sample_gene_results WHERE run_id=?", [res[0].run_id]).fetchall()
        assert n == [(3 * 20,)]
        runs = st.catalog.summary().to_dicts()
        assert {r["status"] for r in runs} == {"complete"}
        assert runs[0]["pcc_mean"] == pytest.approx(res[0].pcc[0])


def test_second_run_reuses_stored_results_and_force_recomputes(root, tmp_path, monkeypatch):
    first = _run(root, tmp_path / "s")
    monkeypatch.setattr(runner, "_evaluate_fold", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = _run(root, tmp_path / "s")
    assert all(r.cached for r in again) and [r.run_id for r in again] == [r.run_id for r in first]
    with pytest.raises(AssertionError, match="recomputed"):
        _run(root, tmp_path / "s", force=True)


def test_a_different_protocol_is_a_different_result_set(root, tmp_path):
    hest = _run(root, tmp_path / "s", reducers_=("identity",))
    cv = _run(root, tmp_path / "s", reducers_=("identity",), protocol=Protocol.from_options(alpha="cv"))
    assert hest[0].run_id != cv[0].run_id and not cv[0].cached
    assert all(f["alpha"] >= 1e-3 for f in cv[0].folds)


def test_a_run_killed_mid_way_resumes_at_the_missing_fold(root, tmp_path, monkeypatch):
    real = runner._evaluate_fold
    calls = []

    def flaky(reducer, protocol, genes, data, fold, *a, **kw):
        calls.append(fold.index)
        if fold.index == 1 and calls.count(1) == 1:
            raise RuntimeError("node lost")
        return real(reducer, protocol, genes, data, fold, *a, **kw)

    monkeypatch.setattr(runner, "_evaluate_fold", flaky)
    with pytest.raises(RuntimeError, match="node lost"):
        _run(root, tmp_path / "s", reducers_=("pca",))
    with Store(tmp_path / "s") as st:
        assert st.catalog.summary(include_incomplete=True)["status"].to_list() == ["failed"]
    res = _run(root, tmp_path / "s", reducers_=("pca",))
    assert calls == [0, 1, 1, 2] and len(res[0].folds) == 3


def test_reducers_see_only_the_training_fold(root, tmp_path):
    SEEN.clear()
    _run(root, tmp_path / "s", reducers_=("test-spy",))
    task = open_task("tiny", root)
    for fold, train in zip(task.folds, SEEN):
        assert set(train.sample_ids) == set(fold.train)
        assert set(train.expression.obs["sample_id"]) == set(fold.train)
        assert train.expression.n_vars == 60  # all genes, raw counts
        assert len(train.X) == len(train.coords) == train.expression.n_obs


def test_train_hvg_genes_ignore_the_test_fold(root, tmp_path):
    task = open_task("tiny", root)
    fold = task.folds[0]
    res = _run(root, tmp_path / "a", reducers_=("identity",), protocol=Protocol.from_options(genes="train-hvg"))
    genes_before = json.loads(res[0].folds[0]["genes"])
    # Garbage in the test sample's counts changes its scores but not the genes chosen for the fold.
    path = task.samples[fold.test[0]].adata
    a = ad.read_h5ad(path)
    a.X = sp.csr_matrix(np.random.default_rng(0).poisson(5, size=a.shape).astype(np.float32))
    a.write_h5ad(path)
    res2 = _run(root, tmp_path / "b", reducers_=("identity",), protocol=Protocol.from_options(genes="train-hvg"))
    assert json.loads(res2[0].folds[0]["genes"]) == genes_before
    assert len(genes_before) == 50


# -- bad input: a one-line error naming the file, non-zero exit, nothing in the store --------------------


def _cli(root, store, *args):
    return CliRunner().invoke(cli, ["run", "--task", "tiny", "--encoder", "test-tiny-cnn", "--data-root", str(root),
                                    "--store", str(store), "--no-progress", *args])


def _break_missing_h5(t):
    t.samples["S1"].patches.unlink()


def _break_truncated_h5(t):
    p = t.samples["S1"].patches
    p.write_bytes(p.read_bytes()[:5000])


def _break_no_img(t):
    with h5py.File(t.samples["S1"].patches, "r+") as h5:
        del h5["img"]


def _break_barcodes_absent(t):
    a = ad.read_h5ad(t.samples["S1"].adata)
    a.obs_names = [f"other-{i}" for i in range(a.n_obs)]
    a.write_h5ad(t.samples["S1"].adata)


def _break_duplicate_barcodes(t):
    with h5py.File(t.samples["S1"].patches, "r+") as h5:
        h5["barcode"][1] = h5["barcode"][0]


def _break_gene_missing(t):
    (t.path / "var_50genes.json").write_text(json.dumps({"genes": ["G000", "NOT_A_GENE"]}))


def _break_empty_split(t):
    (t.path / "splits" / "train_2.csv").write_text("sample_id,patches_path,expr_path\n")


@pytest.mark.parametrize("breaker,message", [
    (_break_missing_h5, r"S1\.h5: patch file does not exist"),
    (_break_truncated_h5, r"S1\.h5: cannot open as HDF5"),
    (_break_no_img, r"S1\.h5: patch file has no 'img' dataset"),
    (_break_barcodes_absent, r"S1\.h5ad: 24 of 24 barcodes of S1\.h5 have no count row"),
    (_break_duplicate_barcodes, r"S1\.h5: duplicate barcode 'S1-0'"),
    (_break_gene_missing, r"S0\.h5ad: 1 of 2 genes of the gene list are absent: NOT_A_GENE"),
    (_break_empty_split, r"train_2\.csv: empty split"),
])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(root, tmp_path, breaker, message):
    breaker(open_task("tiny", root))
    result = _cli(root, tmp_path / "store")
    assert result.exit_code != 0
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1, result.output
    import re

    assert re.search(message, result.output), result.output
    assert not (tmp_path / "store" / "embeddings").exists()
    assert not (tmp_path / "store" / "catalog.duckdb").exists()


@pytest.mark.parametrize("args,message", [
    (["--encoder", "efficientnet-lite"], "unknown encoder 'efficientnet-lite'. Did you mean: efficientnet-lite0"),
    (["--reducer", "pcaa"], "unknown reducer 'pcaa'. Did you mean: pca"),
    (["--task", "tinny"], "unknown task 'tinny'"),
    (["--reducer-opt", "n_components=abc"], "option n_components='abc' is not a valid int"),
    (["--reducer-opt", "depth=3"], "none of the reducers identity, pca has an option 'depth'"),
    (["--alpha", "cv", "--solver", "lsqr"], "--alpha cv needs --solver exact"),
])
def test_unknown_names_and_bad_options_suggest_and_write_nothing(root, tmp_path, args, message):
    result = _cli(root, tmp_path / "store", *args)
    assert result.exit_code != 0 and message in result.output, result.output
    assert not (tmp_path / "store").exists()


def test_spot_predictions_are_stored_and_rescore_to_the_stored_pcc(root, tmp_path):
    (res,) = _run(root, tmp_path / "s", reducers_=("pca",))
    with Store(tmp_path / "s") as st:
        preds = st.catalog.spot_predictions([res.run_id])
        genes = st.catalog.gene_table(run_ids=[res.run_id])
    assert len(preds) == sum(f["n_test"] for f in res.folds) * 20
    for f in res.folds:
        fold = preds.filter(preds["fold"] == f["fold"]).sort(["sample_id", "barcode", "gene"])
        names = sorted(set(fold["gene"]))
        y_true = fold["y_true"].to_numpy().reshape(-1, len(names))
        y_pred = fold["y_pred"].to_numpy().reshape(-1, len(names))
        stored = genes.filter(genes["fold"] == f["fold"]).sort("gene")["pcc"].to_numpy()
        rescored = [np.corrcoef(y_true[:, j], y_pred[:, j])[0, 1] for j in range(len(names))]  # numpy's own
        np.testing.assert_allclose(rescored, stored, atol=1e-4)
        assert fold["x"].null_count() == 0 and len(set(fold["barcode"])) == f["n_test"]
    # the measured expression is log1p of the raw counts, read here with anndata alone
    task = open_task("tiny", root)
    for sid in {s for f in res.folds for s in json.loads(f["test_samples"])}:
        counts = ad.read_h5ad(task.samples[sid].adata)
        part = preds.filter(preds["sample_id"] == sid)
        raw = counts[part["barcode"].to_list(), :].X
        raw = raw.toarray() if hasattr(raw, "toarray") else np.asarray(raw)
        col = {g: j for j, g in enumerate(counts.var_names)}
        expected = np.log(1.0 + raw[np.arange(len(part)), [col[g] for g in part["gene"]]])
        np.testing.assert_allclose(part["y_true"].to_numpy(), expected, rtol=1e-6)


def test_a_new_reducer_version_is_a_new_result_set_and_version_1_ids_are_unchanged(tmp_path):
    """A reducer whose numerics changed bumps ``version``: its results get new ids, so the store never reads
    back numbers made by the old implementation as the new one's; version-1 ids keep their old form."""
    import hashlib

    task = open_task("tiny", make_tiny_task(tmp_path / "data").parent)
    pca = reducers.get("pca")()
    protocol = Protocol.from_options()
    v1 = runner.run_id_for(task, "enc", "sha256:0", pca, protocol)
    old_form = json.dumps([task.name, task.fingerprint, "enc", "sha256:0", "pca", pca.options_key(), protocol.fingerprint])
    assert v1 == hashlib.sha256(old_form.encode()).hexdigest()[:16]

    class PCA2(type(pca)):
        version = 2

    assert runner.run_id_for(task, "enc", "sha256:0", PCA2(), protocol) != v1
    assert reducers.get("bpbooster-random").version == 2  # fused Adam changed its numbers


def test_after_a_real_run_every_stored_summary_is_what_the_rows_beneath_it_give(root, tmp_path):
    _run(root, tmp_path / "s")
    _run(root, tmp_path / "s", protocol=Protocol.from_options(alpha="cv"))
    with Store(tmp_path / "s") as st:
        cat = st.catalog
        assert cat.inconsistencies() == []
        genes = cat.gene_table().to_pandas()
        folds = cat.con.execute("SELECT run_id, fold, n_genes, n_nan, pcc_mean, pcc_std, mse_mean FROM fold_results").fetchall()
        assert len(folds) == 4 * 3
        for run_id, fold, n_genes, n_nan, pcc_mean, pcc_std, mse_mean in folds:
            g = genes[(genes.run_id == run_id) & (genes.fold == fold)]
            pcc = g.pcc.to_numpy(dtype=float)
            ok = pcc[np.isfinite(pcc)]
            assert (n_genes, n_nan) == (len(g), len(pcc) - len(ok)) == (20, 0)
            assert pcc_mean == pytest.approx(ok.mean(), rel=1e-12)
            assert pcc_std == pytest.approx(ok.std(ddof=0), rel=1e-12)
            assert mse_mean == pytest.approx(g.mse.mean(), rel=1e-12)
        for s in cat.summary().iter_rows(named=True):
            v = np.array([f[4] for f in folds if f[0] == s["run_id"]])
            assert s["folds"] == 3 and s["pcc_mean"] == pytest.approx(v.mean(), rel=1e-12)
            assert s["pcc_std"] == pytest.approx(v.std(ddof=0), rel=1e-12)


def test_the_mse_of_predicting_the_training_mean_is_stored_beside_the_mse(root, tmp_path):
    (res,) = _run(root, tmp_path / "s", reducers_=("identity",))
    task = open_task("tiny", root)
    with Store(tmp_path / "s") as st:
        genes = st.catalog.gene_table(run_ids=[res.run_id]).to_pandas()
        summary = st.catalog.summary().row(0, named=True)
    fold_baselines = []
    for fold in task.folds:  # computed here from the count files: log1p, training means, test MSE
        def log1p(ids):
            mats = [ad.read_h5ad(task.samples[s].adata)[:, task.genes].X for s in ids]
            return np.log1p(np.concatenate([m.toarray() if hasattr(m, "toarray") else m for m in mats]).astype(np.float64))

        train, test = log1p(fold.train), log1p(fold.test)
        expected = ((test - train.mean(axis=0)) ** 2).mean(axis=0)
        g = genes[genes.fold == fold.index].set_index("gene").loc[task.genes]
        np.testing.assert_allclose(g.mse_baseline.to_numpy(), expected, rtol=1e-5)
        fold_baselines.append(expected.mean())
    assert summary["mse_baseline"] == pytest.approx(np.mean(fold_baselines), rel=1e-5)


def test_alpha_sweep_stores_the_pcc_at_every_alpha_and_the_headline_at_the_cv_choice(root, tmp_path):
    import h5py
    from sklearn.linear_model import Ridge

    protocol = Protocol.from_options(alpha="sweep:1e-2:1e4:7")
    assert protocol.sweep_alphas()[3] == pytest.approx(10.0) and protocol.solver == "exact" and not protocol.intercept
    (res,) = _run(root, tmp_path / "s", reducers_=("identity",), protocol=protocol)
    task = open_task("tiny", root)
    with Store(tmp_path / "s") as st:
        curves = st.catalog.alpha_curves([res.run_id]).to_pandas()
        genes = st.catalog.gene_table(run_ids=[res.run_id]).to_pandas()
        paths = {sid: st.resolve(p) for sid, p in st.catalog.rows("SELECT sample_id, path FROM embeddings")}
        assert st.catalog.inconsistencies() == []
    hest = 100 / (8 * 20)  # HEST's alpha on 8 features and 20 genes is among the swept points
    assert sorted(curves.alpha.unique()) == pytest.approx(sorted([*protocol.sweep_alphas(), hest]))
    assert len(curves) == 3 * 20 * 8
    for f in res.folds:  # the headline is the curve at the alpha chosen by CV inside the training fold
        assert np.isclose(protocol.sweep_alphas(), f["alpha"]).any()
        at = curves[(curves.fold == f["fold"]) & np.isclose(curves.alpha, f["alpha"])].set_index("gene").pcc
        mine = genes[genes.fold == f["fold"]].set_index("gene").pcc
        np.testing.assert_allclose(mine.loc[at.index], at, atol=1e-6)
    fold = task.folds[0]  # one point of the curve, computed here with scikit-learn and numpy

    def arrays(ids):
        X, Y = [], []
        for sid in ids:
            with h5py.File(paths[sid]) as h5:
                X.append(h5["embeddings"][()])
                barcodes = [b.decode() for b in h5["barcodes"][()]]
            counts = ad.read_h5ad(task.samples[sid].adata)[barcodes, task.genes].X
            Y.append(np.log1p(counts.toarray() if hasattr(counts, "toarray") else counts))
        return np.concatenate(X).astype(np.float64), np.concatenate(Y).astype(np.float64)

    (X_tr, Y_tr), (X_te, Y_te) = arrays(fold.train), arrays(fold.test)
    pred = Ridge(alpha=10.0, fit_intercept=False, solver="cholesky").fit(X_tr, Y_tr).predict(X_te)
    expected = [np.corrcoef(Y_te[:, j], pred[:, j])[0, 1] for j in range(20)]
    stored = curves[(curves.fold == 0) & np.isclose(curves.alpha, 10.0)].set_index("gene").pcc.loc[task.genes]
    np.testing.assert_allclose(stored.to_numpy(), expected, atol=1e-5)
