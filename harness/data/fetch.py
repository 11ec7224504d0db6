"""Download one HEST-Benchmark task from the gated Hugging Face dataset, and nothing else.

Reads: the Hugging Face cache (``HF_HUB_CACHE``, else ``$HF_HOME/hub``), the hub's token (``HF_TOKEN`` or the
one stored by ``hf auth login``) and ``HF_HUB_OFFLINE``, all resolved by huggingface_hub itself.
Writes: the task's files into that cache, and ``<root>/<TASK>`` as a link to them.

Import this module lazily: huggingface_hub costs a noticeable fraction of a second to import.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from huggingface_hub import constants, snapshot_download

from stbench.errors import FetchError, StbenchError, suggest
from stbench.hub import ACCESS_HINT, hub_problem, offline_mode
from stbench.tasks import GENES_FILE, HEST_TASKS, canonical_task_name, open_task
from stbench.tempfiles import clean_stale, temp_path

__all__ = ["HEST_REPO_ID", "fetch_task", "missing_parts"]

log = logging.getLogger(__name__)

HEST_REPO_ID = "MahmoodLab/hest-bench"
REQUIRED = ("splits", "patches", "adata", GENES_FILE)


def fetch_task(
    task: str,
    root: Path,
    *,
    token: str | None = None,
    revision: str | None = None,
    repo_id: str = HEST_REPO_ID,
    cache_dir: str | Path | None = None,
) -> Path:
    """Make the HEST task ``task`` available as ``root/<TASK>``, downloading only that task's folder.

    ``task`` is what the user typed (``luad`` -> ``LUNG``); only the ten HEST task folders are accepted.
    The files are fetched with ``snapshot_download(repo_id, repo_type="dataset",
    allow_patterns=["<TASK>/*"])`` into the Hugging Face cache (``cache_dir``, default: the hub's own,
    honouring ``HF_HOME``/``HF_HUB_CACHE``; ``HF_HUB_OFFLINE=1`` serves the task from that cache).
    ``token`` defaults to the hub's own resolution (``HF_TOKEN``, then the ``hf auth login`` token).

    Placement: ``root/<TASK>`` becomes a symlink to ``snapshots/<commit>/<TASK>`` in the cache, so the
    200-500 MB patch files exist once, stay manageable with ``hf cache``, and are shared with other tools
    that use the same cache. We do not use ``snapshot_download(local_dir=root)``: it copies every file out
    of the cache (a second copy on disk), writes ``root/.cache/huggingface/`` metadata into the data root,
    and offline it only returns ``local_dir`` as it finds it (any non-empty data root passes), so it can
    never place a cached task there. Where symlinks are not allowed (Windows without the privilege), the
    folder is rebuilt with hard links, or copies across file systems. Either appears by one rename.

    An existing complete ``root/<TASK>`` is returned without any network call when ``revision`` is None.
    With an explicit ``revision`` a link made here is re-pointed at that revision; a plain folder is
    never overwritten. Progress goes to the ``stbench.data.fetch`` logger.

    Returns:
        ``root/<TASK>``, a folder that ``stbench.tasks.open_task`` reads.

    Raises:
        StbenchError: unknown task name (with a suggestion).
        FetchError: no access, no network or offline with nothing cached, unknown repository or revision,
            or a download that lacks part of the task layout; the message says what to do next.
    """
    name = canonical_task_name(task)
    if name not in HEST_TASKS:
        known = [t.lower() for t in HEST_TASKS]
        msg = f"unknown HEST task {task!r}.{suggest(task, [*known, 'luad'])} Known: {', '.join(known)}."
        raise StbenchError(msg)
    root = Path(root).expanduser()
    dest = root / name

    if dest.is_dir() and revision is None and not missing_parts(dest):
        log.info("%s is already present at %s; nothing to download", name, dest)
        return dest
    if dest.exists() and not dest.is_symlink():  # a plain folder (copied by hand?): never overwritten
        missing = missing_parts(dest)
        why = f"is incomplete (missing {', '.join(missing)})" if missing else "holds an unknown revision"
        msg = f"{dest} {why}; move it away to fetch {name}{f' at {revision!r}' if revision else ''}"
        raise FetchError(msg)

    log.info("downloading %s from the Hugging Face dataset %s (only %s/*)", name, repo_id, name)
    try:
        snapshot = snapshot_download(
            repo_id,
            repo_type="dataset",
            allow_patterns=[f"{name}/*"],
            revision=revision,
            token=token,
            cache_dir=cache_dir,
        )
    except Exception as exc:
        error = _fetch_error(exc, name=name, dest=dest, repo_id=repo_id, revision=revision, cache=cache_dir)
        if error is None:
            raise
        raise error from exc

    src = Path(snapshot) / name
    if not src.is_dir():
        # Unable to list the repository, the hub falls back to a cached snapshot that may hold other tasks.
        if offline_mode():
            raise _offline_error(name, dest, cache_dir)
        msg = (
            f"no {name} folder came from {repo_id} (revision {revision or 'main'}): the revision lacks it, "
            "or the hub was unreachable and the cache holds other tasks only; check --revision and the "
            f"network, or copy the folder by hand to {dest}"
        )
        raise FetchError(msg)
    if missing := missing_parts(src):
        msg = f"{name} as downloaded from {repo_id} lacks {', '.join(missing)} ({src})"
        raise FetchError(msg)
    _place(src, dest)
    log.info("%s is at %s (files in the Hugging Face cache: %s)", name, dest, src)
    return dest


def missing_parts(task_dir: Path) -> list[str]:
    """What a HEST task folder lacks: required entries, then the sample files its splits name.

    An empty list means complete. Reads the split CSVs only, not the patch or count data.
    """
    missing = [part for part in REQUIRED if not (task_dir / part).exists()]
    if missing:
        return missing
    try:
        task = open_task(task_dir.name, task_dir.parent)
    except StbenchError as exc:
        return [f"readable splits ({exc})"]
    return [
        path.relative_to(task_dir).as_posix()
        for sample in task.samples.values()
        for path in (sample.patches, sample.adata)
        if not path.exists()
    ]


def _place(src: Path, dest: Path) -> None:
    """Put ``src`` at ``dest`` by a rename, so a reader never sees a half-made folder; first removes what a
    killed placement left next to it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(dest.parent)
    tmp = temp_path(dest)
    try:
        try:
            os.symlink(src.absolute(), tmp, target_is_directory=True)
        except OSError:  # symlinks not permitted here (Windows without developer mode)
            shutil.copytree(src, tmp, copy_function=_link_or_copy)
        if dest.is_symlink() and not tmp.is_symlink():  # POSIX rename cannot put a folder over a link
            dest.unlink()
        os.replace(tmp, dest)
    except BaseException:
        if tmp.is_symlink():
            tmp.unlink()
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _link_or_copy(src: str, dst: str) -> None:
    real = os.path.realpath(src)  # cache files are links to blobs: link the blob, not the link
    try:
        os.link(real, dst)
    except OSError:  # another file system
        shutil.copy2(real, dst)


