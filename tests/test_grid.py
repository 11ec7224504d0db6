"""Grids on tiny tasks: cells and their order, the grid file, protocol variants as result sets, reuse of
embeddings and reducer fits, cached and forced cells, failed cells, per-sample PCC and the PAM50 panel."""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
from collections import Counter
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from click.testing import CliRunner

from stbench.cli import cli
from stbench.encoders import Encoder, encoders
from stbench.errors import DataError, StbenchError
from stbench.grid import ALL, cells, expand_all, make_spec, protocol_label, protocol_variants, read_grid_file
from stbench.metrics import per_sample_fold_score, per_sample_task_summary
from stbench.panels import PAM50
from stbench.protocol import Protocol
from stbench.reducers import Reducer, TrainFold, reducers
from stbench.runner import ReducerChoice, run_task
from stbench.stores import Store
from stbench.tasks import open_task
from tests._tiny import make_tiny_task, tiny_encoder

LOADS: Counter = Counter()  # encoder -> model loads
PATCHES: Counter = Counter()  # encoder -> patches through the model
FITS: list = []  # (task, fold, seed) of every GridSpy fit


def _counting_encoder(name: str) -> Encoder:
    """The tiny CNN under another name, counting model loads and the patches it embeds."""
    base = tiny_encoder()

    def load(weights):
        LOADS[name] += 1
        model = base.loader(weights)
        model.register_forward_hook(lambda _m, args, _out: PATCHES.update({name: len(args[0])}))
        return model

    return Encoder(dataclasses.replace(base.spec, name=name, random_init=True), load)


class GridSpy(Reducer):
    """The identity, recording each fit."""

    name = "test-grid-spy"

    def fit(self, train: TrainFold):
        FITS.append((train.task, train.fold, train.seed))
        return self

    def transform(self, X):
        return np.asarray(X, np.float32)


class Boom(Reducer):
    """Fails in fit, as a bug in a reducer would."""

    name = "test-grid-boom"

    def fit(self, train: TrainFold):
        raise RuntimeError("boom in fit")

    def transform(self, X):
        return X


@pytest.fixture(scope="module", autouse=True)
def _plugins():
    if "test-tiny-cnn" not in encoders:
        encoders.register(tiny_encoder(), origin="tests")
    for name in ("test-grid-a", "test-grid-b"):
        if name not in encoders:
            encoders.register(_counting_encoder(name), origin="tests")
    for cls in (GridSpy, Boom):
        if cls.name not in reducers:
            reducers.register(cls, origin="tests")


def _make_panel_task(root):
    """4 samples, 2 folds of 2 test samples each; genes G020..G059 renamed to the first 40 PAM50 genes, and
    ACTR3B (PAM50's first) named otherwise in S1, so it is not measured in every sample."""
    path = make_tiny_task(root, "PANEL", n_samples=4, seed=1)
    rename = {f"G{i:03d}": PAM50[i - 20] for i in range(20, 60)}
    for sid in ("S0", "S1", "S2", "S3"):
        f = path / "adata" / f"{sid}.h5ad"
        a = ad.read_h5ad(f)
        names = [rename.get(g, g) for g in a.var_names]
        if sid == "S1":
            names = ["NOT-ACTR3B" if g == "ACTR3B" else g for g in names]
        a.var_names = names
        a.write_h5ad(f)
    for old in (path / "splits").glob("*.csv"):
        old.unlink()
    for i, (train, test) in enumerate([(("S0", "S1"), ("S2", "S3")), (("S2", "S3"), ("S0", "S1"))]):
        for kind, ids in (("train", train), ("test", test)):
            rows = ["sample_id,patches_path,expr_path"] + [f"{s},patches/{s}.h5,adata/{s}.h5ad" for s in ids]
            (path / "splits" / f"{kind}_{i}.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid") / "data"
    make_tiny_task(root)  # TINY: 3 samples, leave-one-out, genes G000..G059
    _make_panel_task(root)
    return root


def _bench(root, store, *args):
    return CliRunner().invoke(cli, ["run", "--data-root", str(root), "--store", str(store), "--no-progress",
                                    "--device", "cpu", *args])


def _runs(store):
    with Store(store) as st:
        return st.catalog.con.sql("SELECT * FROM runs ORDER BY task, encoder, reducer, alpha_rule").pl().to_dicts()


