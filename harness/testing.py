"""Helpers for testing stbench and its plugins without a network.

`write_hub_repo` lays files out in a Hugging Face cache exactly as ``huggingface_hub`` leaves a download
(``refs/<branch>``, ``blobs/``, ``snapshots/<commit>/`` links, ``trees/<commit>.json``), so with
``HF_HUB_OFFLINE=1`` the real download code path (``hf_hub_download``, ``snapshot_download``, timm's
``hf-hub:``) serves them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["COMMIT", "write_hub_repo", "use_offline_hub"]

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_LFS_SUFFIXES = (".bin", ".safetensors", ".pth", ".pt", ".h5", ".h5ad", ".ckpt")


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's object id


def write_hub_repo(
    cache: Path,
    repo_id: str,
    files: Mapping[str, bytes],
    *,
    repo_type: str = "model",
    commit: str = COMMIT,
    branch: str = "main",
    listed: Mapping[str, bytes] | None = None,
    tree: bool = True,
) -> Path:
    """Write ``files`` ({path in repo: content}) into the hub cache at ``cache``; returns the snapshot folder.

    ``listed`` adds files to the tree listing without writing them (a snapshot the hub knows is incomplete);
    ``tree=False`` writes no listing, as huggingface_hub before 2.x left the cache.
    """
    repo = Path(cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / branch).write_text(commit)  # the hub writes the bare hash, no newline
    (repo / "blobs").mkdir(exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    listing: dict[str, dict] = {}
    for rel, data in {**(listed or {}), **files}.items():
        entry: dict = {"size": len(data), "blob_id": _git_blob_id(data)}
        if rel.endswith(_LFS_SUFFIXES):  # LFS files: blob named by sha256
            entry |= {"lfs_sha256": hashlib.sha256(data).hexdigest(), "lfs_size": len(data)}
        listing[rel] = entry
        if rel not in files:
            continue
        blob = repo / "blobs" / entry.get("lfs_sha256", entry["blob_id"])
        blob.write_bytes(data)
        pointer = snapshot / rel
        pointer.parent.mkdir(parents=True, exist_ok=True)
        if pointer.is_symlink() or pointer.exists():
            pointer.unlink()
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    if tree:
        (repo / "trees").mkdir(exist_ok=True)
        (repo / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": listing}))
    return snapshot


def use_offline_hub(monkeypatch: Any, cache: Path) -> Path:
    """Point huggingface_hub at ``cache`` with ``HF_HUB_OFFLINE=1``, through a pytest ``monkeypatch``.

    huggingface_hub reads its environment once, at import, so its module constants are patched as well
    as the environment (which subprocesses inherit).
    """
    from huggingface_hub import constants

    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache
