"""A store of real runs on the tiny synthetic task, for the leaderboard tests (built once per pytest session,
shared by tests/test_leaderboard.py and tests/test_leaderboard_browser.py).

Two encoders (the tiny CNN and a copy with other weights). Under the HEST alpha: identity, PCA (defaults and
a variant) and a fast BP-Booster for the first, identity and PCA for the second; under the cross-validated
alpha: identity and PCA for the first, PCA for the second (cross-validated runs are the slow ones); an alpha
sweep (`SWEEP`) of identity and PCA for the first.
``evil_store`` renames an encoder, a reducer, a task and a gene to HTML.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from tests._tiny import make_tiny_task, tiny_encoder

EVIL = "<script>alert(1)</script>\"&'"
SECOND = "test-tiny-cnn-b"
BOOSTER = {"epochs": 2, "latent_dim": 16, "heads": 4, "n_hvg": 20}
SWEEP = "sweep:1e-3:1e4:8"  # the alpha-sensitivity curve: 8 alphas (one per decade) and HEST's


def register_encoders() -> None:
    """The tiny CNN, and a second encoder with perturbed weights (so the two rank differently)."""
    import torch
    from stbench.encoders import encoders
    from stbench.encoders.weights import WeightsSource

    if "test-tiny-cnn" not in encoders:
        encoders.register(tiny_encoder(), origin="tests")
    if SECOND not in encoders:
        base = encoders.get("test-tiny-cnn")
        path = base.resolve().path.with_name("tiny-cnn-b.pt")
        if not path.exists():
            state = torch.load(base.resolve().path, weights_only=True)
            gen = torch.Generator().manual_seed(1)
            torch.save({k: v + 0.5 * torch.randn(v.shape, generator=gen) for k, v in state.items()}, path)
        spec = dataclasses.replace(base.spec, name=SECOND, aliases=(), source=WeightsSource(local=lambda: path, config=False))
        encoders.register(type(base)(spec, base.loader), origin="tests")


def leaderboard_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store folder (built on first use in this session)."""
    base = tmp_path_factory.getbasetemp() / "leaderboard-store"
    store_dir = base / "store"
    if (base / "done").exists():
        return store_dir
    from stbench.protocol import Protocol
    from stbench.runner import ReducerChoice, run_task
    from stbench.stores import Store
    from stbench.tasks import open_task

    register_encoders()
    shutil.rmtree(base, ignore_errors=True)
    make_tiny_task(base / "data")
    task = open_task("tiny", base / "data")
    with Store(store_dir) as st:
        hest, cv = Protocol.from_options(), Protocol.from_options(alpha="cv")
        run_task(task, "test-tiny-cnn", [ReducerChoice("identity"), ReducerChoice("pca"), ReducerChoice("pca", {"n_components": 4}),
                                         ReducerChoice("bpbooster-random", BOOSTER)], hest, st, device="cpu")
        run_task(task, "test-tiny-cnn", [ReducerChoice("identity"), ReducerChoice("pca")], cv, st, device="cpu")
        run_task(task, SECOND, [ReducerChoice("identity"), ReducerChoice("pca")], hest, st, device="cpu")
        run_task(task, SECOND, [ReducerChoice("pca")], cv, st, device="cpu")
        run_task(task, "test-tiny-cnn", [ReducerChoice("identity"), ReducerChoice("pca")], Protocol.from_options(alpha=SWEEP),
                 st, device="cpu")
    (base / "done").touch()
    return store_dir


def evil_store(store_dir: Path, dest: Path) -> Path:
    """A copy whose second encoder, one reducer, one task and one gene are named ``EVIL``."""
    import duckdb

    shutil.copytree(store_dir, dest)
    con = duckdb.connect(str(dest / "catalog.duckdb"))
    con.execute("UPDATE runs SET encoder = ? WHERE encoder = ?", [EVIL, SECOND])
    con.execute("UPDATE runs SET reducer = ? WHERE reducer = 'identity' AND encoder = ?", [EVIL, EVIL])
    con.execute("UPDATE runs SET task = ? || ' task' WHERE reducer = 'pca' AND encoder = ? AND alpha_rule = 'cv'", [EVIL, EVIL])
    for table in ("gene_results", "sample_gene_results", "spot_predictions"):
        con.execute(f"UPDATE {table} SET gene = ? WHERE gene = 'G000'", [EVIL])  # noqa: S608
    con.close()
    import polars as pl

    for path in (dest / "predictions").rglob("*.parquet"):  # spot predictions kept as files (schema m004)
        df = pl.read_parquet(path)
        df.with_columns(pl.col("gene").cast(pl.Utf8).replace("G000", EVIL)).write_parquet(path)
    return dest