# -- cells, names and the grid file --------------------------------------------------------------------------


def test_cells_are_encoder_major_and_all_expands(root):
    protocols = protocol_variants(["hest", "cv"], ["task"], [1])
    spec = make_spec([ALL], ["test-grid-b", "TEST-GRID-A"], [ReducerChoice("identity"), ReducerChoice("pca")],
                     protocols, root)
    assert spec.tasks == ("PANEL", "TINY") and spec.encoders == ("test-grid-b", "test-grid-a")
    order = [(c.encoder, c.task, c.reducer.name, c.protocol.alpha) for c in cells(spec)]
    assert len(order) == 2 * 2 * 2 * 2
    assert [e for e, *_ in order] == ["test-grid-b"] * 8 + ["test-grid-a"] * 8  # one encoder at a time
    assert order[:4] == [("test-grid-b", "PANEL", "identity", "hest"), ("test-grid-b", "PANEL", "identity", "cv"),
                         ("test-grid-b", "PANEL", "pca", "hest"), ("test-grid-b", "PANEL", "pca", "cv")]
    assert set(make_spec(["tiny"], [ALL], spec.reducers, protocols, root).encoders) == set(encoders.names())
    assert expand_all(["pca", "all", "identity"], ["identity", "pca", "x"]) == ["pca", "identity", "x"]
    assert [protocol_label(p, protocols) for p in protocols] == ["alpha=hest", "alpha=cv"]
    with pytest.raises(StbenchError, match="unknown encoder 'test-grid-c'. Did you mean: test-grid-"):
        make_spec(["tiny"], ["test-grid-c"], spec.reducers, protocols, root)
    with pytest.raises(StbenchError, match="unknown task 'tinny'"):
        make_spec(["tinny"], ["test-grid-a"], spec.reducers, protocols, root)


def test_protocol_variants_are_the_product_without_duplicates(tmp_path):
    ps = protocol_variants(["hest", "cv", "hest"], ["task", "pam50"], [1, 2])
    assert len(ps) == 2 * 2 * 2 and len({p.fingerprint for p in ps}) == 8
    assert {(p.alpha, p.solver) for p in ps} == {("hest", "lsqr"), ("cv", "exact")}
    pam = next(p for p in ps if p.panel)
    assert pam.genes == "file" and pam.gene_list == PAM50 and pam.panel == "pam50"
    # fixed values: a change is a change to every stored result's identity (PROTOCOL_VERSION 2, issue 13: lsqr
    # in float32, an intercept under CV; before it, ce2049b218920773 and ceae422e3b8a40ee)
    assert Protocol.from_options().fingerprint == "f55ef89070e21a49"
    assert Protocol.from_options(alpha="cv").fingerprint == "89d17f2ab313637f"
    assert Protocol.from_options(alpha="cv", intercept=False).fingerprint == "0310224074d8682d"
    with pytest.raises(StbenchError, match=r"--genes must be task, train-hvg, a panel \(pam50\) or an existing gene"):
        protocol_variants(["hest"], ["pam51"], [1])


def test_grid_file_is_read_with_paths_next_to_it(tmp_path):
    (tmp_path / "genes.txt").write_text("G001\nG002\n")
    cfg = tmp_path / "grid.toml"
    cfg.write_text("""
tasks = "tiny,panel"
encoder = ["test-grid-a"]
reducer = ["identity", { name = "pca", n_components = 4 }, { name = "bpbooster-gp", gene_sets = "genes.txt" }]
alpha = ["hest", 10]
genes = ["task", "PAM50", "genes.txt"]
seeds = [1, 2]
solver = "exact"
intercept = true
pcc = "per-sample"
""")
    g = read_grid_file(cfg)
    assert g.tasks == ("tiny", "panel") and g.encoders == ("test-grid-a",)
    assert g.reducers == (("identity", {}), ("pca", {"n_components": 4}),
                          ("bpbooster-gp", {"gene_sets": str(tmp_path / "genes.txt")}))
    assert g.alpha == ("hest", "10") and g.genes == ("task", "PAM50", str(tmp_path / "genes.txt"))
    assert (g.seed, g.solver, g.intercept, g.pcc) == ((1, 2), "exact", True, "per-sample")


