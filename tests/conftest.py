"""Shared fixtures. The real HER2+ data lives outside the repository and is read in place, never copied."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA_ENV = "STBENCH_SHARED_DATA"


def shared_data_dir() -> Path:
    """``$STBENCH_SHARED_DATA``, else ``<repo>/../shared/data`` (it may not exist)."""
    return Path(os.environ.get(SHARED_DATA_ENV) or REPO.parent / "shared" / "data")


def require_shared(*parts: str) -> Path:
    """The path under the shared data folder, or skip the test saying what is missing and how to provide it."""
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (set {SHARED_DATA_ENV} to the shared/data folder)")
    return path


@pytest.fixture(scope="session")
def her2st_source() -> Path:
    """The real her2st folder (6 sections); the test is skipped when it is absent."""
    return require_shared("her2st")


@pytest.fixture(scope="session")
def her2st_task_root(her2st_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding ``HER2ST/``, imported once per session from all six real sections (patient split)."""
    from stbench.data.her2st import import_her2st

    root = tmp_path_factory.mktemp("her2st_root")
    import_her2st(her2st_source, root, progress=False)
    return root


@pytest.fixture(scope="session")
def her2st_run(her2st_task_root: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """identity and pca on the real HER2ST task with efficientnet-lite0 (HEST protocol), in a session store whose
    embeddings other real-data tests reuse: (task, store folder, results)."""
    from stbench.protocol import Protocol
    from stbench.runner import ReducerChoice, run_task
    from stbench.stores import Store
    from stbench.tasks import open_task

    store_dir = tmp_path_factory.mktemp("her2st_store")
    task = open_task("her2st", her2st_task_root)
    with Store(store_dir) as st:
        results = run_task(task, "efficientnet-lite0", [ReducerChoice("identity"), ReducerChoice("pca")],
                           Protocol.from_options(), st, device="cpu")
    return task, store_dir, results


@pytest.fixture(scope="session", autouse=True)
def session_digest_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The whole session (session fixtures included): a digest cache under tmp, not the user's home."""
    path = tmp_path_factory.mktemp("digests") / "file-digests.sqlite"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STBENCH_DIGEST_CACHE", str(path))
        yield path


@pytest.fixture(autouse=True)
def no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test: a user config path that does not exist, so the machine's own config never leaks in."""
    path = tmp_path / "no-user-config.toml"
    monkeypatch.setenv("STBENCH_CONFIG", str(path))
    return path


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_HUB_OFFLINE=1 with an empty hub cache in tmp_path; returns the cache folder."""
    from stbench.testing import use_offline_hub

    return use_offline_hub(monkeypatch, tmp_path / "hf" / "hub")
