"""Content digests of data files: hashed streaming, remembered between runs.

A file's digest is the sha256 of its bytes, so a patch file's digest covers every pixel and an .h5ad's every
count, with nothing decoded. Rehashing gigabytes on every run would cost more than a cached run, so digests
are kept in an sqlite file keyed by the file's (resolved path, size, mtime_ns, ctime_ns, inode): writing to a
file moves its mtime and ctime, and replacing it gives a new inode. ctime is in the key because mtime can be
set back (``touch -d``, ``rsync -t``, ``cp -p``) and ctime cannot.

The cache is ``$STBENCH_HOME/cache/file-digests.sqlite``, or the file named by ``STBENCH_DIGEST_CACHE``.
Several processes may share it (writers wait on each other up to a busy timeout). It only saves time: where
it cannot be opened or written (read-only home, a filesystem without locks, a corrupt file) files are hashed
without it, which is logged at debug level and never fails a run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from contextlib import closing
from pathlib import Path

from stbench.errors import DataError
from stbench.settings import home

__all__ = ["file_digest", "digest_cache_path", "DIGEST_CACHE_ENV"]

DIGEST_CACHE_ENV = "STBENCH_DIGEST_CACHE"
_BLOCK = 4 << 20  # bytes per read: few system calls, bounded memory
_BUSY_S = 10.0  # how long a writer waits for another process's transaction
_SCHEMA = """CREATE TABLE IF NOT EXISTS digests (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, inode TEXT, sha256 TEXT)"""

log = logging.getLogger("stbench")

_Key = tuple[str, int, int, int, str]  # resolved path, size, mtime_ns, ctime_ns, inode

# Digests already known to this process, under the same key: a run asks for each file more than once
# (task fingerprint, cached-embedding check, extraction), and the sqlite cache may be unusable.
_memo: dict[_Key, str] = {}


def digest_cache_path() -> Path:
    """``$STBENCH_DIGEST_CACHE``, else ``$STBENCH_HOME/cache/file-digests.sqlite``."""
    env = os.environ.get(DIGEST_CACHE_ENV)
    return Path(env).expanduser() if env else home() / "cache" / "file-digests.sqlite"


def _hash_file(path: Path) -> str:
    """sha256 hex of the file's bytes, read in blocks. The only place a file is read (tests spy on it)."""
    h = hashlib.sha256()
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])  # hashlib releases the GIL on large updates
    return h.hexdigest()


def _key(path: Path) -> _Key:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, str(st.st_ino))  # inodes may pass int64


def _connect() -> sqlite3.Connection:
    path = digest_cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=_BUSY_S)
    try:
        con.execute(_SCHEMA)
    except BaseException:
        con.close()
        raise
    return con


def _lookup(key: _Key) -> str | None:
    try:
        with closing(_connect()) as con:
            row = con.execute("SELECT sha256 FROM digests WHERE path=? AND size=? AND mtime_ns=? AND ctime_ns=? "
                              "AND inode=?", key).fetchone()
    except (OSError, sqlite3.Error) as exc:
        log.debug("digest cache %s not readable (%s); hashing without it", digest_cache_path(), exc)
        return None
    return row[0] if row else None


def _remember(key: _Key, digest: str) -> None:
    try:
        with closing(_connect()) as con, con:
            con.execute("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?)", (*key, digest))
    except (OSError, sqlite3.Error) as exc:
        log.debug("digest cache %s not writable (%s); the digest of %s is not kept", digest_cache_path(), exc, key[0])


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 (64 hex) of a file's bytes; read only if the cache has no digest for its current
    (path, size, mtime, ctime, inode). Reads: the file, the digest cache. Writes: one row of the cache."""
    p = Path(path).resolve()
    try:
        key = _key(p)
        if key in _memo:
            return _memo[key]
        digest = _lookup(key)
        if digest is None:
            digest = _hash_file(p)
            if _key(p) != key:  # written to while we read it: the digest matches no version, keep nothing
                log.debug("%s changed while being hashed; its digest is not kept", p)
                return digest
            _remember(key, digest)
    except OSError as exc:
        raise DataError(p, f"cannot read it to fingerprint its content ({exc.strerror or exc})") from exc
    if len(_memo) > 10_000:  # a long-lived worker seeing many tasks: bound the memo
        _memo.clear()
    _memo[key] = digest
    return digest