@pytest.mark.parametrize(("content", "message"), [
    ('encodr = ["test-grid-a"]', r"grid\.toml: unknown key 'encodr'\. Did you mean: encoder"),
    ("seed = 1.5", r"grid\.toml: seed = 1\.5: expected an integer"),
    ('reducer = [{ n_components = 4 }]', r"grid\.toml: reducer: .* neither a reducer name nor a table with a name"),
    ('pcc = "median"', r"grid\.toml: pcc = 'median': expected one of pooled, per-sample, both"),
    ('task = "tiny"\ntasks = "tiny"', r"grid\.toml: 'tasks' given twice"),
    ("alpha = [", r"grid\.toml: cannot read as TOML"),
    ('encoder = ["test-grid-a", "test-gird-b"]', r"unknown encoder 'test-gird-b'\. Did you mean: test-grid-b"),
    ('reducer = ["identity", "pcaa"]', r"unknown reducer 'pcaa'\. Did you mean: pca"),
    ('reducer = [{ name = "pca", depth = 3 }]', r"reducer pca: unknown option\(s\) depth"),
    ('alpha = ["hest", "often"]', r"--alpha must be 'hest', 'cv' or a number, not 'often'"),
    ('task = ["tiny", "tinny"]', r"unknown task 'tinny'"),
    ('task = "tiny"\ngenes = "pam50"', r"none of the 50 PAM50 genes is measured in every sample of task TINY"),
])
def test_grid_file_errors_are_one_line_and_nothing_is_written(root, tmp_path, content, message):
    cfg = tmp_path / "grid.toml"
    defaults = [f'{key} = "{value}"' for key, value in (("task", "tiny"), ("encoder", "test-grid-a")) if key not in content]
    cfg.write_text("\n".join([*defaults, content]) + "\n")
    result = _bench(root, tmp_path / "store", "--config", str(cfg))
    assert result.exit_code not in (0, 3)
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1, result.output
    assert re.search(message, result.output), result.output
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--encoder", "test-grid-a,test-grid-b", "--weights", "w.pt"], "--weights w.pt: say which encoder"),
    (["--encoder", "test-grid-a", "--weights", "test-grid-b=w.pt"], "test-grid-b, which is not in the grid"),
    (["--weights", "random:x"], "random weights take an integer seed"),
    (["--seed", "1,x"], "--seed '1,x': expected an integer"),
    (["--pcc", "mean"], "Invalid value for '--pcc'"),
])
def test_bad_grid_options_fail_before_any_work(root, tmp_path, args, message):
    result = _bench(root, tmp_path / "store", "--task", "tiny", *args)
    assert result.exit_code not in (0, 3) and message in result.output, result.output
    assert not (tmp_path / "store").exists()


# -- running a grid ------------------------------------------------------------------------------------------


def test_a_grid_embeds_once_fits_once_per_fold_and_reads_back_cached_cells(root, tmp_path):
    LOADS.clear(), PATCHES.clear(), FITS.clear()
    cfg = tmp_path / "grid.toml"
    cfg.write_text('task = "all"\nencoder = ["test-grid-a", "test-grid-b"]\n'
                   'reducer = ["identity", { name = "test-grid-spy" }]\nalpha = ["hest", 10]\n')
    store = tmp_path / "store"
    result = _bench(root, store, "--config", str(cfg))
    assert result.exit_code == 0, result.output
    # 2 encoders x 2 tasks x 2 reducers x 2 protocols, each its own result set
    runs = _runs(store)
    assert len(runs) == 16 and len({r["run_id"] for r in runs}) == 16 and {r["status"] for r in runs} == {"complete"}
    assert Counter(r["protocol_fingerprint"] for r in runs) == {
        Protocol.from_options().fingerprint: 8, Protocol.from_options(alpha=10).fingerprint: 8}
    # each encoder loaded once for both tasks, each (encoder, sample) embedded once: 3 x 24 + 4 x 24 patches
    assert LOADS == {"test-grid-a": 1, "test-grid-b": 1}
    assert PATCHES == {"test-grid-a": 7 * 24, "test-grid-b": 7 * 24}
    # one fit per (encoder, task, fold) serves both ridge penalties
    assert len(FITS) == 2 * (3 + 2)
    lines = [line for line in result.output.splitlines() if line.startswith("ok ")]
    assert len(lines) == 16 and "test-grid-a · PANEL · identity · alpha=hest" in lines[0]
    assert [line.split(" · ")[0].split()[-1] for line in lines] == ["test-grid-a"] * 8 + ["test-grid-b"] * 8
    assert re.search(r"TINY\s+test-grid-b\s+test-grid-spy\s+alpha=10.0\s+3\s+\S+ ± \S+", result.output), result.output

    again = _bench(root, store, "--config", str(cfg), "--reducer", "test-grid-spy", "--alpha", "10")
    assert again.exit_code == 0, again.output
    assert again.output.count("cached") >= 4 and "ok " not in again.output
    assert len(FITS) == 10 and LOADS == {"test-grid-a": 1, "test-grid-b": 1}  # nothing refitted or reloaded
    forced = _bench(root, store, "--task", "tiny", "--encoder", "test-grid-a", "--reducer", "test-grid-spy",
                    "--alpha", "hest,10", "--force")
    assert forced.exit_code == 0, forced.output
    assert len(FITS) == 13 and len(_runs(store)) == 16  # recomputed in place: one fit per fold for both


