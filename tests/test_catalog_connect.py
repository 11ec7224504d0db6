"""Opening the catalog file and migrating it, in-process and without real waiting: DuckDB's own lock errors
are retried every 0.2 s, said once after 1 s, and end in one line after ``lock_timeout``; a file DuckDB
cannot read is one line naming it; read sessions open the file read-only; a migration missing between
applied ones is applied, a failing one is rolled back with its own error; times are UTC.

``duckdb.connect`` (as `Catalog._connect` sees it) fails a given number of times, and the module's ``time``
is a fake clock that records each sleep and advances by a chosen tick, so every boundary is exact."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import duckdb
import pytest
import stbench.stores.catalog as catalog_mod
from stbench.errors import StoreError
from stbench.stores.catalog import MIGRATIONS, SCHEMA_VERSION, Catalog

START = 1000.0  # the fake clock's reading when _connect starts: far from 0, so start + now != now - start
SEE_ALSO = "See also https://duckdb.org/docs/current/connect/concurrency"  # a second line: only the first is said


def lock_line(path) -> str:
    return f'IO Error: Could not set lock on file "{path}": Conflicting lock is held in /usr/bin/duckdb (PID 123)'


class FakeClock:
    """``monotonic`` and ``sleep`` for stbench.stores.catalog: a sleep is recorded and moves the clock by ``tick``
    (exact binary fractions keep comparisons with 1.0 and the timeout exact), or by what was asked."""

    def __init__(self, tick: float | None = None) -> None:
        self.now = START
        self.tick = tick
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds if self.tick is None else self.tick


class FlakyConnect:
    """``duckdb.connect`` that raises ``error(path)`` for the first ``fails`` calls (all calls when None), then
    opens the file; every call's arguments are recorded."""

    def __init__(self, real, error, fails: int | None) -> None:
        self.real, self.error, self.fails = real, error, fails
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.fails is None or len(self.calls) <= self.fails:
            raise self.error(args[0])
        return self.real(*args, **kwargs)


class Rig(SimpleNamespace):
    path: object
    clock: FakeClock
    connect: FlakyConnect
    said: list  # (seconds waited on the fake clock when said, log record)


@pytest.fixture
def rig(tmp_path, monkeypatch):
    """An existing catalog, then: the fake clock in place of the module's ``time``, a warning recorder on the
    "stbench" logger (its own handler: another test's CLI may have stopped propagation to the root logger)."""
    path = tmp_path / "c.duckdb"
    Catalog(path, lock_timeout=10).close()
    r = Rig(path=path, clock=FakeClock(), connect=None, said=[])
    monkeypatch.setattr(catalog_mod, "time", SimpleNamespace(monotonic=r.clock.monotonic, sleep=r.clock.sleep))

    def install(error, fails: int | None, tick: float | None = None) -> FlakyConnect:
        r.clock.tick = tick
        r.connect = FlakyConnect(duckdb.connect, error, fails)
        monkeypatch.setattr(duckdb, "connect", r.connect)
        return r.connect

    r.install = install

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            r.said.append((r.clock.now - START, record))

    logger = logging.getLogger("stbench")
    handler, level = Recorder(logging.WARNING), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        yield r
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _lock_error(path) -> duckdb.Error:
    return duckdb.IOException(f"{lock_line(path)}\n{SEE_ALSO}")


def _not_a_database(path) -> duckdb.Error:
    return duckdb.IOException(f'IO Error: The file "{path}" exists, but it is not a valid DuckDB database file!\n'
                              "second line of detail")


# -- DuckDB's lock: retried, said once after 1 s, one line after the timeout -------------------------------
def test_a_lock_error_is_retried_every_fifth_of_a_second_until_the_file_opens(rig):
    connect = rig.install(_lock_error, fails=3)  # waited 0, 0.2, 0.4 s: under 1 s, nothing said
    Catalog(rig.path, lock_timeout=10).close()
    assert len(connect.calls) == 4
    assert rig.clock.sleeps == [0.2, 0.2, 0.2]
    assert rig.said == []


