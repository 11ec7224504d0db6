"""The pca reducer against scikit-learn and numpy computed in the test: train-fold statistics only."""

import logging

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from stbench.reducers import TrainFold, create_reducer


def _fold(X, seed=1, fold=0):
    n = len(X)
    return TrainFold(X=X, expression=None, coords=np.zeros((n, 2)), sample_ids=np.array(["s"] * n), seed=seed,
                     fold=fold)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    scales = np.geomspace(0.1, 50, 12)
    X_train = (rng.normal(size=(40, 12)) @ rng.normal(size=(12, 12))) * scales + 3.0
    X_test = X_train[:15] * 1.7 - 5.0 + rng.normal(size=(15, 12))  # other mean and scale than the training rows
    return X_train.astype(np.float32), X_test.astype(np.float32)


def _same_up_to_sign(a, b, atol):
    signs = np.sign((a * b).sum(axis=0))
    np.testing.assert_allclose(a * signs, b, atol=atol)


def test_held_out_rows_use_the_training_fold_scaler_and_components_numpy():
    X_train, X_test = _data()
    r = create_reducer("pca", n_components=5).fit(_fold(X_train))
    mu, sd = X_train.astype(np.float64).mean(axis=0), X_train.astype(np.float64).std(axis=0)
    A = (X_train - mu) / sd
    _, _, vt = np.linalg.svd(A - A.mean(axis=0), full_matrices=False)
    expected = ((X_test - mu) / sd - A.mean(axis=0)) @ vt[:5].T
    _same_up_to_sign(r.transform(X_test).astype(np.float64), expected, atol=1e-4)


def test_held_out_rows_equal_sklearn_fitted_on_the_training_rows():
    X_train, X_test = _data(1)
    r = create_reducer("pca", n_components=4).fit(_fold(X_train))
    scaler = StandardScaler().fit(X_train)
    pca = PCA(n_components=4, random_state=1).fit(scaler.transform(X_train))
    np.testing.assert_allclose(r.transform(X_test), pca.transform(scaler.transform(X_test)), atol=1e-4)
    np.testing.assert_allclose(r.transform(X_train), pca.transform(scaler.transform(X_train)), atol=1e-4)


def test_transform_is_a_fixed_map_whatever_else_is_transformed():
    """Each row's features depend on that row alone: no statistics of the rows being transformed."""
    X_train, X_test = _data(2)
    r = create_reducer("pca", n_components=3).fit(_fold(X_train))
    np.testing.assert_allclose(r.transform(X_test[:1]), r.transform(X_test)[:1], atol=1e-5)


def test_too_many_components_are_capped_by_the_training_fold(caplog):
    X_train, X_test = _data(3)
    r = create_reducer("pca", n_components=256).fit(_fold(X_train))
    assert r.transform(X_test).shape == (15, 12)  # min(n_train - 1, d) = 12
    assert "256 components requested" in caplog.text
    with pytest.raises(Exception):
        create_reducer("pca", n_components="many")


def test_fewer_training_rows_than_features_caps_at_rows_minus_one(caplog):
    """n training rows span at most n - 1 directions once centred: the n-th component would be noise."""
    X_train, X_test = _data(4)
    with caplog.at_level(logging.WARNING, logger="stbench"):
        r = create_reducer("pca", n_components=256).fit(_fold(X_train[:10], fold=3))
    assert r.n_components_ == 9
    assert r.transform(X_test).shape == (15, 9)
    expected = "pca: 256 components requested but fold 3 has 10 training spots and 12 features; using 9"
    assert expected in caplog.messages


def test_components_exactly_at_the_cap_are_kept_without_a_warning(caplog):
    X_train, X_test = _data(5)
    with caplog.at_level(logging.WARNING, logger="stbench"):
        r = create_reducer("pca", n_components=12).fit(_fold(X_train))  # 40 rows, 12 features: cap 12
    assert r.n_components_ == 12 and r.transform(X_test).shape == (15, 12)
    assert caplog.records == []


def test_transform_returns_float32():
    X_train, X_test = _data(6)
    r = create_reducer("pca", n_components=3).fit(_fold(X_train))
    assert r.transform(X_test).dtype == np.float32
    assert r.transform(X_test.astype(np.float64)).dtype == np.float32


def test_randomized_solver_uses_the_fold_seed():
    """Above 500 rows scikit-learn's PCA solves randomly: the fold's seed makes the features reproducible."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(501, 60)).astype(np.float32)  # flat spectrum: another random state gives other axes
    r = create_reducer("pca", n_components=5).fit(_fold(X, seed=7))
    scaler = StandardScaler().fit(X)
    Z = scaler.transform(X)
    expected = PCA(n_components=5, random_state=7).fit(Z).transform(Z[:20])
    other_seed = PCA(n_components=5, random_state=8).fit(Z).transform(Z[:20])
    assert not np.allclose(np.abs(other_seed), np.abs(expected), atol=1e-2)  # precondition: the seed matters
    np.testing.assert_allclose(r.transform(X[:20]), expected, atol=1e-4)


def test_training_features_are_hests_pipeline_fit_transform():
    """HEST computes the training features with Pipeline([StandardScaler, PCA]).fit_transform (the SVD's own
    scores), which are float32 rounding away from transform() of the same rows; issue 13."""
    from sklearn.pipeline import Pipeline

    rng = np.random.default_rng(5)
    X_train = (rng.normal(size=(700, 600)) * np.geomspace(0.01, 30, 600)).astype(np.float32)  # randomized SVD
    X_test = X_train[:50] + rng.normal(size=(50, 600)).astype(np.float32)
    pipe = Pipeline([("scaler", StandardScaler()), ("PCA", PCA(n_components=64, random_state=1))])
    expected_train = pipe.fit_transform(X_train)
    r = create_reducer("pca", n_components=64)
    got_train = r.fit_transform(_fold(X_train))
    assert got_train.dtype == np.float32
    np.testing.assert_array_equal(got_train, expected_train)
    np.testing.assert_array_equal(r.transform(X_test), pipe.transform(X_test))
    assert np.abs(r.transform(X_train) - got_train).max() > 0  # not the same computation as transform()