def test_a_shared_fit_gives_the_numbers_of_separate_runs(root, tmp_path):
    result = _bench(root, tmp_path / "grid", "--task", "panel", "--encoder", "test-tiny-cnn", "--reducer", "pca",
                    "--alpha", "hest,cv")
    assert result.exit_code == 0, result.output
    task = open_task("panel", root)
    for alpha in ("hest", "cv"):
        with Store(tmp_path / f"alone-{alpha}") as st:
            (alone,) = run_task(task, "test-tiny-cnn", [ReducerChoice("pca")], Protocol.from_options(alpha=alpha), st,
                                device="cpu")
        [grid_run] = [r for r in _runs(tmp_path / "grid") if r["alpha_rule"] == alpha]
        assert grid_run["run_id"] == alone.run_id
        with Store(tmp_path / "grid") as st:
            folds = st.catalog.fold_table(alone.run_id).to_dicts()
        assert [f["pcc_mean"] for f in folds] == pytest.approx([f["pcc_mean"] for f in alone.folds], abs=1e-12)


def test_a_failing_cell_is_recorded_and_the_grid_goes_on(root, tmp_path):
    store = tmp_path / "store"
    args = ("--task", "tiny", "--encoder", "test-tiny-cnn", "--reducer", "identity,test-grid-boom", "--alpha", "hest,1")
    result = _bench(root, store, *args)
    assert result.exit_code == 3, result.output
    assert result.output.count("FAILED") >= 2 * 2  # both protocols of the failing reducer: a line and a row each
    assert "RuntimeError: boom in fit" in result.output
    assert "Error: 2 of 4 cells failed" in result.output
    status = {(r["reducer"], r["alpha_rule"]): (r["status"], r["error"]) for r in _runs(store)}
    assert status[("identity", "hest")] == ("complete", None) and status[("identity", "1.0")] == ("complete", None)
    assert status[("test-grid-boom", "1.0")] == ("failed", "RuntimeError: boom in fit")
    again = _bench(root, store, *args)
    assert again.exit_code == 3 and again.output.count("cached") >= 2


def test_a_flipped_bit_in_a_stored_embedding_file_fails_the_run_with_one_line(root, tmp_path):
    import h5py

    store = tmp_path / "store"
    args = ("--task", "tiny", "--encoder", "test-tiny-cnn", "--reducer", "identity")
    assert _bench(root, store, *args).exit_code == 0
    [path] = (store / "embeddings").rglob("S1.h5")
    with h5py.File(path, "r+") as h5:
        row = h5["embeddings"][0]
        row.view(np.uint32)[3] ^= 1  # the lowest mantissa bit of one float
        h5["embeddings"][0] = row
    result = _bench(root, store, *args, "--alpha", "cv")  # a new cell: reads the stored embeddings again
    assert result.exit_code == 3 and "Traceback" not in result.output, result.output
    flat = "".join(result.output.split())  # rich wraps long lines (and shortens the path in the table)
    assert "StoreError:" in flat and "checksummismatch" in flat and "deleteitandrerun" in flat, result.output
    run = {r["alpha_rule"]: r for r in _runs(store)}
    assert "cv" not in run  # refused when read, before its run row was written (issue 15)
    assert run["hest"]["status"] == "complete"  # computed before the damage

