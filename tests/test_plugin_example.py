"""The plugin API from the outside: the example package `examples/stbench-timm-encoder`, installed, and
plugins that fail (an import error, a name that is already taken).

The example's tests need it installed (`.ci/run` installs it and sets STBENCH_REQUIRE_PLUGIN_EXAMPLE=1 so
that CI fails rather than skips); without it they skip saying how to install it. The broken-plugin tests
run `bench` in a subprocess with fake distributions on PYTHONPATH, because the registry loads its entry
points once per process.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from click.testing import CliRunner

from stbench.cli import cli

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "stbench-timm-encoder"
REQUIRE_ENV = "STBENCH_REQUIRE_PLUGIN_EXAMPLE"
# The example's smallest model: random weights for it run the real HER2+ task in seconds on a CPU.
SMALL = ("timm-mobilenetv3-small-050", "mobilenetv3_small_050", "timm/mobilenetv3_small_050.lamb_in1k", 1024)


@pytest.fixture(scope="module")
def example_installed() -> None:
    try:
        dist = distribution("stbench-timm-encoder")
    except PackageNotFoundError:
        msg = f"the example plugin is not installed: pip install -e {EXAMPLE.relative_to(REPO)} --no-deps"
        if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
            pytest.fail(f"{REQUIRE_ENV} is set but {msg}")
        pytest.skip(msg)
    [ep] = [e for e in dist.entry_points if e.group == "stbench.encoders"]
    assert (ep.name, ep.value) == ("timm", "stbench_timm_encoder")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A subprocess environment with no user config, an empty offline hub cache and a wide console."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STBENCH_", "HF_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(tmp_path / "hf" / "hub"),
               STBENCH_CONFIG=str(tmp_path / "no-config.toml"), STBENCH_HOME=str(tmp_path / "home"), COLUMNS="400")
    env.update(extra)
    return env


def _bench(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stbench.cli", *args], capture_output=True, text=True,
                          env=_env(tmp_path, **env), cwd=tmp_path, timeout=120)


# -- the example package, installed ---------------------------------------------------------------------


def test_example_imports_neither_torch_nor_timm(example_installed: None, tmp_path: Path) -> None:
    code = "import sys, stbench_timm_encoder; print(sorted({'torch', 'timm'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(tmp_path), check=True)
    assert out.stdout.strip() == "[]"


def test_bench_list_shows_the_example_encoders_from_its_entry_point(example_installed: None, tmp_path: Path) -> None:
    done = _bench(tmp_path, "list", "encoders", "--json", STBENCH_TIMM_MODELS="convnext_atto.d2_in1k=320")
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)}
    assert {"efficientnet-lite0", "timm-resnet18", SMALL[0], "timm-convnext-atto"} <= set(rows)
    resnet = rows["timm-resnet18"]
    # the loader, and the entry point that brought it in
    assert resnet["origin"] == "stbench_timm_encoder.timm_loader('resnet18.a1_in1k') (entry point timm = stbench_timm_encoder)"
    assert (resnet["dim"], resnet["weights"], resnet["weights here"]) == (512, "hf.co/timm/resnet18.a1_in1k", "no")
    assert rows["timm-convnext-atto"]["dim"] == 320  # added through STBENCH_TIMM_MODELS

    only_builtins = _bench(tmp_path, "list", "encoders", "--json", STBENCH_LOAD_PLUGINS="")
    names = {r["name"] for r in json.loads(only_builtins.stdout)}
    assert "efficientnet-lite0" in names and not any(n.startswith("timm-") for n in names)


def _random_timm_checkpoint(arch: str, folder: Path) -> dict[str, bytes]:
    """config.json + model.safetensors of a randomly initialised model, as timm saves them for the hub."""
    import timm
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(0)
    save_for_hf(timm.create_model(arch, pretrained=False), str(folder), safe_serialization=True)
    return {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}


@pytest.mark.realdata
def test_bench_run_with_the_example_encoder_on_her2st(
    example_installed: None, her2st_task_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stbench.stores import Catalog
    from stbench.testing import COMMIT, use_offline_hub, write_hub_repo

    name, arch, repo_id, dim = SMALL
    cache = tmp_path / "hf" / "hub"
    write_hub_repo(cache, repo_id, _random_timm_checkpoint(arch, tmp_path / "ckpt"))
    use_offline_hub(monkeypatch, cache)
    store = tmp_path / "store"

    done = CliRunner().invoke(cli, ["run", "--encoder", name, "--reducer", "pca", "--task", "her2st", "--device", "cpu",
                                    "--data-root", str(her2st_task_root), "--store", str(store), "--no-progress"])
    assert done.exit_code == 0, done.output + repr(done.exception)

    with Catalog(store / "catalog.duckdb", read_only=True) as cat:
        summary = cat.summary(task="HER2ST", encoder=name)
        embeddings = cat.con.execute("SELECT DISTINCT encoder, weights_fingerprint, dim FROM embeddings").fetchall()
    assert summary.height == 1 and summary["reducer"].to_list() == ["pca"]
    assert math.isfinite(summary["pcc_mean"][0]) and -1 <= summary["pcc_mean"][0] <= 1
    assert embeddings == [(name, f"hub:{repo_id}@{COMMIT}", dim)]  # weights from the offline hub cache


# -- plugins that fail -----------------------------------------------------------------------------------

_PLUGINS = {
    "broken_plugin.py": """
        import frobnicate_not_installed  # the plugin's own dependency is missing
    """,
    "dup_plugin.py": """
        from stbench.encoders import EncoderSpec, register_encoder

        @register_encoder(EncoderSpec(name="efficientnet-lite0", embed_dim=7, weights="mine", license="mine"))
        def load_dup(weights):
            raise AssertionError("never built")
    """,
    "good_plugin.py": """
        from stbench.encoders import Encoder, EncoderSpec

        def load(weights):
            raise AssertionError("never built")

        GOOD = Encoder(EncoderSpec(name="good-plugin-encoder", embed_dim=3, weights="-", license="-"), load)
        ALIAS_CLASH = Encoder(EncoderSpec(name="another", aliases=("effnet-lite0",), embed_dim=3, weights="-",
                                          license="-"), load)
    """,
}
_ENTRY_POINTS = """\
[stbench.encoders]
broken = broken_plugin
dup = dup_plugin
good = good_plugin:GOOD
clash = good_plugin:ALIAS_CLASH
"""


@pytest.fixture
def bad_plugins(tmp_path: Path) -> Path:
    """A folder to put on PYTHONPATH: plugin modules plus a dist-info declaring their entry points."""
    site = tmp_path / "site"
    dist = site / "stbench_test_plugins-1.0.dist-info"
    dist.mkdir(parents=True)
    for name, body in _PLUGINS.items():
        (site / name).write_text(textwrap.dedent(body))
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: stbench-test-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(_ENTRY_POINTS)
    return site


def test_broken_and_duplicate_plugins_are_reported_and_break_nothing(bad_plugins: Path, tmp_path: Path) -> None:
    path = os.pathsep.join([str(bad_plugins), os.environ.get("PYTHONPATH", "")])
    table = _bench(tmp_path, "list", "encoders", PYTHONPATH=path)
    assert table.returncode == 0, table.stderr
    notes = {line.split("'")[1]: line for line in table.stdout.splitlines() if line.startswith("plugin '")}
    assert set(notes) == {"broken", "dup", "clash"}
    assert "ModuleNotFoundError" in notes["broken"] and "frobnicate_not_installed" in notes["broken"]
    # A taken name is refused, naming both the built-in and the newcomer.
    assert "ValueError: encoder name 'efficientnet-lite0' is already registered by " \
           "stbench.encoders.efficientnet_lite.load_efficientnet_lite0; refusing the second registration " \
           "from dup_plugin.load_dup" in notes["dup"]
    assert "'effnet-lite0' is already registered by stbench.encoders.efficientnet_lite" in notes["clash"]
    assert "entry point clash = good_plugin:ALIAS_CLASH" in notes["clash"]

    listing = _bench(tmp_path, "list", "encoders", "--json", PYTHONPATH=path)
    rows = {r["name"]: r for r in json.loads(listing.stdout)}
    builtin = rows["efficientnet-lite0"]
    assert (builtin["dim"], builtin["origin"]) == (1280, "stbench.encoders.efficientnet_lite.load_efficientnet_lite0")
    assert rows["good-plugin-encoder"]["origin"] == "entry point good = good_plugin:GOOD"
    assert "another" not in rows

    run = _bench(tmp_path, "run", "--encoder", "broken", "--data-root", str(tmp_path / "data"), PYTHONPATH=path)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "A plugin named 'broken' exists but failed to load (see `bench list encoders`)" in run.stderr

    strict = _bench(tmp_path, "list", "encoders", PYTHONPATH=path, STBENCH_STRICT_PLUGINS="1")
    assert strict.returncode != 0 and "frobnicate_not_installed" in strict.stderr
