"""`stbench.data.fetch`: one HEST task from the Hugging Face cache into the data root, never the network.

The happy path runs the real `huggingface_hub.snapshot_download` with `HF_HUB_OFFLINE` on, against a cache
laid out as the hub writes it for a dataset: refs/main, snapshots/<commit>/ links into blobs/, and the
tree listing trees/<commit>.json.
Failure modes patch `snapshot_download` as the module imported it, raising the hub's own exceptions.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx2
import numpy as np
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from stbench.data import fetch
from stbench.data.fetch import HEST_REPO_ID, fetch_task, missing_parts
from stbench.data.layout import TaskWriter, leave_one_group_out
from stbench.errors import FetchError, StbenchError
from stbench.tasks import TASK_META, PatchFile, open_task
from stbench.testing import COMMIT, write_hub_repo
from tests._kill import killed_at, needs_sigkill

GENES = ["EPCAM", "KRT8", "PTPRC", "COL1A1", "MKI67"]


def _write_task(root: Path, name: str, samples: list[str]) -> Path:
    """A tiny task in the HEST layout (no task.json, as the hub has none): 3 patches per sample."""
    import anndata as ad

    rng = np.random.default_rng(0)
    with TaskWriter(root, name) as w:
        for sid in samples:
            barcodes = [f"{sid}_{i}" for i in range(3)]
            counts = ad.AnnData(rng.poisson(2.0, (3, len(GENES))).astype(np.float32))
            counts.obs_names, counts.var_names = barcodes, GENES
            w.add_sample(
                sid,
                patches=[rng.integers(0, 255, (3, 224, 224, 3), dtype=np.uint8)],
                n_patches=3,
                barcodes=barcodes,
                coords=np.arange(6).reshape(3, 2) * 224,
                counts=counts,
            )
        task = w.commit(leave_one_group_out({s: s for s in samples}), GENES, {})
    (task / TASK_META).unlink()
    (task / "mean_50genes.json").write_text(json.dumps({"genes": GENES}))
    return task


@pytest.fixture(scope="module")
def tasks_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SKCM and LUNG task folders, written once for the module."""
    root = tmp_path_factory.mktemp("hest-src")
    _write_task(root, "SKCM", ["TENX115", "TENX117"])
    _write_task(root, "LUNG", ["TENX118", "TENX141"])
    return root


def build_hub_cache(
    cache: Path, src: Path, tasks: list[str], *, listed: list[str] | None = None, tree: bool = True
) -> Path:
    """Lay ``src/<task>`` folders out in ``cache`` exactly as `snapshot_download` leaves a dataset repo.

    ``listed`` names extra tasks in the cached tree listing whose files are absent, which makes the snapshot
    one the hub knows to be incomplete. ``tree=False``: no listing, as huggingface_hub before 2.x left it.
    """

    def files_of(names: list[str]) -> dict[str, bytes]:
        return {f.relative_to(src).as_posix(): f.read_bytes()
                for t in names for f in sorted((src / t).rglob("*")) if f.is_file()}

    extra = [t for t in (listed or []) if t not in tasks]
    return write_hub_repo(cache, HEST_REPO_ID, files_of(tasks), repo_type="dataset", commit=COMMIT,
                          listed=files_of(extra), tree=tree)