# -- PCC kinds and gene panels ---------------------------------------------------------------------------


def test_per_sample_pcc_is_the_mean_over_test_samples_of_each_samples_pcc(root, tmp_path):
    assert per_sample_fold_score({"a": [0.2, np.nan, 0.4], "b": [np.nan], "c": [0.6]}) == pytest.approx(0.45)
    assert np.isnan(per_sample_fold_score({"a": [np.nan]}))
    assert per_sample_task_summary({0: {"a": [0.1]}, 1: {"a": [0.3], "b": [0.5]}}) == pytest.approx((0.25, 0.15))

    store = tmp_path / "store"
    result = _bench(root, store, "--task", "panel", "--encoder", "test-tiny-cnn", "--reducer", "pca", "--pcc", "both")
    assert result.exit_code == 0, result.output
    with Store(store) as st:
        (run_id,) = [r["run_id"] for r in _runs(store)]
        preds = st.catalog.spot_predictions([run_id])
        pooled = st.catalog.summary().row(0, named=True)["pcc_mean"]
    fold_scores = []  # recomputed from the stored spot predictions, with numpy's own correlation
    for fold in (0, 1):
        sample_means = []
        for sid in ("S0", "S1") if fold == 1 else ("S2", "S3"):
            part = preds.filter((preds["fold"] == fold) & (preds["sample_id"] == sid))
            rs = [np.corrcoef(g["y_true"].to_numpy(), g["y_pred"].to_numpy())[0, 1] for _, g in part.group_by("gene")]
            sample_means.append(np.nanmean(rs))
        fold_scores.append(np.mean(sample_means))
    expected = (np.mean(fold_scores), np.std(fold_scores))
    task = open_task("panel", root)
    with Store(store) as st:
        (res,) = run_task(task, "test-tiny-cnn", [ReducerChoice("pca")], Protocol.from_options(), st, device="cpu")
    assert res.cached and res.pcc_per_sample == pytest.approx(expected, abs=1e-5)
    assert abs(res.pcc_per_sample[0] - pooled) > 1e-4  # two test samples per fold: a different number
    row = next(line for line in result.output.splitlines() if "PANEL" in line and "pca" in line)
    (mean, std), (sample_mean, sample_std) = res.pcc, res.pcc_per_sample
    assert f"{mean:.4f} ± {std:.4f}" in row and f"{sample_mean:.4f} ± {sample_std:.4f}" in row
    assert "PCC pooled" in result.output and "PCC per-sample" in result.output


def test_pam50_panel_evaluates_the_genes_every_sample_has_and_lists_the_others(root, tmp_path):
    store = tmp_path / "store"
    result = _bench(root, store, "--task", "panel", "--encoder", "test-tiny-cnn", "--reducer", "identity",
                    "--eval-genes", "pam50,task")
    assert result.exit_code == 0, result.output
    absent = ["ACTR3B", *PAM50[40:]]
    out = " ".join(result.output.split())
    note = f"Note: PANEL: 11 of 50 PAM50 genes are not measured in every sample and are not evaluated: {', '.join(absent)}"
    assert note in out
    assert "39 PAM50 genes" in out  # the protocol line
    runs = {r["gene_rule"]: r for r in _runs(store)}
    assert set(runs) == {"file", "task"}
    protocol = json.loads(runs["file"]["protocol"])
    assert protocol["panel"] == "pam50" and protocol["gene_list"] == list(PAM50[1:40])
    assert "panel" not in json.loads(runs["task"]["protocol"])
    with Store(store) as st:
        genes = st.catalog.gene_table(run_ids=[runs["file"]["run_id"]])
    assert sorted(set(genes["gene"])) == sorted(PAM50[1:40])


