"""Ridge solvers: the exact torch solver, scikit-learn's lsqr, and alpha by grouped CV.

Expected values come from numpy (normal equations, explicit CV loops) and scikit-learn, never from stbench.
"""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from stbench.regression import _device, _exact, cv_alpha, cv_splits, fit_ridge, hest_alpha


def _problem(n=300, d=20, g=4, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W = rng.normal(size=(d, g))
    return X, X @ W + noise * rng.normal(size=(n, g))


def _closed_form(X, Y, alpha, intercept=False):
    """Ridge from the normal equations in numpy float64: (coef, intercept)."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    xm = X.mean(axis=0) if intercept else np.zeros(X.shape[1])
    ym = Y.mean(axis=0) if intercept else np.zeros(Y.shape[1])
    Xc, Yc = X - xm, Y - ym
    coef = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ Yc)
    return coef, ym - xm @ coef


def _ill_conditioned(n=220, d=200, seed=0):
    """Features spanning 4 decades of scale: lsqr needs more than 2*d iterations (its own default cap)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.logspace(0, -4, d), rng.normal(size=(n, 2))


def test_hest_alpha_rule():
    assert hest_alpha(256, 50) == pytest.approx(100 / (256 * 50))


@pytest.mark.parametrize("n,d", [(300, 20), (15, 40), (25, 25)])  # primal, dual (kernel) and the switch point
@pytest.mark.parametrize("intercept", [False, True])
def test_exact_matches_closed_form(n, d, intercept):
    X, Y = _problem(n=n, d=d)
    X, Y = X + 3.0, Y - 7.0  # offsets the intercept must absorb
    coef, icpt = _closed_form(X, Y, 3.0, intercept)
    fit = fit_ridge(X, Y, alpha=3, solver="exact", intercept=intercept, device="cpu")
    np.testing.assert_allclose(fit.coef, coef, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fit.intercept, icpt, rtol=1e-10, atol=1e-12)
    assert (fit.alpha, fit.solver) == (3.0, "exact") and isinstance(fit.alpha, float)


@pytest.mark.parametrize("n,d", [(300, 20), (15, 40)])
def test_exact_centers_float32_input_in_float64(n, d):
    """Embeddings arrive as float32; the means (hence coef and intercept) must still be float64-exact."""
    X, Y = _problem(n=n, d=d)
    X32, Y32 = (X + 50.0).astype(np.float32), (Y + 20.0).astype(np.float32)
    coef, icpt = _closed_form(X32, Y32, 0.5, intercept=True)
    fit = fit_ridge(X32, Y32, alpha=0.5, solver="exact", intercept=True, device="cpu")
    np.testing.assert_allclose(fit.coef, coef, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fit.intercept, icpt, rtol=1e-10)


def test_a_large_expression_offset_costs_no_precision():
    # centring Y before solving keeps the offset out of X'Y; without it ~1e-10 of the coefficients is noise
    X, Y = _problem()
    Y = Y + 1e6
    coef, icpt = _closed_form(X, Y, 1.0, intercept=True)
    fit = fit_ridge(X, Y, alpha=1.0, solver="exact", intercept=True, device="cpu")
    np.testing.assert_allclose(fit.coef, coef, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(fit.intercept, icpt, rtol=1e-14)


def test_exact_kernel_solves_in_float64_even_when_handed_float32():
    X, Y = _problem(n=30, d=8)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    for rows in (30, 5):  # primal, dual
        w = _exact(X32[:rows], Y32[:rows], 2.0, "cpu")
        assert w.dtype == np.float64
        np.testing.assert_allclose(w, _closed_form(X32[:rows], Y32[:rows], 2.0)[0], rtol=1e-10, atol=1e-12)


def test_predict_is_float32_of_x_coef_plus_intercept():
    X, Y = _problem(n=40, d=5, g=2)
    fit = fit_ridge(X, Y, alpha=1.0, solver="exact", intercept=True, device="cpu")
    X32 = X.astype(np.float32)
    pred = fit.predict(X32)
    assert pred.dtype == np.float32
    np.testing.assert_allclose(pred, X32.astype(np.float64) @ fit.coef + fit.intercept, rtol=1e-6)


def test_default_solver_is_hests_lsqr_with_its_early_stop_and_1000_iteration_cap():
    X, Y = _ill_conditioned()
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)  # HEST hands scikit-learn float32 embeddings
    ref = Ridge(alpha=1e-8, solver="lsqr", fit_intercept=False, max_iter=1000).fit(X32, Y32)
    assert ref.n_iter_.max() > 2 * X.shape[1]  # beyond lsqr's own default limit, so max_iter=1000 is in force
    fit = fit_ridge(X, Y, alpha=1e-8)
    np.testing.assert_array_equal(fit.coef, ref.coef_.T)  # the same float32 computation
    assert np.all(fit.intercept == 0) and fit.intercept.shape == (2,)
    assert (fit.solver, fit.alpha) == ("lsqr", 1e-8)
    # the early stop is what HEST published: far from the exact ridge solution on this problem
    assert np.abs(fit.coef - _closed_form(X, Y, 1e-8)[0]).max() > 1.0


def test_lsqr_stops_at_exactly_1000_iterations_as_hest():
    """A problem lsqr needs over 1000 iterations for (singular values over 5 decades): the fit is scipy's lsqr
    stopped at 1000, not 1001 (one more iteration moves this solution by about 1)."""
    from scipy.sparse import linalg as sl

    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((800, 600)))
    v, _ = np.linalg.qr(rng.standard_normal((600, 600)))
    X = ((u * np.logspace(0, -5, 600)) @ v.T).astype(np.float32)
    y = rng.standard_normal(800).astype(np.float32)
    lsqr = {it: sl.lsqr(X, y, damp=1e-6, atol=1e-4, btol=1e-4, iter_lim=it) for it in (1000, 1001, 5000)}
    assert lsqr[5000][2] > 1001  # the cap is what stops it
    assert np.abs(lsqr[1000][0] - lsqr[1001][0]).max() > 1e-2  # so the iteration count is visible
    fit = fit_ridge(X, y[:, None], alpha=1e-12)
    np.testing.assert_allclose(fit.coef[:, 0], lsqr[1000][0], rtol=1e-5, atol=1e-5)