def test_a_wait_of_1_s_is_said_once_naming_the_catalog_and_the_holder(rig):
    # a tick of 0.5 s: attempts at 0, 0.5, 1.0 (exactly: said now), 1.5, 2.0, 2.5 s fail; the seventh opens
    rig.install(_lock_error, fails=6, tick=0.5)
    with Catalog(rig.path, lock_timeout=10) as cat:
        assert cat.schema_version == SCHEMA_VERSION
    assert rig.clock.sleeps == [0.2] * 6
    assert len(rig.said) == 1, [rec.getMessage() for _, rec in rig.said]
    waited, record = rig.said[0]
    assert waited == 1.0
    assert record.levelno == logging.WARNING
    assert record.getMessage() == f"waiting for the catalog {rig.path}: {lock_line(rig.path)}"


def test_a_wait_under_1_s_is_not_said(rig):
    rig.install(_lock_error, fails=2, tick=0.5)  # attempts at 0 and 0.5 s fail, the one at 1.0 s opens
    Catalog(rig.path, lock_timeout=10).close()
    assert rig.clock.sleeps == [0.2, 0.2]
    assert rig.said == []


def test_a_lock_held_until_the_timeout_is_one_line_naming_the_catalog_and_the_option(rig):
    connect = rig.install(_lock_error, fails=None, tick=0.5)
    with pytest.raises(StoreError) as err:
        Catalog(rig.path, lock_timeout=2.0)
    # the attempt at exactly 2.0 s is the last: attempts at 0, 0.5, 1.0, 1.5 and 2.0 s, a sleep between each
    assert str(err.value) == (f"the catalog {rig.path} is still busy after 2 s: {lock_line(rig.path)}; "
                              "try again later or wait longer with --lock-timeout SECONDS")
    assert len(connect.calls) == 5 and rig.clock.sleeps == [0.2] * 4
    assert isinstance(err.value.__cause__, duckdb.IOException)
    assert len(rig.said) == 1 and rig.said[0][0] == 1.0


def test_a_zero_timeout_gives_up_at_the_first_lock_error(rig):
    connect = rig.install(_lock_error, fails=None)
    with pytest.raises(StoreError, match=r"still busy after 0 s: .*--lock-timeout SECONDS$"):
        Catalog(rig.path, lock_timeout=0)
    assert len(connect.calls) == 1 and rig.clock.sleeps == [] and rig.said == []


# -- a file DuckDB cannot read ----------------------------------------------------------------------------
def test_a_file_duckdb_cannot_read_is_one_line_naming_it_without_retrying(rig):
    connect = rig.install(_not_a_database, fails=None)
    with pytest.raises(StoreError) as err:
        Catalog(rig.path, lock_timeout=10)
    assert str(err.value) == (
        f'{rig.path}: not a readable stbench catalog (IO Error: The file "{rig.path}" exists, but it is not a valid '
        "DuckDB database file!); restore it from a copy, or move it aside and rerun (embedding files are reused, "
        "results are recomputed)")
    assert isinstance(err.value.__cause__, duckdb.IOException)
    assert len(connect.calls) == 1 and rig.clock.sleeps == [] and rig.said == []


def test_a_real_file_that_is_not_a_database_is_one_line_naming_it(tmp_path):
    path = tmp_path / "c.duckdb"
    path.write_bytes(b"not a database " * 1000)
    with pytest.raises(StoreError) as err:
        Catalog(path, lock_timeout=1)
    assert str(err.value).startswith(f"{path}: not a readable stbench catalog (IO Error: ")
    assert "\n" not in str(err.value)


# -- read sessions open the file read-only --------------------------------------------------------------
def test_read_sessions_open_the_file_read_only_and_write_sessions_read_write(rig):
    connect = rig.install(_lock_error, fails=0)  # never fails: records how the file is opened
    with Catalog(rig.path, lock_timeout=10) as cat:
        with cat.session():
            pass
        with cat.session(write=True):
            pass
    Catalog(rig.path, read_only=True, lock_timeout=10).close()
    assert [kwargs for _, kwargs in connect.calls] == [{"read_only": False}, {"read_only": True},
                                                       {"read_only": False}, {"read_only": True}]
    assert [args for args, _ in connect.calls] == [(str(rig.path),)] * 4


def test_duckdb_itself_refuses_writes_in_a_read_session(tmp_path):
    path = tmp_path / "c.duckdb"
    Catalog(path, lock_timeout=1).close()
    with Catalog(path, read_only=True, lock_timeout=1) as ro, pytest.raises(duckdb.Error, match="read-only"):
        ro.con.execute("CREATE TABLE t (a INTEGER)")