def test_weights_per_encoder_from_the_grid_file_and_the_command_line(root, tmp_path):
    """[weights] in the grid file, overridden by --weights ENCODER=VALUE: each encoder's runs carry its
    own weights fingerprint, and random weights are labelled wherever results are shown."""
    from stbench.encoders.weights import file_fingerprint

    own = tmp_path / "own.pt"
    own.write_bytes((Path(tempfile.gettempdir()) / "stbench-tests" / "tiny-cnn.pt").read_bytes())
    cfg = tmp_path / "grid.toml"
    cfg.write_text('task = "tiny"\nencoder = ["test-grid-a", "test-grid-b"]\nreducer = "identity"\n'
                   '[weights]\ntest-grid-a = "own.pt"\ntest-grid-b = "random:5"\n')
    store = tmp_path / "store"
    result = _bench(root, store, "--config", str(cfg), "--weights", "test-grid-b=random:3")
    assert result.exit_code == 0, result.output
    fps = {r["encoder"]: r["weights_fingerprint"] for r in _runs(store)}
    assert fps["test-grid-a"] == file_fingerprint(own) and re.fullmatch(r"random:seed3-timm.+-torch.+", fps["test-grid-b"])
    assert "test-grid-b (random weights)" in result.output and "test-grid-a (random weights)" not in result.output


def test_grid_file_weights_of_encoders_left_out_by_the_command_line_are_ignored():
    from stbench.grid import weights_by_encoder

    given = [("test-grid-a", "random:1"), ("test-grid-b", "random:2")]
    assert weights_by_encoder([], ["test-grid-a"], given) == {"test-grid-a": "random:1"}
    assert weights_by_encoder(["test-grid-a=random:7"], ["test-grid-a"], given) == {"test-grid-a": "random:7"}
    with pytest.raises(StbenchError, match="which is not in the grid"):
        weights_by_encoder(["test-grid-b=random"], ["test-grid-a"], given)
    with pytest.raises(StbenchError, match="Did you mean"):
        weights_by_encoder([], ["test-grid-a"], [("test-grid-aa", "random")])


def test_random_weights_of_a_real_architecture_are_seeded_and_refused_where_unsupported():
    import torch

    from stbench.encoders import get_encoder
    from stbench.errors import WeightsError

    enc = get_encoder("resnet50")
    a, b, c = enc.load("random"), enc.load("random:0"), enc.load("random:1")
    assert a.fingerprint.startswith("random:seed0-timm") and c.fingerprint.startswith("random:seed1-timm")
    assert a.origin.startswith("random init")
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["net.conv1.weight"], sc["net.conv1.weight"])
    with torch.no_grad():
        assert a.model(torch.rand(1, 3, 224, 224)).shape == (1, 1024)
    with pytest.raises(WeightsError, match="phikon: random weights are not available for this encoder"):
        get_encoder("phikon").load("random")


def test_precision_and_ridge_dtype_options_key_embeddings_and_results_apart(root, tmp_path):
    """--precision gives the embeddings another key (never mixed with the default's); --ridge-dtype float64 is
    its own protocol, labelled as such. Issue 13."""
    from stbench.encoders import compute_tag, get_encoder
    from stbench.encoders.weights import file_fingerprint

    store = tmp_path / "store"
    plain = _bench(root, store, "--task", "tiny", "--encoder", "test-grid-a", "--reducer", "identity")
    assert plain.exit_code == 0, plain.output
    half = _bench(root, store, "--task", "tiny", "--encoder", "test-grid-a", "--reducer", "identity",
                  "--precision", "fp16", "--ridge-dtype", "float64")
    assert half.exit_code == 0, half.output
    weights = file_fingerprint(Path(tempfile.gettempdir()) / "stbench-tests" / "tiny-cnn.pt")
    runs = _runs(store)
    assert {(r["weights_fingerprint"], r["protocol_fingerprint"]) for r in runs} == {
        (weights, Protocol.from_options().fingerprint),  # fp32, the spec's: the weights' fingerprint unchanged
        (weights + "+fp16", Protocol.from_options(dtype="float64").fingerprint)}
    with Store(store) as st:
        keys = {fp for (fp,) in st.catalog.rows("SELECT DISTINCT weights_fingerprint FROM embeddings")}
    assert keys == {weights, weights + "+fp16"}  # the fp16 run embedded again, under its own key
    assert "ridge[lsqr float64" in half.output
    assert get_encoder("test-grid-a", precision="bf16").fingerprint() == weights + "+bf16"
    assert compute_tag(get_encoder("test-grid-a").spec) == ""
    bad = _bench(root, store, "--task", "tiny", "--encoder", "test-grid-a", "--precision", "fp8")
    assert bad.exit_code != 0 and "Invalid value for '--precision'" in bad.output


def test_read_grid_file_reports_a_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read as TOML"):
        read_grid_file(tmp_path / "none.toml")