def test_an_lsqr_fit_predicts_in_its_own_float32_whatever_dtype_it_is_given():
    """Predictions are computed in the fit's dtype, as scikit-learn fits and predicts HEST's float32
    embeddings: float64 features give the same float32 products, not a float64 product rounded after."""
    X, Y = _problem(n=60, d=40, g=3)
    fit = fit_ridge(X.astype(np.float32), Y.astype(np.float32), alpha=1.0)
    assert fit.coef.dtype == np.float32
    X32 = X.astype(np.float32)
    in_float32 = X32 @ fit.coef + fit.intercept
    assert not np.array_equal(in_float32, (X32.astype(np.float64) @ fit.coef + fit.intercept).astype(np.float32))
    np.testing.assert_array_equal(fit.predict(X), in_float32)
    np.testing.assert_array_equal(fit.predict(X32), in_float32)


@pytest.mark.parametrize("intercept", [False, True])
def test_lsqr_fits_in_float32_as_hest_and_in_float64_on_request(intercept):
    """HEST passes float32 embeddings and scikit-learn fits in X's dtype: the default fit is that float32 fit,
    predictions included; float64 is an option. Where lsqr stops early the two stop in different places."""
    X, Y = _ill_conditioned(n=240, d=120, seed=4)
    X32, Y32 = (X + 2.0).astype(np.float32), (Y + 5.0).astype(np.float32)
    ref32 = Ridge(alpha=1e-6, solver="lsqr", fit_intercept=intercept, max_iter=1000).fit(X32, Y32)
    ref64 = Ridge(alpha=1e-6, solver="lsqr", fit_intercept=intercept, max_iter=1000)
    ref64.fit(X32.astype(np.float64), Y32.astype(np.float64))

    fit = fit_ridge(X32, Y32, alpha=1e-6, solver="lsqr", intercept=intercept)
    assert fit.coef.dtype == fit.intercept.dtype == np.float32
    np.testing.assert_array_equal(fit.coef, ref32.coef_.T)
    np.testing.assert_array_equal(fit.intercept, np.broadcast_to(ref32.intercept_, (2,)))
    np.testing.assert_allclose(fit.predict(X32), ref32.predict(X32), rtol=1e-6, atol=1e-6)

    wide = fit_ridge(X32, Y32, alpha=1e-6, solver="lsqr", intercept=intercept, dtype="float64")
    assert wide.coef.dtype == np.float64
    np.testing.assert_allclose(wide.coef, ref64.coef_.T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(wide.intercept, np.broadcast_to(ref64.intercept_, (2,)), rtol=1e-10, atol=1e-12)
    assert np.abs(fit.predict(X32) - wide.predict(X32)).max() > 1e-3  # the dtype moves the early stop


def test_ridge_dtype_is_checked_and_the_exact_solver_stays_float64():
    X, Y = _problem(n=40, d=5, g=2)
    assert fit_ridge(X, Y, alpha=1.0, solver="exact", device="cpu").coef.dtype == np.float64
    with pytest.raises(ValueError, match="the exact solver in float64"):
        fit_ridge(X, Y, alpha=1.0, solver="exact", device="cpu", dtype="float32")
    with pytest.raises(ValueError, match="dtype 'float16'"):
        fit_ridge(X, Y, alpha=1.0, dtype="float16")


def test_unknown_solver_rejected():
    X, Y = _problem()
    with pytest.raises(ValueError, match=r"unknown solver 'svd'; choose from \('lsqr', 'exact'\)"):
        fit_ridge(X, Y, alpha=1.0, solver="svd")


def test_row_count_mismatch_names_both_counts():
    with pytest.raises(ValueError, match=r"^X has 5 rows, Y 4$"):
        fit_ridge(np.zeros((5, 3)), np.zeros((4, 2)), alpha=1.0, solver="exact", device="cpu")


@pytest.mark.parametrize("gpu,expected", [(True, "cuda"), (False, "cpu")])
def test_no_device_means_the_gpu_when_there_is_one(monkeypatch, gpu, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert _device(None) == expected
    assert _device("cuda:1") == "cuda:1"


def test_an_explicit_device_holds_every_tensor(monkeypatch):
    # CI has no GPU, so "meta" stands in for another default device (say torch.set_default_device("cuda")
    # in a notebook) and a GPU is pretended present: device="cpu" must still put every tensor on the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    X, Y = _problem(n=24, d=10, g=2)
    groups = np.repeat(["a", "b", "c"], 8)
    with torch.device("meta"):
        primal = fit_ridge(X, Y, alpha=1.0, solver="exact", device="cpu")
        dual = fit_ridge(X[:6], Y[:6], alpha=1.0, solver="exact", device="cpu")
        _, primal_err = cv_alpha(X, Y, groups, alphas=(1.0,), device="cpu")
        _, dual_err = cv_alpha(X[:12], Y[:12], groups[:12], alphas=(1.0,), device="cpu")
    np.testing.assert_allclose(primal.coef, _closed_form(X, Y, 1.0)[0], rtol=1e-8)
    np.testing.assert_allclose(dual.coef, _closed_form(X[:6], Y[:6], 1.0)[0], rtol=1e-8)
    np.testing.assert_allclose(primal_err, _cv_errors(X, Y, groups, (1.0,)), rtol=1e-8)
    np.testing.assert_allclose(dual_err, _cv_errors(X[:12], Y[:12], groups[:12], (1.0,)), rtol=1e-8)


def test_cv_splits_leave_one_sample_out_in_order_of_first_appearance():
    splits = cv_splits(["b", "a", "b", "a", "c"])
    expected = [([1, 3, 4], [0, 2]), ([0, 2, 4], [1, 3]), ([0, 1, 2, 3], [4])]
    assert [(t.tolist(), v.tolist()) for t, v in splits] == expected


def test_cv_splits_with_two_samples_leave_each_out():
    splits = cv_splits(["s1", "s1", "s1", "s2", "s2"])
    assert [(t.tolist(), v.tolist()) for t, v in splits] == [([3, 4], [0, 1, 2]), ([0, 1, 2], [3, 4])]


def test_cv_splits_of_one_sample_are_five_contiguous_blocks():
    splits = cv_splits(["s"] * 12)
    blocks = [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9], [10, 11]]
    assert [v.tolist() for _, v in splits] == blocks
    assert [t.tolist() for t, _ in splits] == [sorted(set(range(12)) - set(b)) for b in blocks]
    assert [v.tolist() for _, v in cv_splits(["s"] * 6, n_splits=3)] == [[0, 1], [2, 3], [4, 5]]


def test_cv_alpha_prefers_strong_penalty_on_pure_noise_and_weak_on_clean_signal():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 60))
    groups = np.repeat(["s1", "s2", "s3"], 40)
    noise_alpha, _ = cv_alpha(X, rng.normal(size=(120, 3)), groups, device="cpu")
    X2, Y2 = _problem(n=120, d=10, noise=0.01)
    clean_alpha, errors = cv_alpha(X2, Y2, groups, device="cpu")
    assert noise_alpha >= 1e3
    assert clean_alpha <= 1.0
    assert errors.shape == (21,)


