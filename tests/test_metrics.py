"""Metrics: Pearson per gene (pooled), MSE, NaN handling, summaries."""

import numpy as np
import pytest
from scipy.stats import pearsonr

from stbench import metrics


def test_pearson_matches_scipy_per_gene():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(200, 5))
    p = t + rng.normal(scale=[0.1, 0.5, 1, 2, 5], size=(200, 5))
    r = metrics.pearson_per_gene(t, p)
    expected = [pearsonr(t[:, j], p[:, j]).statistic for j in range(5)]
    np.testing.assert_allclose(r, expected, rtol=1e-10)
    assert r[0] > r[-1]


def test_constant_prediction_or_truth_is_nan_not_zero():
    rng = np.random.default_rng(1)
    t = rng.normal(size=(50, 3))
    p = rng.normal(size=(50, 3))
    p[:, 1] = 3.0  # constant prediction
    t[:, 2] = 0.0  # constant truth (a gene never detected in the test fold)
    r = metrics.pearson_per_gene(t, p)
    assert np.isfinite(r[0]) and np.isnan(r[1]) and np.isnan(r[2])


def test_fold_summary_counts_nan_genes():
    pcc = np.array([0.5, np.nan, 0.1, 0.3])
    s = metrics.summarise_fold(pcc, np.array([1.0, 2.0, 3.0, 4.0]))
    assert s.n_nan == 1 and s.n_genes == 4
    assert s.pcc_mean == pytest.approx(0.3)
    assert s.mse_mean == pytest.approx(2.5)
    assert s.pcc_top == {}  # fewer than 10 genes: no PCC-10


def test_top_k_mean_takes_the_best_genes():
    pcc = np.linspace(0, 1, 60)
    assert metrics.top_k_mean(pcc, 10) == pytest.approx(pcc[-10:].mean())
    assert np.isnan(metrics.top_k_mean(pcc, 200))
    s = metrics.summarise_fold(pcc, np.zeros(60))
    assert set(s.pcc_top) == {10, 50}


def test_task_summary_uses_population_std():
    mean, std = metrics.task_summary([0.2, 0.4])
    assert mean == pytest.approx(0.3) and std == pytest.approx(0.1)  # population std, as HEST (np.std)


def test_per_sample_pearson_splits_by_sample():
    rng = np.random.default_rng(2)
    t = rng.normal(size=(40, 2))
    p = t.copy()
    p[20:] = -t[20:]
    ids = ["a"] * 20 + ["b"] * 20
    per = metrics.per_sample_pearson(t, p, ids)
    np.testing.assert_allclose(per["a"], 1.0)
    np.testing.assert_allclose(per["b"], -1.0)


def test_mse_per_gene_is_the_mean_over_spots_hand_computed():
    t = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    p = np.array([[1.0, 1.0], [2.0, 3.0], [1.0, 1.0]])
    # gene 0: (1 + 0 + 9) / 3 spots; gene 1: (0 + 4 + 0) / 3 spots
    np.testing.assert_allclose(metrics.mse_per_gene(t, p), [10 / 3, 4 / 3], rtol=1e-12)


def test_fold_summary_std_is_the_population_std_over_genes_with_a_pcc():
    s = metrics.summarise_fold(np.array([0.2, np.nan, 0.4, 0.9]), np.array([1.0, 2.0, 3.0, 6.0]))
    # genes 0.2, 0.4, 0.9: mean 0.5, population variance ((0.3)^2 + (0.1)^2 + (0.4)^2) / 3
    assert s.pcc_mean == pytest.approx(0.5, rel=1e-12)
    assert s.pcc_std == pytest.approx(np.sqrt(0.26 / 3), rel=1e-12)
    assert s.mse_mean == pytest.approx(3.0, rel=1e-12)  # every gene's MSE, NaN PCC or not
    assert (s.n_genes, s.n_nan) == (4, 1)


def test_fold_summary_top_k_hand_computed():
    pcc = np.concatenate([np.arange(1, 13) / 100.0, [np.nan]])  # 0.01 .. 0.12 and one undefined gene
    s = metrics.summarise_fold(pcc, np.zeros(13))
    assert s.pcc_top == {10: pytest.approx(sum(range(3, 13)) / 1000.0, rel=1e-12)}  # the ten best: 0.03 .. 0.12
    assert s.pcc_mean == pytest.approx(0.065, rel=1e-12)


def test_per_sample_scores_hand_computed():
    fold = {"a": [0.1, 0.3, np.nan], "b": [0.5, np.nan, np.nan], "c": [np.nan, np.nan, np.nan]}
    assert metrics.per_sample_fold_score(fold) == pytest.approx((0.2 + 0.5) / 2, rel=1e-12)  # c has no PCC
    mean, std = metrics.per_sample_task_summary({1: {"x": [0.6]}, 0: fold})
    assert mean == pytest.approx((0.35 + 0.6) / 2, rel=1e-12) and std == pytest.approx(0.125, rel=1e-12)
    assert np.isnan(metrics.per_sample_fold_score({"c": [np.nan]}))
