"""Packaging: one import package `stbench`, no top-level module named after the design card's folders."""

import subprocess
import sys
import zipfile

import pytest

FORBIDDEN = {"encoders", "reducers", "stores", "harness", "leaderboard"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: CI has no network to fetch a fresh setuptools, and the venv already has one.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), "."],
                   check=True, cwd=_repo_root())
    [path] = out.glob("stbench-*.whl")
    return path


def _repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


def test_wheel_holds_one_import_package_with_every_subpackage(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"stbench"}, top
    assert not FORBIDDEN & top
    for module in ("stbench/__init__.py", "stbench/cli/__init__.py", "stbench/tasks.py", "stbench/runner.py",
                   "stbench/data/her2st.py", "stbench/data/fetch.py", "stbench/data/demo.py",
                   "stbench/encoders/efficientnet_lite.py", "stbench/reducers/pca.py", "stbench/stores/catalog.py",
                   "stbench/leaderboard/__init__.py"):
        assert module in names, module
    assert not any(n.startswith("stbench/tests") or "/tests/" in n for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "bench = stbench.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_no_large_or_data_files_in_the_wheel(wheel):
    infos = zipfile.ZipFile(wheel).infolist()
    assert max(i.file_size for i in infos) < 200_000
    assert not [i.filename for i in infos if i.filename.endswith((".h5", ".h5ad", ".pth", ".jpg", ".gz", ".duckdb"))]
    # besides modules, only the typing marker and the leaderboard's own stylesheet and scripts (plotly.js is
    # copied from the installed plotly at build time, never shipped)
    package_files = {i.filename for i in infos if i.filename.startswith("stbench/") and not i.filename.endswith(".py")}
    assert package_files == {"stbench/py.typed", "stbench/leaderboard/assets/app.js", "stbench/leaderboard/assets/slices.js",
                             "stbench/leaderboard/assets/style.css"}