def _cv_errors(X, Y, groups, alphas, intercept=False):
    """Validation MSE of each alpha: leave each sample out, refit the normal equations, sum squared errors."""
    groups = np.asarray(groups)
    errors = []
    for a in alphas:
        sq = 0.0
        for s in dict.fromkeys(groups.tolist()):
            tr, va = groups != s, groups == s
            coef, icpt = _closed_form(X[tr], Y[tr], a, intercept)
            sq += ((X[va] @ coef + icpt - Y[va]) ** 2).sum()
        errors.append(sq / Y.size)
    return np.array(errors)


# 3 samples of n spots: training folds of 2n spots against d features; X is scaled so that X'X has
# eigenvalues below 1, where the alphas tried compete with them
@pytest.mark.parametrize("n,d", [(15, 6), (4, 12)], ids=["primal", "dual"])
@pytest.mark.parametrize("intercept", [False, True])
def test_cv_alpha_matches_refitting_each_alpha_on_each_held_out_sample(n, d, intercept):
    X, Y = _problem(n=3 * n, d=d, g=3, noise=0.3, seed=5)
    X, Y = 0.05 * X + 2.0, Y + 4.0
    groups = np.repeat(["a", "b", "c"], n)
    alphas = (1e-3, 0.03, 1.0, 30.0)
    best, errors = cv_alpha(X, Y, groups, alphas=alphas, intercept=intercept, device="cpu")
    expected = _cv_errors(X, Y, groups, alphas, intercept)
    np.testing.assert_allclose(errors, expected, rtol=1e-7)
    assert best == alphas[int(np.argmin(expected))]


