"""Metrics: Pearson per gene (pooled), MSE, NaN handling, summaries."""

import warnings

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


def test_pearson_of_float32_input_is_computed_in_float64():
    rng = np.random.default_rng(3)
    t = 1000.0 + rng.normal(size=(300, 3))  # a large offset: centring in float32 would lose ~4 digits
    p = t + rng.normal(size=(300, 3))
    t32, p32 = t.astype(np.float32), p.astype(np.float32)
    t64, p64 = t32.astype(np.float64), p32.astype(np.float64)  # the same values, exactly
    expected = [pearsonr(t64[:, j], p64[:, j]).statistic for j in range(3)]
    for y_true, y_pred in ((t32, p64), (t64, p32)):
        r = metrics.pearson_per_gene(y_true, y_pred)
        assert r.dtype == np.float64
        np.testing.assert_allclose(r, expected, rtol=1e-10)


def test_pearson_rejects_unequal_or_non_2d_shapes_naming_them():
    with pytest.raises(ValueError, match=r"^y_true \(4, 2\) and y_pred \(4, 3\) must be equal 2-D shapes$"):
        metrics.pearson_per_gene(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"^y_true \(4,\) and y_pred \(4,\) must be equal 2-D shapes$"):
        metrics.pearson_per_gene(np.arange(4.0), np.arange(4.0))


def test_pearson_of_a_single_gene_hand_computed():
    # centred: truth (-1, 0, 1), prediction (-1, 1, 0): r = 1 / (sqrt(2) * sqrt(2))
    r = metrics.pearson_per_gene([[1.0], [2.0], [3.0]], [[1.0], [3.0], [2.0]])
    np.testing.assert_allclose(r, [0.5], rtol=1e-12)


def test_pearson_of_two_spots_is_plus_or_minus_one():
    r = metrics.pearson_per_gene([[1.0, 1.0], [2.0, 2.0]], [[5.0, 5.0], [7.0, 3.0]])
    np.testing.assert_allclose(r, [1.0, -1.0], rtol=1e-12)


def test_pearson_of_fewer_than_two_spots_is_nan_per_gene():
    for n_spots in (0, 1):
        r = metrics.pearson_per_gene(np.ones((n_spots, 3)), np.ones((n_spots, 3)))
        assert r.shape == (3,) and r.dtype == np.float64 and np.isnan(r).all()


def test_perfect_correlation_is_exactly_one_despite_rounding():
    t = np.array([0.1, 0.4, 0.9])  # unclipped, r is 1 + 2**-52 for (t, t) and -(1 + 2**-52) for (t, -t)
    r = metrics.pearson_per_gene(np.c_[t, t], np.c_[t, -t])
    assert r.tolist() == [1.0, -1.0]


def test_spread_at_the_rounding_threshold_is_constant_and_twice_it_is_not():
    """The threshold is inclusive: a gene is constant when its spread <= max|x| * sqrt(n_spots) * 1e-12."""
    m = float.fromhex("0x1.d1a94a2p+8")  # ~465.66: for (m, m - 2**-30) both sides are equal in float64
    on = np.array([[m], [m - 2.0**-30]])
    assert np.sqrt(((on - on.mean()) ** 2).sum()) == m * np.sqrt(2) * 1e-12  # precondition: on the boundary
    above = np.array([[m], [m - 2.0**-29]])
    other = np.array([[0.0], [1.0]])
    assert np.isnan(metrics.pearson_per_gene(on, other)[0])  # constant truth, varying prediction
    assert np.isnan(metrics.pearson_per_gene(other, on)[0])  # and the other way round
    assert metrics.pearson_per_gene(above, other)[0] == pytest.approx(-1.0, rel=1e-12)
    assert metrics.pearson_per_gene(other, above)[0] == pytest.approx(-1.0, rel=1e-12)


def test_constant_test_of_a_gene_ignores_the_scale_of_other_genes():
    rng = np.random.default_rng(4)
    t = np.c_[1e9 * rng.normal(size=30), 1e-4 * rng.normal(size=30)]  # 13 orders of magnitude apart
    p = t + np.c_[1e8 * rng.normal(size=30), 1e-5 * rng.normal(size=30)]
    expected = [pearsonr(t[:, j], p[:, j]).statistic for j in range(2)]
    np.testing.assert_allclose(metrics.pearson_per_gene(t, p), expected, rtol=1e-10)


def test_undefined_correlations_are_nan_without_runtime_warnings():
    # genes: constant truth, constant prediction, values whose squares underflow to 0
    t = np.array([[1.0, 2.0, 0.0], [1.0, 3.0, 1e-170], [1.0, 5.0, 3e-170]])
    p = np.array([[0.0, 4.0, 0.0], [1.0, 4.0, 1.0], [2.0, 4.0, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0/0 and x/0 are expected here, not news for the user's console
        r = metrics.pearson_per_gene(t, p)
    assert np.isnan(r[:2]).all()
    assert not np.isinf(r[2])  # NaN today: its spread reads as 0, below the rounding threshold


def test_mse_per_gene_is_float64_whatever_the_input_dtype():
    t = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    p = np.array([[1.0, 1.0], [2.0, 3.0], [1.0, 1.0]])
    for dtype in (np.float32, np.int64, np.longdouble):
        for y_true, y_pred in ((t.astype(dtype), p), (t, p.astype(dtype))):
            out = metrics.mse_per_gene(y_true, y_pred)
            assert out.dtype == np.float64
            np.testing.assert_allclose(out, [10 / 3, 4 / 3], rtol=1e-12)


def test_top_k_mean_with_exactly_k_defined_genes():
    pcc = np.array([0.1, np.nan, 0.2, 0.6])
    assert metrics.top_k_mean(pcc, 3) == pytest.approx(0.3, rel=1e-12)
    assert np.isnan(metrics.top_k_mean(pcc, 4))  # 4 genes, but only 3 with a PCC


def test_fold_summary_has_pcc_10_with_exactly_10_genes():
    s = metrics.summarise_fold(np.arange(10) / 10.0, np.zeros(10))
    assert s.pcc_top == {10: pytest.approx(0.45, rel=1e-12)}


def test_fold_with_no_defined_pcc_summarises_to_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Mean of empty slice" for a fold of constant predictions
        s = metrics.summarise_fold(np.full(3, np.nan), np.array([1.0, 2.0, 6.0]))
        score = metrics.per_sample_fold_score({"a": [np.nan], "b": []})
        empty = metrics.task_summary([])
    assert np.isnan(s.pcc_mean) and np.isnan(s.pcc_std) and (s.n_genes, s.n_nan) == (3, 3)
    assert s.mse_mean == pytest.approx(3.0, rel=1e-12)
    assert np.isnan(score)
    assert np.isnan(empty[0]) and np.isnan(empty[1])


def test_task_summary_of_one_fold_is_its_value_with_zero_spread():
    assert metrics.task_summary([0.25]) == (0.25, 0.0)


def test_summaries_of_float32_scores_are_computed_in_float64():
    vals = np.array([0.1, 0.2, 0.4], dtype=np.float32)
    exact = vals.astype(np.float64)
    mean, std = metrics.task_summary(list(vals))
    assert mean == pytest.approx(exact.mean(), rel=1e-12) and std == pytest.approx(exact.std(), rel=1e-12)
    score = metrics.per_sample_fold_score({"a": vals, "b": vals[:2]})
    assert score == pytest.approx((exact.mean() + exact[:2].mean()) / 2, rel=1e-12)
