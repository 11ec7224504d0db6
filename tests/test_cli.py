"""The bench command: fast help, the offline default run, results export, listings."""

import json
import subprocess
import sys

import polars as pl
import pytest
from click.testing import CliRunner

from stbench.cli import cli


def test_help_is_fast_because_nothing_heavy_is_imported():
    code = (
        "import sys; from stbench.cli import cli; "
        "heavy = [m for m in ('torch', 'scanpy', 'duckdb', 'h5py', 'anndata', 'sklearn', 'timm') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run([sys.executable, "-m", "stbench.cli", "--help"], capture_output=True, text=True, check=True)
    assert "bench run" in out.stdout and "Commands:" in out.stdout


def test_list_commands_answer_without_torch():
    code = (
        "import sys; from click.testing import CliRunner; from stbench.cli import cli; "
        "r = CliRunner().invoke(cli, ['list', 'encoders', '--json']); assert r.exit_code == 0, r.output; "
        "assert 'torch' not in sys.modules; print(r.output)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rows = {row["name"]: row for row in json.loads(out.stdout)}  # sorted by name: not first any more
    assert rows["efficientnet-lite0"]["weights here"] == "package"


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """`bench run` with no task options: the built-in offline default (synthetic demo, created on the fly)."""
    base = tmp_path_factory.mktemp("default")
    env = {"STBENCH_DATA_ROOT": str(base / "data"), "STBENCH_STORE": str(base / "store")}
    result = CliRunner().invoke(cli, ["run", "--no-progress"], env=env)
    return base, env, result


def test_default_run_is_efficientnet_identity_and_pca_on_the_labelled_synthetic_demo(default_run):
    base, _, result = default_run
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "Results (SYNTHETIC data)" in out and "they say nothing about real tissue" in out
    assert "identity" in out and "pca" in out and "efficientnet-lite0" in out
    assert "fold 2:" in out and "alpha=100/(features*genes)" in out
    assert (base / "data" / "DEMO" / "task.json").exists()


def test_results_formats_and_export(default_run, tmp_path):
    _, env, _ = default_run
    r = CliRunner().invoke(cli, ["results", "--format", "json"], env=env)
    rows = json.loads(r.output)
    assert {row["reducer"] for row in rows} == {"identity", "pca"} and all(row["synthetic"] for row in rows)
    assert all(row["folds"] == 3 for row in rows)
    r = CliRunner().invoke(cli, ["results", "--reducer", "pca", "--format", "csv"], env=env)
    assert r.output.splitlines()[0].startswith("run_id,task") and len(r.output.splitlines()) == 2
    out = tmp_path / "genes.parquet"
    r = CliRunner().invoke(cli, ["results", "--genes", "--export", str(out), "--format", "csv"], env=env)
    assert r.exit_code == 0, r.output
    genes = pl.read_parquet(out)
    assert len(genes) == 2 * 3 * 50 and {"pcc", "mse", "gene", "fold", "alpha", "protocol_fingerprint"} <= set(genes.columns)
    table = CliRunner().invoke(cli, ["results"], env=env)
    assert "synthetic" in table.output


def test_rerun_shows_cached_results(default_run):
    _, env, _ = default_run
    r = CliRunner().invoke(cli, ["run", "--no-progress", "--reducer", "pca"], env=env)
    assert r.exit_code == 0 and "cached" in r.output


def test_list_tasks_shows_the_demo_and_what_to_fetch(default_run):
    _, env, _ = default_run
    r = CliRunner().invoke(cli, ["list", "tasks", "--json"], env=env)
    [row] = json.loads(r.output)
    assert row["task"] == "DEMO" and row["data"] == "SYNTHETIC" and row["folds"] == 3
    r = CliRunner().invoke(cli, ["list", "tasks"], env=env)
    assert "bench data fetch --task NAME" in " ".join(r.output.split())


def test_results_without_a_store_says_what_to_do(tmp_path):
    r = CliRunner().invoke(cli, ["results", "--store", str(tmp_path / "none")])
    assert r.exit_code != 0 and "run `bench run` first" in r.output
