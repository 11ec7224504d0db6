"""No debris that matters: writers killed with SIGKILL at a chosen point (tests/_kill.py) leave only hidden
temporary names, which every listing skips and the next writer in the folder removes, and a killed site build
leaves the previous site whole. First, the rules of `stbench.tempfiles` themselves."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from stbench.cli import cli
from stbench.tasks import list_task_dirs, open_task
from stbench.tempfiles import STALE_AFTER_S, clean_stale, is_temp_name, parse_temp_name, stale_temps, temp_path
from tests._kill import killed_at, needs_sigkill
from tests._leaderboard import leaderboard_store, register_encoders
from tests._tiny import make_tiny_task, tiny_encoder


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def _hidden(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith("."))


def _named(folder: Path, target: str, *, pid: int, start: int, host: str | None = None, kind: str = "tmp") -> Path:
    """A temporary folder as another writer would have named it."""
    host = host or parse_temp_name(temp_path(folder / "x").name).host
    path = folder / f".{target}.{kind}-{host}-{pid}-{start}-0123abcd"
    path.mkdir()
    return path


# -- stbench.tempfiles -------------------------------------------------------------------------------------


def test_temp_names_carry_their_writer_and_are_recognised():
    path = temp_path(Path("store/S0.h5"))
    tag = parse_temp_name(path.name)
    assert path.parent == Path("store") and path.name.startswith(".S0.h5.tmp-") and path.suffix != ".h5"
    assert (tag.target, tag.kind, tag.pid) == ("S0.h5", "tmp", os.getpid())
    with open(f"/proc/{os.getpid()}/stat") as fh:  # the start in clock ticks since boot (Linux), read here
        assert tag.start == int(fh.read().rsplit(")", 1)[1].split()[19])
    assert temp_path(Path("S0.h5")) != temp_path(Path("S0.h5"))
    assert parse_temp_name(temp_path(Path("site"), "old").name).kind == "old"
    for legacy in (".S0.h5.1a2b3c4d.tmp", ".HER2ST.tmp-1a2b3c4d", ".HER2ST.old-1a2b3c4d", ".LUNG.fetch-1a2b3c4d"):
        assert is_temp_name(legacy), legacy
    for other in ("S0.h5", "TINY", ".hidden", ".stbench-leaderboard", ".TINY.tmp-host", ".x.tmp-h-1-2-nothex!"):
        assert not is_temp_name(other), other


def _start_ticks(pid):
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[19])


def test_stale_means_the_writer_is_gone(tmp_path):
    me = parse_temp_name(temp_path(tmp_path / "x").name)
    parent = psutil.Process(os.getppid())  # alive for the whole test
    alive = [
        _named(tmp_path, "mine", pid=me.pid, start=me.start),
        _named(tmp_path, "parent", pid=parent.pid, start=_start_ticks(parent.pid)),
        _named(tmp_path, "elsewhere", pid=1, start=0, host="another-host"),  # may still run there
        _named(tmp_path, "LEGACY", pid=0, start=0).rename(tmp_path / ".LEGACY.tmp-1a2b3c4d"),  # no identity, young
    ]
    gone = [
        _named(tmp_path, "dead", pid=_dead_pid(), start=me.start),
        _named(tmp_path, "reused", pid=parent.pid, start=_start_ticks(parent.pid) - 100),  # same PID, other process
        _named(tmp_path, "long-ago", pid=1, start=0, host="another-host"),
        tmp_path / ".S0.h5.1a2b3c4d.tmp",
    ]
    gone[-1].write_bytes(b"half an HDF5 file")
    _age(gone[2], STALE_AFTER_S + 60)
    _age(gone[3], STALE_AFTER_S + 60)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "TASK").mkdir()
    assert all(p.exists() for p in alive)
    assert stale_temps(tmp_path) == sorted(gone)
    assert stale_temps(tmp_path, target="dead") == [gone[0]]
    assert clean_stale(tmp_path) == sorted(gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".hidden", "TASK", *(p.name for p in alive)])


def test_clean_puts_back_what_a_killed_swap_had_moved_aside(tmp_path):
    dead, me = _dead_pid(), parse_temp_name(temp_path(tmp_path / "x").name)
    old = _named(tmp_path, "site", pid=dead, start=me.start, kind="old")
    (old / "index.html").write_text("the old site")
    new = _named(tmp_path, "site", pid=dead, start=me.start)
    (new / "index.html").write_text("half of the new site")
    (tmp_path / "TASK").mkdir()
    replaced = _named(tmp_path, "TASK", pid=dead, start=me.start, kind="old")  # the swap got through: removed
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "f").write_text("not ours")
    link = tmp_path / f".LUNG.tmp-{me.host}-{dead}-{me.start}-0123abcd"
    link.symlink_to(kept, target_is_directory=True)  # fetch stages a link: unlinked, never followed
    clean_stale(tmp_path)
    assert (tmp_path / "site" / "index.html").read_text() == "the old site"
    assert not any(p.exists() or p.is_symlink() for p in (old, new, replaced, link))
    assert (kept / "f").read_text() == "not ours" and _hidden(tmp_path) == []


# -- killed importers and extractions ----------------------------------------------------------------------


@needs_sigkill
def test_a_killed_import_is_never_listed_and_the_next_import_removes_it(tmp_path):
    root = tmp_path / "data"
    killed_at(tmp_path, f"""
        from stbench.data.layout import TaskWriter
        from tests._tiny import make_tiny_task
        block_at(TaskWriter, "add_sample", after=1)  # one sample written, the second under way
        make_tiny_task(Path({str(root)!r}))
    """)
    [debris] = root.iterdir()
    assert debris.name.startswith(".TINY.tmp-") and (debris / "splits").is_dir()
    assert list_task_dirs(root) == []
    listed = CliRunner().invoke(cli, ["list", "tasks", "--data-root", str(root), "--json"])
    assert listed.exit_code == 0 and "TINY" not in listed.output, listed.output
    run = CliRunner().invoke(cli, ["run", "--data-root", str(root), "--store", str(tmp_path / "store"),
                                   "--task", "all", "--no-progress"])
    assert run.exit_code != 0 and "no task folders under the data root" in run.output, run.output
    make_tiny_task(root, "OTHER")
    assert [p.name for p in root.iterdir()] == ["OTHER"]


@needs_sigkill
def test_an_overwrite_killed_between_its_renames_gets_the_old_task_back(tmp_path):
    root = tmp_path / "data"
    killed_at(tmp_path, f"""
        from tests._tiny import make_tiny_task
        root = Path({str(root)!r})
        make_tiny_task(root, n_samples=3)
        block_at(Path, "rename", after=1)  # commit: the old TINY moved aside, the new one not yet moved in
        make_tiny_task(root, n_samples=2, overwrite=True)
    """)
    assert not (root / "TINY").exists() and list_task_dirs(root) == []
    assert sorted(parse_temp_name(p.name).kind for p in root.iterdir()) == ["old", "tmp"]
    make_tiny_task(root, "OTHER")
    assert sorted(p.name for p in root.iterdir()) == ["OTHER", "TINY"]
    assert len(open_task("tiny", root).samples) == 3  # the old task, whole


@needs_sigkill
def test_a_killed_extraction_leaves_a_temp_file_that_the_next_extraction_removes(tmp_path):
    from stbench.encoders import encoders
    from stbench.protocol import Protocol
    from stbench.runner import ReducerChoice, run_task
    from stbench.stores import Store

    root, store = tmp_path / "data", tmp_path / "store"
    make_tiny_task(root)
    run = f"""
        with Store(Path({str(store)!r})) as st:
            run_task(open_task("tiny", Path({str(root)!r})), "test-tiny-cnn", [ReducerChoice("identity")],
                     Protocol.from_options(), st, device="cpu")
    """
    killed_at(tmp_path, f"""
        from stbench.encoders import encoders
        from stbench.protocol import Protocol
        from stbench.runner import ReducerChoice, run_task
        from stbench.stores import EmbeddingWriter, Store
        from stbench.tasks import open_task
        from tests._tiny import tiny_encoder
        encoders.register(tiny_encoder(), origin="tests")
        block_at(EmbeddingWriter, "write", after=1)  # S0 done, S1 under way
    """ + run)
    [folder] = {p.parent for p in (store / "embeddings").rglob("*") if p.is_file()}
    debris = [p for p in folder.iterdir() if is_temp_name(p.name)]
    assert debris and [p.name for p in folder.glob("*.h5")] == ["S0.h5"]
    if "test-tiny-cnn" not in encoders:
        encoders.register(tiny_encoder(), origin="tests")
    with Store(store) as st:
        run_task(open_task("tiny", root), "test-tiny-cnn", [ReducerChoice("identity")], Protocol.from_options(), st,
                 device="cpu")
    assert sorted(p.name for p in folder.iterdir()) == ["S0.h5", "S1.h5", "S2.h5"]
    from stbench.stores.embeddings import embedding_checksum_ok

    assert all(embedding_checksum_ok(p) for p in folder.iterdir())


# -- the leaderboard site ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    register_encoders()
    return leaderboard_store(tmp_path_factory)


def _build(store: Path, out: Path) -> None:
    r = CliRunner().invoke(cli, ["leaderboard", "build", "--store", str(store), "--out", str(out),
                                 "--include-synthetic", "--no-embeddings"])
    assert r.exit_code == 0, r.output


def _killed_build(tmp_path: Path, store: Path, out: Path, point: str, after: int = 0) -> None:
    killed_at(tmp_path, f"""
        from stbench.leaderboard import site
        block_at({point}, after={after})
        site.build_site(Path({str(store)!r}), Path({str(out)!r}), include_synthetic=True, embeddings=False)
    """)


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@needs_sigkill
def test_a_killed_first_build_leaves_nothing_the_next_build_refuses(store, tmp_path):
    out = tmp_path / "site"
    _killed_build(tmp_path, store, out, '__import__("stbench.leaderboard.task_page", fromlist=["task_page"]), "task_page"')  # assets and CSVs written, no page yet
    assert not out.exists()
    [debris] = _hidden(tmp_path)
    assert debris.name.startswith(".site.tmp-")
    _build(store, out)
    assert (out / "index.html").exists() and _hidden(tmp_path) == []


@needs_sigkill
def test_a_killed_rebuild_leaves_the_old_site_whole(store, tmp_path):
    out = tmp_path / "site"
    _build(store, out)
    (out / "notes.txt").write_text("mine")  # the user's: every build carries it over
    before = _tree(out)
    _killed_build(tmp_path, store, out, '__import__("stbench.leaderboard.task_page", fromlist=["task_page"]), "task_page"')
    assert _tree(out) == before
    _build(store, out)
    assert _hidden(tmp_path) == [] and (out / "notes.txt").read_text() == "mine"
    assert set(_tree(out)) == set(before)


@needs_sigkill
def test_a_build_killed_between_its_renames_gets_the_old_site_back(store, tmp_path):
    out = tmp_path / "site"
    _build(store, out)
    before = _tree(out)
    _killed_build(tmp_path, store, out, 'Path, "rename"', after=1)  # the old site aside, the new one not yet in
    assert not out.exists()
    assert sorted(parse_temp_name(p.name).kind for p in _hidden(tmp_path)) == ["old", "tmp"]
    clean_stale(tmp_path, target="site")  # what the next build does first
    assert _tree(out) == before and _hidden(tmp_path) == []
    _build(store, out)
    assert _hidden(tmp_path) == []
