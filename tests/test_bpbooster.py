"""BP-Booster as a reducer, through the runner and the CLI, on a tiny synthetic task: options and paper
defaults, no leakage from the test fold, determinism, the saved booster, the gene-selection cache,
`bench explain` and `bench ablate`, and the errors a user meets."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from click.testing import CliRunner

from stbench import runner
from stbench.cli import cli
from stbench.encoders import encoders
from stbench.errors import FetchError, ProtocolError, StbenchError
from stbench.extract import ensure_embeddings
from stbench.protocol import Protocol
from stbench.reducers import create_reducer, reducers
from stbench.reducers.bpbooster import load_booster, paper_defaults
from stbench.runner import ReducerChoice, fit_predict_fold, run_task
from stbench.stores import Store
from stbench.tasks import open_task
from tests._tiny import make_tiny_task, tiny_encoder

N_GENES = 300
FAST = {"epochs": 3, "n_hvg": 40, "latent_dim": 16, "heads": 4}


@pytest.fixture(scope="module", autouse=True)
def _tiny_encoder():
    if "test-tiny-cnn" not in encoders:
        encoders.register(tiny_encoder(), origin="tests")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bpb") / "data"
    make_tiny_task(root, n_spots=40, n_genes=N_GENES)
    return root


@pytest.fixture(scope="module")
def gmt(tmp_path_factory):
    """Ten pathways of 40 task genes each: with 60 SVGs of 300 genes, each shares about 8, so min_shared=3 keeps them."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("gmt") / "programs.gmt"
    lines = [f"PATHWAY_{j}\tdesc\t" + "\t".join(f"G{i:03d}" for i in rng.choice(N_GENES, 40, replace=False)) for j in range(10)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _gp(gmt, **kw):
    return {**FAST, "gene_sets": str(gmt), "min_shared": 3, "n_svg": 60, "svg_min_intersection": 10, **kw}


def _fold_data(root, store_dir):
    task = open_task("tiny", root)
    with Store(store_dir) as st:
        _, paths = ensure_embeddings(task, encoders.get("test-tiny-cnn"), st, device="cpu")
    return task, runner._load_samples(task, paths)


# -- options and defaults -------------------------------------------------------------------------------

def test_both_reducers_are_registered_with_their_options():
    assert {"bpbooster-random", "bpbooster-gp"} <= set(reducers.names())
    assert reducers.resolve("bpb-gp") == "bpbooster-gp"
    r = create_reducer("bpbooster-random", lr="1e-4", prototypes="32", attention="literal", dim_gate="false")
    assert (r.options.lr, r.options.prototypes, r.options.attention, r.options.dim_gate) == (1e-4, 32, "literal", False)


@pytest.mark.parametrize(("options", "match"), [
    ({"attention": "sideways"}, "attention"),
    ({"recon_loss": "false", "reg_loss": "false"}, "cannot both be off"),
    ({"epochs": "0"}, "epochs"),
    ({"gates": "off"}, "unknown option"),
    ({"lr": "fast"}, "not a valid float"),
])
def test_bad_options_are_refused_with_a_clear_message(options, match):
    with pytest.raises(StbenchError, match=match):
        create_reducer("bpbooster-random", **options)


def test_paper_defaults_fill_unset_options_by_encoder_and_task():
    assert paper_defaults("IDC", "uni", "random") == {"lr": 1e-2, "latent_dim": 128, "prototypes": 32}
    assert paper_defaults("IDC", "uni", "gene-program")["lr"] == 1e-4
    assert paper_defaults("PRAD", "resnet50", "gene-program") == {"lr": 1e-5, "latent_dim": 512, "prototypes": 64}
    assert paper_defaults("her2st", "efficientnet-lite0", "random") == {"lr": 1e-3, "latent_dim": 256, "prototypes": 64}
    r = create_reducer("bpbooster-random", lr="5e-4")
    r.resolve(task="LUNG", encoder="conch")
    assert (r.options.lr, r.options.latent_dim, r.options.prototypes) == (5e-4, 128, 32)  # explicit lr kept
    # the resolved values are what the run's identity and the store record
    assert json.loads(r.options_key())["latent_dim"] == 128


def test_gene_sets_content_is_part_of_the_run_identity(gmt, tmp_path):
    a = create_reducer("bpbooster-gp", gene_sets=str(gmt))
    other = tmp_path / "other.gmt"
    other.write_text(gmt.read_text().replace("PATHWAY_0", "PATHWAY_ZERO"))
    b = create_reducer("bpbooster-gp", gene_sets=str(other))
    ka, kb = json.loads(a.options_key()), json.loads(b.options_key())
    assert ka["gene_sets_sha256"] != kb["gene_sets_sha256"]
    with pytest.raises(StbenchError, match="does not exist|not found|no such"):
        create_reducer("bpbooster-gp", gene_sets=str(tmp_path / "missing.gmt")).resolve(task="T", encoder="e")


# -- no leakage ---------------------------------------------------------------------------------------

def _fitted_quantities(reducer):
    state = reducer.state()
    return {
        "hvgs": state["hvgs"], "svgs": state["svgs"], "prototypes": state["prototype_names"],
        "profiles": state["program_profiles"].numpy(), "mean": state["input_mean"].numpy(),
        "std": state["input_std"].numpy(), **{k: v.numpy() for k, v in state["state_dict"].items()},
    }


def test_garbage_in_the_test_fold_changes_nothing_fitted_and_no_prediction(root, gmt, tmp_path):
    task, data = _fold_data(root, tmp_path / "s")
    fold = task.folds[0]
    protocol = Protocol.from_options(genes="train-hvg")
    outs = []
    for garbage in (False, True):
        d = copy.deepcopy(data)
        if garbage:
            rng = np.random.default_rng(123)
            for sid in fold.test:
                c = d[sid].counts
                c.X = rng.poisson(50, size=c.shape).astype(np.float32) * rng.integers(0, 2, size=c.shape)
        genes = runner._fold_genes(protocol, task, d, fold.train)
        fp = fit_predict_fold(create_reducer("bpbooster-gp", **_gp(gmt)), protocol, genes, d, fold, task, "test-tiny-cnn",
                              device="cpu")
        outs.append((genes, fp, _fitted_quantities(fp.reducer)))
    (g0, fp0, q0), (g1, fp1, q1) = outs
    assert g0 == g1
    assert fp0.alpha == fp1.alpha
    assert q0.keys() == q1.keys()
    for k in q0:
        assert np.array_equal(np.asarray(q0[k]), np.asarray(q1[k])), k
    np.testing.assert_array_equal(fp0.pred, fp1.pred)
    assert not np.array_equal(fp0.Y_test, fp1.Y_test)  # the garbage did reach the test truth


def test_fit_sees_only_training_spots(root, gmt, tmp_path):
    task, data = _fold_data(root, tmp_path / "s")
    fold = task.folds[1]
    seen = {}

    class Spy(type(create_reducer("bpbooster-gp"))):
        def fit(self, train):
            seen["samples"] = set(map(str, train.sample_ids))
            seen["n"] = train.expression.n_obs
            return super().fit(train)

    fit_predict_fold(Spy(**_gp(gmt)), Protocol.from_options(), list(task.genes), data, fold, task, "test-tiny-cnn")
    assert seen["samples"] == set(fold.train) and seen["n"] == sum(len(data[s].X) for s in fold.train)


# -- determinism, persistence, cache ------------------------------------------------------------------

def test_same_seed_same_booster_other_seed_other_booster(root, gmt, tmp_path):
    task, data = _fold_data(root, tmp_path / "s")
    fold = task.folds[0]

    def fit(seed):
        r = fit_predict_fold(create_reducer("bpbooster-random", **FAST), Protocol.from_options(seed=seed), list(task.genes),
                             data, fold, task, "test-tiny-cnn").reducer
        return r.state()["state_dict"]

    a, b, c = fit(1), fit(1), fit(2)
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert not all(np.array_equal(a[k].numpy(), c[k].numpy()) for k in a)


def test_runner_saves_each_fold_booster_and_it_reloads_to_the_same_latent(root, gmt, tmp_path):
    task = open_task("tiny", root)
    with Store(tmp_path / "s") as st:
        (res,) = run_task(task, "test-tiny-cnn", [ReducerChoice("bpbooster-gp", _gp(gmt))], Protocol.from_options(), st,
                          device="cpu")
        folds = st.catalog.fold_table(res.run_id).to_dicts()
        _, paths = ensure_embeddings(task, encoders.get("test-tiny-cnn"), st, device="cpu")
        data = runner._load_samples(task, paths)
    assert len(folds) == 3
    for f in folds:
        report = json.loads(f["reducer_report"])
        assert report["programs_kept"] >= 1 and -1 <= report["init_prototype_corr"] <= 1
        # the paper's rule: SVGs found in both training samples' top 60, unless fewer than 10 are
        assert (report["svg_rule"], report["n_svg"]) in {("intersection", report["svg_intersection"]), ("mean-rank", 60)}
        booster = load_booster(st.resolve(f["model_path"]))  # recorded relative to the store root
        assert booster.prototype_names_[0].startswith("PATHWAY_")
        X = np.concatenate([data[s].X for s in json.loads(f["test_samples"])])
        # refit from scratch with the same seed: the saved booster reproduces the latent of a fresh fit
        fold = task.folds[f["fold"]]
        fresh = fit_predict_fold(create_reducer("bpbooster-gp", **_gp(gmt)), Protocol.from_options(), list(task.genes),
                                 data, fold, task, "test-tiny-cnn").reducer
        np.testing.assert_allclose(booster.transform(X), fresh.transform(X), rtol=1e-5, atol=1e-6)
    # the reducer line in the run's stored options carries the resolved defaults and the GMT digest
    opts = json.loads(res.reducer_options)
    assert opts["lr"] == 1e-3 and len(opts["gene_sets_sha256"]) == 16


def test_gene_selections_are_cached_in_the_store_per_fold(root, gmt, tmp_path, monkeypatch):
    task = open_task("tiny", root)
    with Store(tmp_path / "s") as st:
        run_task(task, "test-tiny-cnn", [ReducerChoice("bpbooster-gp", _gp(gmt))], Protocol.from_options(), st, device="cpu")
        rows = st.catalog.con.execute("SELECT fold, kind, value FROM gene_selections ORDER BY fold, kind").fetchall()
        assert [(f, k) for f, k, _ in rows] == [(0, "hvg"), (0, "svg"), (1, "hvg"), (1, "svg"), (2, "hvg"), (2, "svg")]
        svg = json.loads(rows[1][2])
        assert svg["rule"] in ("intersection", "mean-rank") and 10 <= len(svg["genes"]) <= 60
        # a second run with other training options reads the selections instead of recomputing them
        from stbench.reducers.bpbooster import programs

        monkeypatch.setattr(programs, "select_svgs", lambda *a, **k: pytest.fail("SVGs recomputed"))
        monkeypatch.setattr(programs, "select_hvgs", lambda *a, **k: pytest.fail("HVGs recomputed"))
        (res,) = run_task(task, "test-tiny-cnn", [ReducerChoice("bpbooster-gp", _gp(gmt, epochs=2))],
                          Protocol.from_options(), st, device="cpu")
        assert len(res.folds) == 3 and not res.cached


# -- errors -------------------------------------------------------------------------------------------

def test_no_pathway_reaching_the_threshold_fails_with_the_counts(root, gmt, tmp_path):
    task = open_task("tiny", root)
    with Store(tmp_path / "s") as st, pytest.raises(ProtocolError, match=r"fold 0: only 0 of 10 pathways.*PATHWAY_"):
        run_task(task, "test-tiny-cnn", [ReducerChoice("bpbooster-gp", _gp(gmt, min_shared=50))], Protocol.from_options(),
                 st, device="cpu")


def test_lower_threshold_lowers_min_shared_until_enough_pathways_qualify(root, gmt, tmp_path, caplog):
    task = open_task("tiny", root)
    with Store(tmp_path / "s") as st:
        (res,) = run_task(task, "test-tiny-cnn",
                          [ReducerChoice("bpbooster-gp", _gp(gmt, min_shared=50, min_programs=2, lower_threshold=True))],
                          Protocol.from_options(), st, device="cpu")
    for f in res.folds:
        report = json.loads(f["reducer_report"])
        assert report["min_shared"] < 50 and report["programs_kept"] >= 2
        assert sum(v >= report["min_shared"] for v in report["overlap"].values()) == report["programs_kept"]
    assert "lowered the threshold" in caplog.text


def test_hallmark_offline_fails_before_any_work(root, tmp_path, monkeypatch):
    monkeypatch.setenv("STBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STBENCH_OFFLINE", "1")
    result = CliRunner().invoke(cli, ["run", "--task", "tiny", "--encoder", "test-tiny-cnn", "--reducer", "bpbooster-gp",
                                      "--data-root", str(root), "--store", str(tmp_path / "s")])
    assert result.exit_code != 0
    assert "--gene-sets" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "s" / "embeddings").exists()  # failed before extraction
    with pytest.raises(FetchError):
        create_reducer("bpbooster-gp").resolve(task="tiny", encoder="test-tiny-cnn")


