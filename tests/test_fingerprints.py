"""Content fingerprints: a changed pixel or count is a changed input, and a warm run rereads nothing."""

import hashlib
import logging
import os
import sqlite3

import h5py
import numpy as np
import pytest

from stbench import extract, hashing
from stbench.encoders import encoders
from stbench.extract import source_fingerprint
from stbench.hashing import file_digest
from stbench.protocol import Protocol
from stbench.runner import ReducerChoice, run_task
from stbench.stores import Store, read_embeddings
from stbench.tasks import PatchFile, open_task
from tests._tiny import make_tiny_task, tiny_encoder


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    """Each test: its own digest cache file and an empty in-process memo (as in a new process)."""
    monkeypatch.setenv("STBENCH_DIGEST_CACHE", str(tmp_path / "digests.sqlite"))
    monkeypatch.setattr(hashing, "_memo", {})
    if "test-tiny-cnn" not in encoders:
        encoders.register(tiny_encoder(), origin="tests")


@pytest.fixture
def root(tmp_path):
    make_tiny_task(tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def reads(monkeypatch):
    """The files `file_digest` actually reads, in order."""
    seen = []
    real = hashing._hash_file

    def spy(path):
        seen.append(path.name)
        return real(path)

    monkeypatch.setattr(hashing, "_hash_file", spy)
    return seen


@pytest.fixture
def extracted(monkeypatch):
    """The samples whose embeddings get written."""
    seen = []
    real = extract.write_sample_embeddings

    def spy(pipeline, sample, path, **kw):
        seen.append(sample.id)
        return real(pipeline, sample, path, **kw)

    monkeypatch.setattr(extract, "write_sample_embeddings", spy)
    return seen


def _run(root, store_dir):
    with Store(store_dir) as st:
        [res] = run_task(open_task("tiny", root), "test-tiny-cnn", [ReducerChoice("identity")], Protocol.from_options(),
                         st, device="cpu")
    return res


def _embedding_files(store_dir):
    with Store(store_dir) as st:
        rows = [(sid, st.resolve(path)) for sid, path in st.catalog.rows("SELECT sample_id, path FROM embeddings")]
    return {sid: (path, os.stat(path).st_ino, os.stat(path).st_mtime_ns) for sid, path in rows}


def _rewrite_in_place(path, edit):
    """Apply ``edit(h5)`` with h5py in r+ mode, then set the mtime back: only the bytes (and ctime) differ."""
    before = os.stat(path)
    with h5py.File(path, "r+") as h5:
        edit(h5)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_ino, after.st_mtime_ns) == (before.st_size, before.st_ino, before.st_mtime_ns)


def test_inverted_patches_re_embed_that_sample_only_and_change_the_numbers(root, tmp_path, extracted):
    first = _run(root, tmp_path / "s")
    assert sorted(extracted) == ["S0", "S1", "S2"]
    files = _embedding_files(tmp_path / "s")
    old_s1 = read_embeddings(files["S1"][0]).embeddings

    def invert(h5):
        h5["img"][...] = 255 - h5["img"][...]

    _rewrite_in_place(root / "TINY" / "patches" / "S1.h5", invert)
    extracted.clear()
    again = _run(root, tmp_path / "s")

    assert not again.cached and again.run_id != first.run_id
    assert extracted == ["S1"]
    now = _embedding_files(tmp_path / "s")
    assert now["S0"] == files["S0"] and now["S2"] == files["S2"]  # same file: inode and mtime
    assert not np.allclose(read_embeddings(now["S1"][0]).embeddings, old_s1)
    assert [f["pcc_mean"] for f in again.folds] != [f["pcc_mean"] for f in first.folds]


def test_changed_counts_change_the_run_id_and_re_embed_nothing(root, tmp_path, extracted):
    first = _run(root, tmp_path / "s")
    fingerprint = open_task("tiny", root).fingerprint
    files = _embedding_files(tmp_path / "s")

    def more_counts(h5):
        h5["X/data"][...] = h5["X/data"][...] + 1

    _rewrite_in_place(root / "TINY" / "adata" / "S0.h5ad", more_counts)
    extracted.clear()
    again = _run(root, tmp_path / "s")

    assert open_task("tiny", root).fingerprint != fingerprint
    assert not again.cached and again.run_id != first.run_id
    assert extracted == [] and _embedding_files(tmp_path / "s") == files


def test_a_warm_fingerprint_reads_no_file_and_a_touched_one_is_read_again(root, reads):
    fingerprint = open_task("tiny", root).fingerprint
    assert sorted(reads) == ["S0.h5", "S0.h5ad", "S1.h5", "S1.h5ad", "S2.h5", "S2.h5ad"]

    reads.clear()
    hashing._memo.clear()  # as a new process would start: only the sqlite cache remembers
    assert open_task("tiny", root).fingerprint == fingerprint
    assert reads == []

    touched = root / "TINY" / "patches" / "S2.h5"
    st = os.stat(touched)
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    hashing._memo.clear()
    assert open_task("tiny", root).fingerprint == fingerprint  # same bytes, same fingerprint
    assert reads == ["S2.h5"]


@pytest.mark.parametrize("where", ["under-a-file", "a-directory", "not-a-database"])
def test_an_unusable_cache_still_gives_the_right_digest(tmp_path, monkeypatch, reads, caplog, where):
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(1000))
    blocker = tmp_path / "blocker"
    if where == "under-a-file":  # its folder cannot be created, not even by root
        blocker.write_text("")
        cache = blocker / "digests.sqlite"
    elif where == "a-directory":
        cache = blocker
        cache.mkdir()
    else:
        cache = blocker
        cache.write_bytes(b"not sqlite " * 100)
    monkeypatch.setenv("STBENCH_DIGEST_CACHE", str(cache))
    with caplog.at_level(logging.DEBUG, logger="stbench"):
        for _ in range(2):
            hashing._memo.clear()
            assert file_digest(data) == hashlib.sha256(data.read_bytes()).hexdigest()
    assert reads == ["data.bin", "data.bin"]  # nothing kept, nothing failed
    assert "digest cache" in caplog.text


def test_a_locked_cache_does_not_fail_or_block_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "_BUSY_S", 0.05)
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * 100)
    cache = tmp_path / "digests.sqlite"
    other = sqlite3.connect(cache, isolation_level=None)  # another process holding a write lock
    other.execute("BEGIN EXCLUSIVE")
    try:
        assert file_digest(data) == hashlib.sha256(b"x" * 100).hexdigest()
    finally:
        other.close()


def test_a_file_changed_while_it_is_hashed_is_not_remembered(tmp_path, monkeypatch, reads):
    data = tmp_path / "data.bin"
    data.write_bytes(b"a" * 100)
    real = hashing._hash_file

    def racing(path):
        digest = real(path)
        data.write_bytes(b"b" * 100)  # a writer finishing while we read
        return digest

    monkeypatch.setattr(hashing, "_hash_file", racing)
    file_digest(data)
    monkeypatch.setattr(hashing, "_hash_file", real)
    hashing._memo.clear()
    assert file_digest(data) == hashlib.sha256(b"b" * 100).hexdigest()


def test_digests_are_the_sha256_of_the_bytes(root, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2 * hashing._BLOCK + 123))  # several blocks and a partial one
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    patches, counts = root / "TINY" / "patches" / "S0.h5", root / "TINY" / "adata" / "S0.h5ad"
    for path in (big, empty, patches, counts):
        assert file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    with PatchFile(patches) as pf:
        assert source_fingerprint(pf) == "sha256:" + hashlib.sha256(patches.read_bytes()).hexdigest()[:16]