# -- migrations ------------------------------------------------------------------------------------------
def _forget_migration(path, name: str, *drop: str) -> None:
    con = duckdb.connect(str(path))
    try:
        for table in drop:
            con.execute(f"DROP TABLE {table}")
        con.execute("DELETE FROM _stbench_migrations WHERE name = ?", [name])
    finally:
        con.close()


def _applied(path) -> list[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return sorted(r[0] for r in con.execute("SELECT name FROM _stbench_migrations").fetchall())
    finally:
        con.close()


def test_the_migrations_table_is_spelled_as_documented(tmp_path):
    """DuckDB looks names up case-insensitively but keeps them as created: the duckdb shell's SHOW TABLES and
    DESCRIBE show a catalog's bookkeeping table under the names the module docstring gives."""
    path = tmp_path / "c.duckdb"
    Catalog(path, lock_timeout=1).close()
    con = duckdb.connect(str(path), read_only=True)
    try:
        columns = con.execute("SELECT table_name, column_name, data_type FROM information_schema.columns "
                              "WHERE lower(table_name) = '_stbench_migrations' ORDER BY ordinal_position").fetchall()
    finally:
        con.close()
    assert columns == [("_stbench_migrations", "name", "VARCHAR"), ("_stbench_migrations", "applied_at", "TIMESTAMP")]


def test_a_migration_missing_between_applied_ones_is_applied(tmp_path):
    path = tmp_path / "c.duckdb"
    Catalog(path, lock_timeout=1).close()
    _forget_migration(path, "m003_spot_predictions", "spot_predictions")  # m001, m002 before it, m004... after
    assert "m003_spot_predictions" not in _applied(path)
    with Catalog(path, lock_timeout=1) as cat:
        assert cat.schema_version == SCHEMA_VERSION
        assert cat.con.execute("SELECT count(*) FROM spot_predictions").fetchone() == (0,)
    assert _applied(path) == sorted(n for n, _ in MIGRATIONS)


def test_a_failing_migration_is_rolled_back_and_its_own_error_comes_out(tmp_path):
    path = tmp_path / "c.duckdb"
    Catalog(path, lock_timeout=1).close()
    _forget_migration(path, "m003_spot_predictions")  # its table is still there: CREATE TABLE fails
    with pytest.raises(duckdb.CatalogException, match='"spot_predictions" already exists'):
        Catalog(path, lock_timeout=1)
    assert _applied(path) == sorted(n for n, _ in MIGRATIONS if n != "m003_spot_predictions")


# -- times -----------------------------------------------------------------------------------------------
def test_now_is_naive_utc_whatever_the_local_zone(tmp_path, monkeypatch):
    try:
        with monkeypatch.context() as m:
            m.setenv("TZ", "XYZ-05:45")  # POSIX: 5 h 45 min east of UTC (no zone database needed)
            time.tzset()
            utc = datetime.now(UTC).replace(tzinfo=None)
            assert abs(datetime.now() - utc - timedelta(hours=5, minutes=45)) < timedelta(seconds=30)  # in effect
            now = catalog_mod._now()
            Catalog(tmp_path / "c.duckdb", lock_timeout=1).close()
    finally:
        time.tzset()
    assert now.tzinfo is None and abs(now - utc) < timedelta(seconds=30)
    con = duckdb.connect(str(tmp_path / "c.duckdb"), read_only=True)
    try:
        applied = [r[0] for r in con.execute("SELECT applied_at FROM _stbench_migrations").fetchall()]
    finally:
        con.close()
    assert len(applied) == SCHEMA_VERSION
    assert all(abs(a - utc) < timedelta(seconds=30) for a in applied), (applied, utc)


def test_a_worker_process_may_not_open_the_catalog(tmp_path, monkeypatch):
    from stbench.stores.catalog import NO_CATALOG_ENV, Catalog

    monkeypatch.setenv(NO_CATALOG_ENV, "1")
    with pytest.raises(StoreError) as err:
        Catalog(tmp_path / "catalog.duckdb")
    assert str(err.value) == (f"this process may not open the catalog {tmp_path / 'catalog.duckdb'} ({NO_CATALOG_ENV} "
                              "is set: it is a worker, and only the driver writes the catalog)")
    assert not (tmp_path / "catalog.duckdb").exists()


def test_a_new_catalog_creates_its_missing_parent_folders(tmp_path):
    from stbench.stores.catalog import Catalog

    path = tmp_path / "a" / "b" / "catalog.duckdb"
    cat = Catalog(path)
    try:
        assert path.parent.is_dir()
    finally:
        cat.close()