@pytest.fixture(autouse=True)
def _offline(offline_hub: Path) -> Path:
    """Every test here runs with HF_HUB_OFFLINE on and an empty hub cache (tests/conftest.py)."""
    return offline_hub


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Record every call to `snapshot_download` made by the fetch module, then run the real one."""
    calls: list[dict] = []
    real = fetch.snapshot_download

    def recording(repo_id: str, **kwargs: object) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        return real(repo_id, **kwargs)

    monkeypatch.setattr(fetch, "snapshot_download", recording)
    return calls


def _raising(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def fail(*args: object, **kwargs: object) -> str:
        raise exc

    monkeypatch.setattr(fetch, "snapshot_download", fail)


def _response(status: int) -> httpx2.Response:
    url = f"https://huggingface.co/api/datasets/{HEST_REPO_ID}/revision/main"
    return httpx2.Response(status, request=httpx2.Request("GET", url))


def test_fetch_links_only_the_requested_task_from_the_cache(
    tmp_path: Path, offline_hub: Path, tasks_src: Path, spy: list[dict]
) -> None:
    snapshot = build_hub_cache(offline_hub, tasks_src, ["SKCM", "LUNG"])
    root = tmp_path / "data"

    path = fetch_task("skcm", root)

    assert path == root / "SKCM"
    assert [p.name for p in root.iterdir()] == ["SKCM"]  # LUNG stayed in the cache, no temp leftovers
    assert path.is_symlink() and path.resolve() == (snapshot / "SKCM").resolve()
    assert spy == [
        {"repo_id": HEST_REPO_ID, "repo_type": "dataset", "allow_patterns": ["SKCM/*"],
         "revision": None, "token": None, "cache_dir": None}
    ]
    task = open_task("skcm", root)
    assert sorted(task.samples) == ["TENX115", "TENX117"] and len(task.folds) == 2
    assert task.genes == GENES and not task.synthetic
    with PatchFile(task.samples["TENX115"].patches) as pf:  # read through the link into the blobs
        assert len(pf) == 3 and pf.patch_shape == (224, 224, 3)


def test_alias_resolves_and_pattern_is_exactly_one_task(
    tmp_path: Path, offline_hub: Path, tasks_src: Path, spy: list[dict]
) -> None:
    build_hub_cache(offline_hub, tasks_src, ["SKCM", "LUNG"])
    path = fetch_task("luad", tmp_path / "data", token="hf_explicit", revision="main")
    assert path.name == "LUNG" and not missing_parts(path)
    assert [c["allow_patterns"] for c in spy] == [["LUNG/*"]]
    assert spy[0]["token"] == "hf_explicit" and spy[0]["revision"] == "main"
    assert not (tmp_path / "data" / "SKCM").exists()


def test_second_call_is_idempotent_and_offline_free(
    tmp_path: Path, offline_hub: Path, tasks_src: Path, spy: list[dict]
) -> None:
    build_hub_cache(offline_hub, tasks_src, ["SKCM"])
    root = tmp_path / "data"
    first = fetch_task("SKCM", root)
    target = os.readlink(first)
    second = fetch_task("Skcm", root)
    assert second == first and os.readlink(second) == target
    assert len(spy) == 1  # the complete folder was returned without asking the hub again
    assert [p.name for p in root.iterdir()] == ["SKCM"]


def test_explicit_revision_repoints_the_link(
    tmp_path: Path, offline_hub: Path, tasks_src: Path, spy: list[dict]
) -> None:
    snapshot = build_hub_cache(offline_hub, tasks_src, ["SKCM"])
    root = tmp_path / "data"
    fetch_task("skcm", root)
    (root / "SKCM").unlink()
    (root / "SKCM").symlink_to(snapshot)  # a link made here, pointing elsewhere
    path = fetch_task("skcm", root, revision=COMMIT)
    assert [c["revision"] for c in spy] == [None, COMMIT]  # asked the hub again, for that revision
    assert path.resolve() == (snapshot / "SKCM").resolve() and not missing_parts(path)
    assert sorted(p.name for p in root.iterdir()) == ["SKCM"]


def test_dangling_link_is_replaced(tmp_path: Path, offline_hub: Path, tasks_src: Path) -> None:
    build_hub_cache(offline_hub, tasks_src, ["SKCM"])
    root = tmp_path / "data"
    root.mkdir()
    (root / "SKCM").symlink_to(tmp_path / "deleted-cache" / "SKCM")  # e.g. after `hf cache rm`
    path = fetch_task("skcm", root)
    assert path.is_dir() and not missing_parts(path)


@needs_sigkill
def test_a_killed_fetch_is_never_listed_and_the_next_fetch_removes_it(
    tmp_path: Path, offline_hub: Path, tasks_src: Path
) -> None:
    from stbench.tasks import list_task_dirs

    build_hub_cache(offline_hub, tasks_src, ["SKCM"])
    root = tmp_path / "data"
    killed_at(tmp_path, f"""
        from stbench.data import fetch
        block_at(fetch.os, "replace")  # the link to the cache staged, not yet renamed into place
        fetch.fetch_task("skcm", Path({str(root)!r}))
    """)
    [debris] = root.iterdir()
    assert debris.name.startswith(".SKCM.") and debris.is_symlink() and (debris / "splits").is_dir()
    assert list_task_dirs(root) == []
    (root / ".LUNG.fetch-1a2b3c4d").symlink_to(tmp_path)  # an older stbench's, without its writer's identity
    fetch_task("skcm", root)
    assert sorted(p.name for p in root.iterdir()) == [".LUNG.fetch-1a2b3c4d", "SKCM"]  # young: it may still run

def test_without_symlinks_files_are_hard_linked(
    tmp_path: Path, offline_hub: Path, tasks_src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = build_hub_cache(offline_hub, tasks_src, ["SKCM"])

    def no_symlinks(*args: object, **kwargs: object) -> None:
        msg = "symbolic links are not permitted"
        raise OSError(msg)

    monkeypatch.setattr(fetch.os, "symlink", no_symlinks)
    path = fetch_task("skcm", tmp_path / "data")
    assert path.is_dir() and not path.is_symlink() and not missing_parts(path)
    blob = (snapshot / "SKCM" / "patches" / "TENX115.h5").resolve()
    assert os.path.samefile(path / "patches" / "TENX115.h5", blob)  # no second copy of the data


def test_offline_with_empty_cache_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FetchError) as err:
        fetch_task("skcm", tmp_path / "data")
    msg = str(err.value)
    assert "HF_HUB_OFFLINE" in msg and "by hand" in msg and "--data-root" in msg
    assert str(tmp_path / "data" / "SKCM") in msg and "\n" not in msg
    assert not (tmp_path / "data" / "SKCM").exists()


@pytest.mark.parametrize("tree", [True, False], ids=["tree-lists-LUNG", "no-tree-listing"])
def test_offline_with_other_task_cached(
    tmp_path: Path, offline_hub: Path, tasks_src: Path, tree: bool  # noqa: FBT001 (a pytest parameter)
) -> None:
    # With a tree listing the hub raises IncompleteSnapshotError; without, it returns a snapshot lacking LUNG.
    build_hub_cache(offline_hub, tasks_src, ["SKCM"], listed=["SKCM", "LUNG"], tree=tree)
    with pytest.raises(FetchError, match=r"HF_HUB_OFFLINE is set and LUNG is not \(fully\) in the Hugging"):
        fetch_task("lung", tmp_path / "data")


def test_no_network_without_offline_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    _raising(monkeypatch, httpx2.ConnectError("[Errno -3] Temporary failure in name resolution"))
    with pytest.raises(FetchError, match=r"cannot be reached \(no network\?\).*copy the SKCM task folder by"):
        fetch_task("skcm", tmp_path / "data")


def _gated() -> GatedRepoError:
    return GatedRepoError("403 Client Error. Cannot access gated repo.", response=_response(403))


def _behind_cache_miss(cause: BaseException) -> LocalEntryNotFoundError:
    # What snapshot_download raises when it falls back to an incomplete cache after an HTTP error.
    err = LocalEntryNotFoundError("The cached snapshot is incomplete.")
    err.__cause__ = cause
    return err


@pytest.mark.parametrize(
    "make",
    [
        _gated,
        lambda: RepositoryNotFoundError("401 Client Error. Repository Not Found", response=_response(401)),
        lambda: HfHubHTTPError("401 Client Error. Invalid credentials", response=_response(401)),
        lambda: _behind_cache_miss(_gated()),
    ],
    ids=["gated", "401-no-token", "bad-token", "gated-behind-cache-miss"],
)
def test_no_access_points_to_the_access_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: Callable[[], BaseException]
) -> None:
    _raising(monkeypatch, make())
    with pytest.raises(FetchError) as err:
        fetch_task("skcm", tmp_path / "data")
    msg = str(err.value)
    assert "request access at https://huggingface.co/datasets/MahmoodLab/hest-bench" in msg
    assert "HF_TOKEN" in msg and "`hf auth login`" in msg and "\n" not in msg
    assert isinstance(err.value.__cause__, HfHubHTTPError | LocalEntryNotFoundError)


def test_unknown_repository_and_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _raising(monkeypatch, RepositoryNotFoundError("404 Client Error.", response=_response(404)))
    with pytest.raises(FetchError, match="dataset someone/else not found"):
        fetch_task("skcm", tmp_path, repo_id="someone/else")
    _raising(monkeypatch, RevisionNotFoundError("404 Client Error.", response=_response(404)))
    with pytest.raises(FetchError, match="revision 'v9' does not exist in MahmoodLab/hest-bench"):
        fetch_task("skcm", tmp_path, revision="v9")


def test_server_error_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    _raising(monkeypatch, HfHubHTTPError("502 Server Error: Bad Gateway\n\ndetail", response=_response(502)))
    with pytest.raises(FetchError, match=r"^the Hugging Face Hub failed \(502 Server Error: Bad Gateway\); "):
        fetch_task("skcm", tmp_path)


def test_other_exceptions_are_not_disguised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _raising(monkeypatch, ValueError("a bug, not a download problem"))
    with pytest.raises(ValueError, match="a bug"):
        fetch_task("skcm", tmp_path)


def test_download_missing_part_of_the_layout(
    tmp_path: Path, tasks_src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = tmp_path / "snapshot"
    shutil.copytree(tasks_src / "SKCM", snapshot / "SKCM")
    (snapshot / "SKCM" / "var_50genes.json").unlink()
    (snapshot / "SKCM" / "patches" / "TENX117.h5").unlink()
    monkeypatch.setattr(fetch, "snapshot_download", lambda *a, **k: str(snapshot))
    with pytest.raises(FetchError, match=r"SKCM as downloaded from MahmoodLab/hest-bench lacks var_50genes"):
        fetch_task("skcm", tmp_path / "data")
    assert not (tmp_path / "data" / "SKCM").exists()
    (snapshot / "SKCM" / "var_50genes.json").write_text(json.dumps({"genes": GENES}))
    with pytest.raises(FetchError, match=r"lacks patches/TENX117\.h5"):  # a sample file the splits name
        fetch_task("skcm", tmp_path / "data")


def test_plain_folder_is_never_overwritten(
    tmp_path: Path, tasks_src: Path, monkeypatch: pytest.MonkeyPatch, spy: list[dict]
) -> None:
    root = tmp_path / "data"
    shutil.copytree(tasks_src / "SKCM", root / "SKCM")  # copied by hand: complete
    assert fetch_task("skcm", root) == root / "SKCM" and spy == []
    with pytest.raises(FetchError, match="move it away to fetch SKCM at 'v2'"):
        fetch_task("skcm", root, revision="v2")
    shutil.rmtree(root / "SKCM" / "adata")
    with pytest.raises(FetchError, match=r"is incomplete \(missing adata\); move it away"):
        fetch_task("skcm", root)
    assert (root / "SKCM" / "patches").is_dir() and spy == []


@pytest.mark.parametrize(("typed", "hint"), [("skcn", "Did you mean: skcm"), ("lymph-idcc", "lymph_idc")])
def test_unknown_task_suggests(tmp_path: Path, typed: str, hint: str, spy: list[dict]) -> None:
    with pytest.raises(StbenchError, match=f"unknown HEST task '{typed}'.*{hint}"):
        fetch_task(typed, tmp_path)
    assert spy == []


def test_her2st_is_not_a_hub_task(tmp_path: Path) -> None:
    with pytest.raises(StbenchError, match="unknown HEST task 'her2st'"):
        fetch_task("her2st", tmp_path)


def test_cli_fetch_without_network_exits_nonzero_with_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from stbench.cli import cli

    result = CliRunner().invoke(cli, ["data", "fetch", "--task", "luad", "--data-root", str(tmp_path / "data")])
    assert result.exit_code != 0
    last = result.output.strip().splitlines()[-1]  # after the "downloading LUNG ..." progress line
    assert last.startswith("Error: ") and "copy the LUNG task folder by hand" in last
    assert not (tmp_path / "data" / "LUNG").exists()
