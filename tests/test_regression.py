"""Ridge solvers: the exact torch solver, scikit-learn's lsqr, and alpha by grouped CV."""

import numpy as np
import pytest

from stbench.regression import cv_alpha, cv_splits, fit_ridge, hest_alpha


def _problem(n=300, d=20, g=4, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W = rng.normal(size=(d, g))
    return X, X @ W + noise * rng.normal(size=(n, g))


def test_hest_alpha_rule():
    assert hest_alpha(256, 50) == pytest.approx(100 / (256 * 50))


@pytest.mark.parametrize("n,d", [(300, 20), (15, 40)])  # primal and dual (kernel) forms
def test_exact_matches_closed_form(n, d):
    X, Y = _problem(n=n, d=d)
    alpha = 3.0
    w = np.linalg.solve(X.T @ X + alpha * np.eye(d), X.T @ Y)
    fit = fit_ridge(X, Y, alpha=alpha, solver="exact", device="cpu")
    np.testing.assert_allclose(fit.coef, w, rtol=1e-8, atol=1e-10)
    assert np.all(fit.intercept == 0)


def test_exact_agrees_with_lsqr_when_well_conditioned():
    X, Y = _problem()
    a = fit_ridge(X, Y, alpha=0.5, solver="exact", device="cpu")
    b = fit_ridge(X, Y, alpha=0.5, solver="lsqr")
    np.testing.assert_allclose(a.coef, b.coef, atol=1e-4)


def test_intercept_is_fitted_when_asked():
    X, Y = _problem()
    Y = Y + 10.0
    with_icpt = fit_ridge(X, Y, alpha=1.0, solver="exact", intercept=True, device="cpu")
    lsqr = fit_ridge(X, Y, alpha=1.0, solver="lsqr", intercept=True)
    np.testing.assert_allclose(with_icpt.intercept, 10.0, atol=0.2)
    np.testing.assert_allclose(with_icpt.predict(X), lsqr.predict(X), atol=1e-3)
    without = fit_ridge(X, Y, alpha=1.0, solver="exact", device="cpu")
    assert np.mean((without.predict(X) - Y) ** 2) > np.mean((with_icpt.predict(X) - Y) ** 2)


def test_cv_splits_group_by_sample_or_fall_back_to_blocks():
    groups = ["a"] * 5 + ["b"] * 3 + ["c"] * 2
    splits = cv_splits(groups)
    assert len(splits) == 3
    for train, val in splits:
        assert len(set(np.asarray(groups)[val])) == 1
        assert not set(train) & set(val)
    blocks = cv_splits(["a"] * 10, n_splits=5)
    assert len(blocks) == 5 and all(len(v) == 2 for _, v in blocks)
    assert sorted(np.concatenate([v for _, v in blocks]).tolist()) == list(range(10))


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


def test_cv_alpha_matches_direct_refits():
    """Every alpha from one eigendecomposition equals refitting the exact solver per alpha."""
    X, Y = _problem(n=90, d=30, noise=1.0, seed=5)
    groups = np.repeat(["a", "b", "c"], 30)
    alphas = (0.1, 10.0, 1000.0)
    _, errors = cv_alpha(X, Y, groups, alphas=alphas, device="cpu")
    direct = []
    for a in alphas:
        err = 0.0
        for tr, va in cv_splits(groups):
            fit = fit_ridge(X[tr], Y[tr], alpha=a, solver="exact", device="cpu")
            err += ((fit.predict(X[va]) - Y[va]) ** 2).sum()
        direct.append(err / Y.size)
    np.testing.assert_allclose(errors, direct, rtol=1e-4)


def test_unknown_solver_rejected():
    X, Y = _problem()
    with pytest.raises(ValueError, match="unknown solver"):
        fit_ridge(X, Y, alpha=1.0, solver="svd")