# -- the commands -------------------------------------------------------------------------------------

def test_bench_run_explain_and_spot_attention(root, gmt, tmp_path):
    store = str(tmp_path / "s")
    cfg = tmp_path / "reducers.toml"
    cfg.write_text("[bpbooster-gp]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in _gp(gmt).items() if k != "gene_sets"))
    args = ["--task", "tiny", "--encoder", "test-tiny-cnn", "--store", store, "--device", "cpu"]
    out = CliRunner().invoke(cli, ["run", *args, "--data-root", str(root), "--reducer", "bpbooster-gp",
                                   "--reducer-config", str(cfg), "--gene-sets", str(gmt), "--reducer-opt", "epochs=4"])
    assert out.exit_code == 0, out.output
    assert "J=" in out.output and "initial prototype mean pairwise corr" in out.output and "epochs=4" in out.output
    spots = tmp_path / "spots.csv"
    out = CliRunner().invoke(cli, ["explain", *args[:4], "--fold", "1", "--store", store, "--spots", str(spots)])
    assert out.exit_code == 0, out.output
    assert "PATHWAY_" in out.output and "mean attention" in out.output and "SYNTHETIC" in out.output
    import polars as pl

    df = pl.read_csv(spots)
    names = [c for c in df.columns if c.startswith("PATHWAY_")]
    assert len(df) == 40 and names  # fold 1's test sample has 40 spots
    np.testing.assert_allclose(df.select(names).sum_horizontal().to_numpy(), 1.0, atol=1e-5)  # a distribution per spot
    js = CliRunner().invoke(cli, ["explain", *args[:4], "--fold", "1", "--store", store, "--format", "json"])
    payload = json.loads(js.output)
    ranked = payload["pathways"]
    assert [p["rank_gate"] for p in ranked] == list(range(1, len(ranked) + 1))
    assert sorted(p["gate"] for p in ranked) == sorted((p["gate"] for p in ranked))
    assert payload["report"]["programs_kept"] == len(ranked)
    # explain on the same store twice: identical numbers (nothing retrained)
    again = json.loads(CliRunner().invoke(cli, ["explain", *args[:4], "--fold", "1", "--store", store, "--format", "json"]).output)
    assert again["pathways"] == ranked


def test_explain_without_a_run_says_what_to_do(tmp_path):
    from stbench.stores import Store as S

    with S(tmp_path / "s") as st:
        assert st.catalog.schema_version >= 2  # an empty, migrated catalog
    out = CliRunner().invoke(cli, ["explain", "--task", "tiny", "--store", str(tmp_path / "s")])
    assert out.exit_code != 0 and "bench run --task tiny" in out.output


def test_bench_ablate_stores_each_row_as_its_own_variant(root, gmt, tmp_path):
    store = str(tmp_path / "s")
    args = ["ablate", "--task", "tiny", "--encoder", "test-tiny-cnn", "--data-root", str(root), "--store", store,
            "--device", "cpu", "--rows", "ridge,attention,both-gates,gene-program,literal-gp", "--gene-sets", str(gmt)]
    opts = [x for k, v in _gp(gmt).items() if k != "gene_sets" for x in ("--reducer-opt", f"{k}={v}")]
    out = CliRunner().invoke(cli, args + opts)
    assert out.exit_code == 0, out.output
    table = out.output[out.output.index("Ablation: "):]
    assert all(k in table for k in ("ridge", "attention", "both-gates", "gene-program", "literal-gp", "published"))
    assert "0.6380" in table  # the paper's number, in its own column
    with Store(tmp_path / "s") as st:
        runs = st.catalog.summary().to_dicts()
    assert len(runs) == 5 and len({r["run_id"] for r in runs}) == 5
    variants = sorted((r["reducer"], json.loads(r["reducer_options"]).get("attention"),
                       json.loads(r["reducer_options"]).get("prototype_gate")) for r in runs)
    assert ("bpbooster-random", "patch-to-prototype", False) in variants
    assert ("bpbooster-gp", "literal", True) in variants
    # rerun: every row read back from the store
    again = CliRunner().invoke(cli, args + opts)
    assert again.exit_code == 0 and again.output.count("(cached)") == 5


def test_training_shows_an_epoch_progress_bar_and_removes_it(root, tmp_path):
    calls = []

    class SpyProgress:
        def add_task(self, description, total=None, **kw):
            calls.append(("add", description, total))
            return len(calls)

        def advance(self, task, advance=1):
            calls.append(("advance", task))

        def remove_task(self, task):
            calls.append(("remove", task))

    task = open_task("tiny", root)
    with Store(tmp_path / "s") as st:
        run_task(task, "test-tiny-cnn", [ReducerChoice("bpbooster-random", FAST)], Protocol.from_options(), st,
                 device="cpu", progress=SpyProgress())
    epochs = [c for c in calls if c[0] == "add" and "training epochs" in c[1]]
    assert len(epochs) == 3 and all(c[2] == FAST["epochs"] for c in epochs)  # one bar per fold
    ids = [calls.index(c) + 1 for c in epochs]
    for i in ids:
        assert sum(c == ("advance", i) for c in calls) == FAST["epochs"] and ("remove", i) in calls
