"""The pca reducer against scikit-learn and numpy computed in the test: train-fold statistics only."""

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from stbench.reducers import TrainFold, create_reducer


def _fold(X):
    return TrainFold(X=X, expression=None, coords=np.zeros((len(X), 2)), sample_ids=np.array(["s"] * len(X)), seed=1)


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