def _offline_error(name: str, dest: Path, cache: str | Path | None) -> FetchError:
    cache = cache or constants.HF_HUB_CACHE
    why = "the Hugging Face Hub cannot be reached (no network?)"
    if offline_mode():
        why = "HF_HUB_OFFLINE is set"
    return FetchError(
        f"{why} and {name} is not (fully) in the Hugging Face cache ({cache}); copy the {name} task folder "
        f"by hand (from a machine with access) to {dest}, or point --data-root (STBENCH_DATA_ROOT) at a "
        f"folder that holds {name}"
    )


def _fetch_error(
    exc: BaseException, *, name: str, dest: Path, repo_id: str, revision: str | None, cache: str | Path | None
) -> FetchError | None:
    """One actionable line for a hub failure; None for an error that is not the hub's (a real bug)."""
    problem = hub_problem(exc)
    if problem is None:
        return None
    access = f"request access at https://huggingface.co/datasets/{repo_id}, {ACCESS_HINT}"
    messages = {
        "gated": f"{repo_id} is gated and this account has no access: {access}",
        "revision": f"revision {revision!r} does not exist in {repo_id}; check --revision",
        "no-token": f"cannot see {repo_id} (no token, or a wrong repo id): {access}",
        "not-found": f"dataset {repo_id} not found on the Hugging Face Hub; check the repo id",
        "disabled": f"{repo_id} has been disabled on the Hugging Face Hub",
        "token-refused": f"the Hugging Face Hub refused the token ({problem.status}): {access}",
        "http": f"the Hugging Face Hub failed ({problem.detail}); try again later",
    }
    if problem.kind == "offline":
        return _offline_error(name, dest, cache)
    return FetchError(messages[problem.kind])
