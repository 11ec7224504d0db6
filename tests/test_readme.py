"""The README's promises that code can check (issue 14): two commands to set up and run on a fresh machine and
one to test; the CPU-only install said in prose; examples that work on any machine; the plugin section's
example runs as written (with random weights, offline); the defaults it states are the code's defaults, and
`.gitignore` covers the outputs a run or a build leaves in a checkout.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, flags=re.S | re.M)
    assert match, f"README has no section '## {title}'"
    return match.group(1)


def _blocks(text: str, lang: str = "bash") -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def _commands(block: str) -> list[str]:
    """Command lines of a shell block (continuations joined, comments and blank lines dropped)."""
    joined = block.replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def test_quick_start_is_two_commands_and_tests_one() -> None:
    quick = _section("Quick start")
    [block] = _blocks(quick)
    assert _commands(block) == ["pip install .", "bench run"]
    assert "```" not in quick.replace(f"```bash\n{block}```", "")  # no other block: the CPU-only route is prose
    [tests] = _blocks(_section("Tests"))
    assert _commands(tests) == ['pip install -e ".[dev]" && python -m pytest']


def test_cpu_only_install_is_explained_in_the_quick_start() -> None:
    quick = " ".join(_section("Quick start").split())
    assert "`pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu`" in quick
    assert re.search(r"\d\.\d GiB", quick), "the measured install size"
    assert "Untested here" in quick  # what could not be tried is said so
    assert re.search(r"first `bench run` took \d+ s", quick), "how long the first run takes"


def test_no_example_reads_as_a_shell_pipe() -> None:
    for block in _blocks(README):
        for command in _commands(block):
            if command.startswith("bench list"):
                assert "|" not in command, command


def test_gene_set_examples_work_anywhere() -> None:
    """`--gene-sets` in a command is `hallmark` or a path that says where it is, never a bare file name."""
    values = [m for block in _blocks(README) for command in _commands(block)
              for m in re.findall(r"--gene-sets\s+(\S+)", command)]
    assert values, "the README shows --gene-sets"
    for value in values:
        assert value == "hallmark" or value.startswith(("~/", "/", "$")), value


def test_bench_commands_in_the_readme_are_real_commands() -> None:
    from click.testing import CliRunner

    from stbench.cli import cli

    seen = set()
    for block in _blocks(README):
        for command in _commands(block):
            words = command.split()
            if words[:1] != ["bench"] or len(words) < 2:
                continue
            path = [w for w in words[1:3] if not w.startswith(("-", "["))]
            key = tuple(path)
            if key in seen:
                continue
            seen.add(key)
            r = CliRunner().invoke(cli, [*path, "--help"])
            assert r.exit_code == 0, f"{command}: {r.output}"


def test_the_plugin_example_runs_with_random_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The "Adding an encoder" snippet as written: registers, builds with random weights without any file,
    and offline with an empty cache says how to provide weights."""
    torch = pytest.importorskip("torch")
    from stbench.encoders import encoders, get_encoder
    from stbench.errors import WeightsError
    from stbench.testing import use_offline_hub

    [snippet] = _blocks(_section("Adding an encoder"), "python")
    assert "random_init=True" in snippet and "weights.random_seed" in snippet
    encoders.names()  # built-ins and plugins loaded, then the registry restored after the test
    monkeypatch.setattr(encoders, "_entries", dict(encoders._entries))
    monkeypatch.setattr(encoders, "_aliases", dict(encoders._aliases))
    exec(compile(snippet, "README.md", "exec"), {"__name__": "readme_plugin"})  # noqa: S102
    use_offline_hub(monkeypatch, tmp_path / "hub")
    enc = get_encoder("my-vit")
    assert enc.spec.random_init and enc.available() is None
    a, b = enc.load("random:3"), enc.load("random:3")
    assert a.fingerprint.startswith("random:seed3-")
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        out = a.model(x)
        assert out.shape == (2, enc.spec.embed_dim)
        torch.testing.assert_close(out, b.model(x))  # the seed decides the weights
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE"):
        enc.load()


def test_stated_defaults_are_the_code_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from stbench.cli.leaderboard import DEFAULT_OUT
    from stbench.settings import data_root, store_root

    home = tmp_path / "home"
    monkeypatch.setenv("STBENCH_HOME", str(home))
    monkeypatch.delenv("STBENCH_STORE", raising=False)
    monkeypatch.delenv("STBENCH_DATA_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    store = " ".join(_section("The store").split())
    assert store_root() == home / "store" and "`$STBENCH_HOME/store`" in store
    assert data_root() == home / "data" and "default `$STBENCH_HOME/data`" in store
    assert "default ./stbench-store" not in README
    assert f"`./{DEFAULT_OUT}`" in " ".join(_section("Leaderboard").split())


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_gitignore_covers_the_default_outputs() -> None:
    from stbench.cli.leaderboard import DEFAULT_OUT
    from stbench.settings import LEGACY_STORE

    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    outputs = [f"{DEFAULT_OUT}/index.html", f"{LEGACY_STORE}/catalog.duckdb", "stbench-data/DEMO/task.json",
               "benchmarks/out/results.jsonl"]
    r = subprocess.run(["git", "check-ignore", "--no-index", *outputs], cwd=REPO, capture_output=True, text=True,
                       check=False)
    assert sorted(r.stdout.split()) == sorted(outputs), r.stdout
