"""BP-Booster on the real HER2+ sections (efficientnet-lite0, MSigDB Hallmark v7.0 from shared/data): the gene
programs the paper's rule finds per fold, what the run log reports, and the two attention readings' mechanism
on real embeddings. Prediction quality is reported in the issue notes from full runs, not asserted here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stbench import runner
from stbench.encoders import get_encoder
from stbench.extract import ensure_embeddings
from stbench.protocol import Protocol
from stbench.reducers import create_reducer
from stbench.reducers.bpbooster import load_booster
from stbench.runner import ReducerChoice, fit_predict_fold, run_task
from stbench.stores import Store
from tests.conftest import require_shared

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

FAST = {"epochs": 5}


@pytest.fixture(scope="module")
def hallmark():
    return require_shared("genesets", "h.all.v7.0.symbols.gmt")


def test_gene_programs_per_fold_are_reported_and_saved(her2st_run, hallmark):
    task, store_dir, _ = her2st_run
    with Store(store_dir) as st:
        (res,) = run_task(task, "efficientnet-lite0",
                          [ReducerChoice("bpbooster-gp", {**FAST, "gene_sets": str(hallmark)})],
                          Protocol.from_options(), st, device="cpu")
        folds = st.catalog.fold_table(res.run_id).to_dicts()
    assert len(folds) == 2 and all(np.isfinite(f["pcc_mean"]) for f in folds)
    for f in folds:
        r = json.loads(f["reducer_report"])
        kept = {k: v for k, v in r["overlap"].items() if v >= 10}
        assert r["programs_kept"] == len(kept) >= 1 and r["programs_total"] == 50
        assert r["n_svg"] >= 50 and r["svg_rule"] in ("intersection", "mean-rank")
        assert 0 < r["init_prototype_corr"] < 1
        booster = load_booster(st.resolve(f["model_path"]))  # recorded relative to the store root
        assert set(booster.prototype_names_) == set(kept)
        assert all(n.startswith("HALLMARK_") for n in booster.prototype_names_)
        assert len(booster.hvgs_) == 200


def test_literal_reading_is_affine_on_real_embeddings_and_the_default_is_not(her2st_run):
    task, store_dir, _ = her2st_run
    with Store(store_dir) as st:
        _, paths = ensure_embeddings(task, get_encoder("efficientnet-lite0"), st, device="cpu")
    data = runner._load_samples(task, paths)
    fold = task.folds[1]  # trains on B4 alone: the quicker fold
    X = np.concatenate([data[s].X for s in fold.test])[:200].astype(np.float64)
    gaps = {}
    for attention in ("literal", "patch-to-prototype"):
        fp = fit_predict_fold(create_reducer("bpbooster-random", **FAST, attention=attention), Protocol.from_options(),
                              list(task.genes), data, fold, task, "efficientnet-lite0", device="cpu")
        b = fp.reducer
        a_, c_ = X[:100], X[100:200]
        mix = b.transform((0.3 * a_ + 0.7 * c_).astype(np.float32))
        lin = 0.3 * b.transform(a_.astype(np.float32)) + 0.7 * b.transform(c_.astype(np.float32))
        gaps[attention] = float(np.abs(mix - lin).max() / np.abs(lin).max())
    assert gaps["literal"] < 1e-4  # float32 round-off only
    assert gaps["patch-to-prototype"] > 1e-2
