"""The Ray executor (`bench run --executor ray`): a small grid on a local Ray instance gives the local executor's
results (same run ids, per-gene PCC and MSE, alphas, spot predictions, fitted models), only the driver opens the
catalog, a failing cell is recorded while the others go on, and without ray the error says how to install it.

Skipped when ray is not installed, unless ``STBENCH_REQUIRE_RAY=1`` (CI installs it with the dev extra), which
fails instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from stbench.cli import cli
from stbench.encoders import encoders
from stbench.errors import StbenchError, StoreError
from stbench.grid import make_spec, plan_grid, protocol_variants, run_grid
from stbench.reducers import reducers
from stbench.runner import ReducerChoice
from stbench.stores import Store
from tests._tiny import make_tiny_task, tiny_encoder
from tests.test_grid import Boom  # fails in fit, as a bug in a reducer would (here in a worker)

REPO = Path(__file__).resolve().parents[1]
REQUIRE_ENV = "STBENCH_REQUIRE_RAY"
BOOSTER = {"epochs": 1, "n_hvg": 40, "latent_dim": 16, "heads": 4}


@pytest.fixture(scope="module")
def ray():
    try:
        import ray
    except ImportError:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f'{REQUIRE_ENV}=1 but ray is not installed (pip install "stbench[ray]")')
        pytest.skip(f'ray is not installed (pip install "stbench[ray]"); {REQUIRE_ENV}=1 makes this a failure')
    os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")
    # workers import this module and tests._tiny by reference (the test reducer, the tiny encoder)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module", autouse=True)
def _plugins():
    if "test-tiny-cnn" not in encoders:
        encoders.register(tiny_encoder(), origin="tests")
    if Boom.name not in reducers:
        reducers.register(Boom, origin="tests")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("raygrid") / "data"
    make_tiny_task(root)  # TINY: 3 samples, leave-one-out, genes G000..G059
    return root


def _plan(root, reducer_choices):
    protocols = protocol_variants(["hest", "cv"], ["task"], [1])
    return plan_grid(make_spec(["tiny"], ["test-tiny-cnn"], reducer_choices, protocols, root), root)


def _table(store: Path, sql: str) -> list[tuple]:
    with Store(store) as st:
        return st.catalog.con.execute(sql).fetchall()


@pytest.mark.slow
def test_ray_gives_the_local_executors_results_and_only_the_driver_writes_the_catalog(ray, root, tmp_path):
    choices = [ReducerChoice("identity"), ReducerChoice("pca"), ReducerChoice("bpbooster-random", BOOSTER)]
    plan = _plan(root, choices)
    with Store(tmp_path / "local") as st:
        local = run_grid(plan, st, device="cpu")
    seen = []
    with Store(tmp_path / "ray") as st:
        remote = run_grid(plan, st, device="cpu", executor="ray", on_cell=seen.append)
    assert [o.status for o in local] == ["ok"] * 6 and [o.status for o in remote] == ["ok"] * 6
    assert [o.cell for o in remote] == [o.cell for o in local] and sorted(map(id, seen)) == sorted(map(id, remote))
    assert [o.result.run_id for o in remote] == [o.result.run_id for o in local]

    a, b = tmp_path / "local", tmp_path / "ray"
    runs = "SELECT run_id, status, error, n_folds FROM runs ORDER BY run_id"
    assert _table(b, runs) == _table(a, runs) and {r[1] for r in _table(b, runs)} == {"complete"}
    for sql, n_keys in [
        ("SELECT run_id, fold, gene, pcc, mse, alpha FROM gene_results ORDER BY 1, 2, 3", 3),
        ("SELECT run_id, fold, sample_id, gene, pcc, mse, n_spots FROM sample_gene_results ORDER BY 1, 2, 3, 4", 4),
        ("SELECT run_id, fold, alpha, n_train, n_test, n_features, pcc_mean, mse_mean FROM fold_results ORDER BY 1, 2", 2),
    ]:
        rows_a, rows_b = _table(a, sql), _table(b, sql)
        assert len(rows_a) == len(rows_b) > 0, sql
        assert [r[:n_keys] for r in rows_b] == [r[:n_keys] for r in rows_a], sql
        num_a = np.array([r[n_keys:] for r in rows_a], dtype=float)
        num_b = np.array([r[n_keys:] for r in rows_b], dtype=float)
        # bit for bit: workers compute with the driver's thread count (stbench.executors._in_worker)
        np.testing.assert_array_equal(num_b, num_a, err_msg=sql)
    keys = ["run_id", "fold", "sample_id", "barcode", "gene"]
    spots = []
    for store in (a, b):
        with Store(store) as st:
            spots.append(st.catalog.spot_predictions([r for (r,) in st.catalog.rows("SELECT run_id FROM runs")]).sort(keys))
    assert len(spots[0]) > 0 and spots[0].select(keys).equals(spots[1].select(keys))
    for col in ("x", "y", "y_true", "y_pred"):
        np.testing.assert_array_equal(spots[1][col].to_numpy(), spots[0][col].to_numpy(), err_msg=col)
    # every embedding file registered by the driver, in the Ray store's own folder, same numbers
    emb_a = _table(a, "SELECT sample_id, weights_fingerprint, n_patches, dim, path FROM embeddings ORDER BY 1")
    emb_b = _table(b, "SELECT sample_id, weights_fingerprint, n_patches, dim, path FROM embeddings ORDER BY 1")
    assert [r[:4] for r in emb_b] == [r[:4] for r in emb_a] and len(emb_b) == 3
    # recorded relative to the store root (the store can be moved): the same relative paths in both stores
    assert [r[4] for r in emb_b] == [r[4] for r in emb_a] and all(r[4].startswith("embeddings/") for r in emb_b)
    assert all((b / r[4]).is_file() for r in emb_b)
    from stbench.stores import read_embeddings

    for ra, rb in zip(emb_a, emb_b, strict=True):
        np.testing.assert_array_equal(read_embeddings(b / rb[4]).embeddings, read_embeddings(a / ra[4]).embeddings)
    # the booster's fitted models written by the workers into the store, its HVG selections stored by the driver
    models = _table(b, "SELECT model_path FROM fold_results WHERE model_path IS NOT NULL")
    assert len(models) == 2 * 3 and all(m.startswith("models/") and (b / m).is_file() for (m,) in models)
    sel = "SELECT fold, kind, key, value FROM gene_selections ORDER BY 1, 2, 3"
    assert _table(b, sel) == _table(a, sel) and len(_table(b, sel)) == 3

    # a second run reads every cell back from the store: nothing is sent to the workers
    with Store(b) as st:
        again = run_grid(plan, st, device="cpu", executor="ray")
    assert [o.status for o in again] == ["cached"] * 6
    # a run killed after two of its folds resumes at the missing one
    rid = remote[2].result.run_id  # pca, alpha hest
    with Store(b) as st:
        st.catalog.con.execute("DELETE FROM fold_results WHERE run_id=? AND fold=1", [rid])
        st.catalog.con.execute("UPDATE runs SET status='running' WHERE run_id=?", [rid])
        resumed = run_grid(plan, st, device="cpu", executor="ray")
    assert [o.status for o in resumed] == ["cached"] * 2 + ["ok"] + ["cached"] * 3
    folds = "SELECT run_id, fold, alpha, pcc_mean, mse_mean FROM fold_results ORDER BY 1, 2"
    np.testing.assert_array_equal(np.array([r[2:] for r in _table(b, folds)]), np.array([r[2:] for r in _table(a, folds)]))


def test_workers_may_not_open_the_catalog(ray, tmp_path):
    from stbench.executors import _in_worker

    @ray.remote(num_cpus=1)
    def open_catalog(path: str) -> str:
        _in_worker(1)
        try:
            Store(Path(path)).catalog
        except StoreError as exc:
            return str(exc)
        return "opened"

    message = ray.get(open_catalog.remote(str(tmp_path / "store")))
    assert "only the driver writes the catalog" in message and not (tmp_path / "store" / "catalog.duckdb").exists()


def test_a_failing_cell_under_ray_is_recorded_and_the_grid_goes_on(ray, root, tmp_path):
    store = tmp_path / "store"
    args = ["run", "--data-root", str(root), "--store", str(store), "--no-progress", "--device", "cpu",
            "--executor", "ray", "--task", "tiny", "--encoder", "test-tiny-cnn", "--reducer", "identity,test-grid-boom",
            "--alpha", "hest,1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 3, result.output
    assert "RuntimeError: boom in fit" in result.output and "Error: 2 of 4 cells failed" in result.output
    status = {(r, a): (s, e) for r, a, s, e in _table(store, "SELECT reducer, alpha_rule, status, error FROM runs")}
    assert status[("identity", "hest")] == ("complete", None) and status[("identity", "1.0")] == ("complete", None)
    assert status[("test-grid-boom", "hest")] == ("failed", "RuntimeError: boom in fit")
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 3 and again.output.count("cached") >= 2, again.output


def test_without_ray_the_error_says_how_to_install_it(root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    from stbench.executors import require_ray

    with pytest.raises(StbenchError, match=r'pip install "stbench\[ray\]"'):
        require_ray()
    result = CliRunner().invoke(cli, ["run", "--data-root", str(root), "--store", str(tmp_path / "s"), "--no-progress",
                                      "--task", "tiny", "--encoder", "test-tiny-cnn", "--executor", "ray"])
    assert result.exit_code == 4, result.output
    assert result.output.strip() == 'Error: the Ray executor needs ray, an optional extra (fix: pip install "stbench[ray]")'
    assert not (tmp_path / "s").exists()


def test_address_needs_the_ray_executor(root, tmp_path):
    result = CliRunner().invoke(cli, ["run", "--data-root", str(root), "--store", str(tmp_path / "s"), "--no-progress",
                                      "--task", "tiny", "--address", "auto"])
    assert result.exit_code != 0 and "--executor ray" in result.output


def test_gpu_tasks_declare_gpus_where_the_cluster_has_them():
    from stbench.executors import _placement, _trains
    from stbench.reducers import create_reducer

    class Cluster:  # ray.cluster_resources() of a cluster with this many GPUs
        def __init__(self, gpus: int) -> None:
            self.gpus = gpus

        def cluster_resources(self) -> dict:
            return {"CPU": 16.0, **({"GPU": float(self.gpus)} if self.gpus else {})}

    assert _placement(Cluster(8), "auto", 1.0) == ("cuda", {"num_cpus": 1, "num_gpus": 1.0})
    assert _placement(Cluster(8), "cuda:3", 0.5) == ("cuda", {"num_cpus": 1, "num_gpus": 0.5})  # Ray picks the GPU
    assert _placement(Cluster(8), "cpu", 1.0) == ("cpu", {"num_cpus": 1})
    assert _placement(Cluster(0), "auto", 1.0) == ("cpu", {"num_cpus": 1})
    with pytest.raises(StbenchError, match="no GPU"):
        _placement(Cluster(0), "cuda", 1.0)
    with pytest.raises(StbenchError, match="gpus-per-task"):
        _placement(Cluster(2), "cuda", 4.0)
    # trainable reducers (a fitted state to keep) get the GPU; PCA and the identity one CPU
    assert _trains(create_reducer("bpbooster-random")) and not _trains(create_reducer("pca"))
    assert not _trains(create_reducer("identity"))