@pytest.mark.parametrize("groups", [np.repeat(["a", "b", "c", "d"], 30), np.repeat(["s"], 120)],
                         ids=["leave-one-sample-out", "blocks-of-one-sample"])
def test_cv_alpha_loses_no_precision_to_a_large_feature_offset(groups):
    """cv_alpha forms X'X once per fold and subtracts each split's validation rows: features and expression with
    column means up to 4e4 times their spread must give the refitted errors still."""
    X, Y = _problem(n=120, d=8, g=3, noise=0.3, seed=7)
    X, Y = 0.05 * X + np.linspace(-1e3, 2e3, 8), Y + np.array([-3e5, 1e5, 4e5])  # an offset per column
    alphas = (1e-4, 1e-2, 1.0)
    best, errors = cv_alpha(X, Y, groups, alphas=alphas, intercept=True, device="cpu")
    expected = _cv_errors_blocks(X, Y, groups, alphas) if len(set(groups)) == 1 else \
        _cv_errors(X, Y, groups, alphas, intercept=True)
    np.testing.assert_allclose(errors, expected, rtol=1e-7)
    assert best == alphas[int(np.argmin(expected))]


def _cv_errors_blocks(X, Y, groups, alphas):
    """As `_cv_errors` with an intercept, over five contiguous blocks of spots (one sample)."""
    errors = np.zeros(len(alphas))
    for val in np.array_split(np.arange(len(X)), 5):
        train = np.setdiff1d(np.arange(len(X)), val)
        for i, a in enumerate(alphas):
            coef, icpt = _closed_form(X[train], Y[train], a, intercept=True)
            errors[i] += ((X[val] @ coef + icpt - Y[val]) ** 2).sum()
    return errors / Y.size


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.longdouble])
def test_cv_alpha_takes_any_real_dtype_as_its_float64_values(dtype):
    rng = np.random.default_rng(1)
    X, Y = (rng.normal(size=(30, 4)) * 10).astype(dtype), (rng.normal(size=(30, 2)) * 10).astype(dtype)
    groups = np.repeat(["a", "b", "c"], 10)
    _, errors = cv_alpha(X, Y, groups, alphas=(0.1, 10.0), intercept=True, device="cpu")
    expected = _cv_errors(X.astype(np.float64), Y.astype(np.float64), groups, (0.1, 10.0), intercept=True)
    np.testing.assert_allclose(errors, expected, rtol=1e-9)


def test_ridge_path_by_default_fits_no_intercept_as_the_closed_form():
    from stbench.regression import ridge_path

    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(30, 5)) + 2.0, rng.normal(size=(30, 2)) + 5.0  # offsets: an intercept would matter
    Xe = rng.normal(size=(4, 5))
    [(alpha, pred)] = list(ridge_path(X, Y, Xe, [0.7]))
    W = np.linalg.solve(X.T @ X + 0.7 * np.eye(5), X.T @ Y)  # no centring
    assert alpha == 0.7 and np.allclose(pred, Xe @ W, atol=1e-8)
