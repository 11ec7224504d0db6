"""The synthetic demo task: layout, determinism, and expression that really follows the patches."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from stbench.data.demo import CONTROL_GENES, make_demo
from stbench.errors import StbenchError
from stbench.expression import log1p_dense, read_counts
from stbench.tasks import PatchFile, open_task


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default demo (3 samples x 160 spots, 200 genes), built once for this module."""
    root = tmp_path_factory.mktemp("demo_root")
    make_demo(root)
    return root


def _load(task_path: Path, sid: str, genes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(patches, log1p expression of ``genes``) of one sample, spots in patch-file order."""
    with PatchFile(task_path / "patches" / f"{sid}.h5") as pf:
        imgs = np.concatenate([b for _, b in pf.iter_chunks(64)])
        barcodes = pf.barcodes
    adata = read_counts(task_path / "adata" / f"{sid}.h5ad")
    return imgs, log1p_dense(adata[barcodes], genes)


def _image_stats(imgs: np.ndarray) -> np.ndarray:
    """Simple per-patch statistics: mean and std RGB, white and dark shares, edge strength along x and y."""
    x = imgs[:, ::2, ::2].astype(np.float32) / 255  # every other pixel: same statistics, 4x less work
    grey = x.mean(-1)
    return np.column_stack([
        x.mean((1, 2)), x.std((1, 2)), (x.min(-1) > 0.9).mean((1, 2)), (grey < 0.45).mean((1, 2)),
        np.abs(np.diff(grey, axis=2)).mean((1, 2)), np.abs(np.diff(grey, axis=1)).mean((1, 2)),
    ])


def _ridge_pearson(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray) -> np.ndarray:
    """Per-gene Pearson r of a standardised ridge (alpha 1) fitted on train, scored on test."""
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-9
    a, b = np.column_stack([(xtr - mu) / sd, np.ones(len(xtr))]), np.column_stack([(xte - mu) / sd, np.ones(len(xte))])
    w = np.linalg.solve(a.T @ a + np.eye(a.shape[1]), a.T @ ytr)
    pred = b @ w
    pc, tc = pred - pred.mean(0), yte - yte.mean(0)
    return (pc * tc).sum(0) / np.sqrt((pc**2).sum(0) * (tc**2).sum(0) + 1e-12)


def test_demo_is_a_valid_synthetic_task(demo_root: Path) -> None:
    task = open_task("demo", demo_root)
    assert sorted(task.samples) == ["S1", "S2", "S3"]
    assert len(task.folds) == 3 and sorted(f.test for f in task.folds) == [("S1",), ("S2",), ("S3",)]
    assert task.synthetic is True
    assert task.meta["source"] == "stbench synthetic demo (generated, not real tissue)"
    assert len(task.genes) == len(set(task.genes)) == 50
    assert not set(task.genes) & set(CONTROL_GENES), "HEST's filter must drop BLANK/Control probes"
    var = None
    for sid, sample in task.samples.items():
        with PatchFile(sample.patches) as pf:
            assert len(pf) == 160 and pf.patch_shape == (224, 224, 3)
            assert next(pf.iter_chunks(4))[1].dtype == np.uint8
            barcodes = pf.barcodes
        adata = read_counts(sample.adata)
        assert list(adata.obs_names) == barcodes
        assert set(task.genes) <= set(adata.var_names) and set(CONTROL_GENES) <= set(adata.var_names)
        assert var is None or list(adata.var_names) == var
        var = list(adata.var_names)
        assert "spatial" in adata.obsm and {"array_x", "pixel_x", "latent_nuclei"} <= set(adata.obs)


def test_same_seed_same_arrays_other_seed_differs(tmp_path: Path) -> None:
    kwargs = {"n_samples": 2, "n_spots": 40, "n_genes": 80}
    a = make_demo(tmp_path / "a", seed=7, **kwargs)
    b = make_demo(tmp_path / "b", seed=7, **kwargs)
    c = make_demo(tmp_path / "c", seed=8, **kwargs)
    assert json.loads((a / "var_50genes.json").read_text()) == json.loads((b / "var_50genes.json").read_text())
    for sid in ("S1", "S2"):
        with h5py.File(a / "patches" / f"{sid}.h5") as ha, h5py.File(b / "patches" / f"{sid}.h5") as hb:
            for ds in ("img", "barcode", "coords"):
                np.testing.assert_array_equal(ha[ds][()], hb[ds][()])
        xa, xb = read_counts(a / "adata" / f"{sid}.h5ad"), read_counts(b / "adata" / f"{sid}.h5ad")
        np.testing.assert_array_equal(xa.X.toarray(), xb.X.toarray())
        np.testing.assert_array_equal(xa.obs.to_numpy(), xb.obs.to_numpy())
    with h5py.File(a / "patches" / "S1.h5") as ha, h5py.File(c / "patches" / "S1.h5") as hc:
        assert not np.array_equal(ha["img"][()], hc["img"][()])


def test_expression_follows_the_patches(demo_root: Path) -> None:
    """Simple image statistics predict held-out samples' genes; with the spot pairing broken they do not."""
    task = open_task("DEMO", demo_root)
    data = {sid: _load(task.path, sid, task.genes) for sid in task.samples}
    feats = {sid: _image_stats(imgs) for sid, (imgs, _) in data.items()}
    rng = np.random.default_rng(0)
    for fold in task.folds:
        xtr = np.vstack([feats[s] for s in fold.train])
        ytr = np.vstack([data[s][1] for s in fold.train])
        xte = np.vstack([feats[s] for s in fold.test])
        yte = np.vstack([data[s][1] for s in fold.test])
        r = _ridge_pearson(xtr, ytr, xte, yte)
        assert (r > 0.3).sum() >= 10, f"fold {fold.index}: only {(r > 0.3).sum()} genes with r > 0.3"
        shuffled = _ridge_pearson(xtr[rng.permutation(len(xtr))], ytr, xte, yte)
        assert np.nanmean(shuffled) < 0.2 < np.nanmean(r)


def test_existing_task_needs_overwrite(tmp_path: Path) -> None:
    make_demo(tmp_path, n_samples=2, n_spots=24, n_genes=70)
    with pytest.raises(StbenchError, match="already exists"):
        make_demo(tmp_path, n_samples=2, n_spots=24, n_genes=70)
    make_demo(tmp_path, n_samples=3, n_spots=24, n_genes=70, overwrite=True)
    assert len(open_task("DEMO", tmp_path).folds) == 3


@pytest.mark.parametrize("kwargs", [{"n_samples": 1}, {"n_spots": 4}, {"n_genes": 10}])
def test_too_small_demo_is_refused(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make_demo(tmp_path, **kwargs)
    assert not (tmp_path / "DEMO").exists()
