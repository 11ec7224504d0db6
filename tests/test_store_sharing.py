"""A store several processes share and that can be trusted: real concurrent processes, readers during a run,
a busy catalog, a copied store, a run from another folder, --force that keeps the old result until the new
one is whole, a corrupt catalog, and `bench store verify [--repair]`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from stbench import runner, tempfiles
from stbench.cli import cli
from stbench.encoders import Encoder, encoders
from stbench.protocol import Protocol
from stbench.runner import ReducerChoice, run_task
from stbench.stores import Store
from stbench.stores.locks import FileLock
from stbench.tasks import PatchFile, open_task
from tests._kill import killed_at, needs_sigkill
from tests._tiny import make_tiny_task, tiny_encoder

REPO = Path(__file__).resolve().parents[1]
GRID = ("--task", "tiny", "--encoder", "test-tiny-cnn", "--reducer", "identity,pca", "--no-progress", "--device", "cpu")


@pytest.fixture(scope="module", autouse=True)
def _tiny_encoder():
    if "test-tiny-cnn" not in encoders:
        encoders.register(tiny_encoder(), origin="tests")


@pytest.fixture
def root(tmp_path):
    make_tiny_task(tmp_path / "data")
    return tmp_path / "data"


def _child(*args: str, env: dict | None = None, cwd: Path = REPO) -> subprocess.Popen:
    """`bench ARGS` in a fresh process (tests/_bench_child.py registers the tiny encoder)."""
    return subprocess.Popen([sys.executable, "-m", "tests._bench_child", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", **(env or {})})


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _bench(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def _numbers(store: Path) -> list[tuple]:
    with Store(store, read_only=True) as st:
        return st.catalog.rows("SELECT r.reducer, r.alpha_rule, g.fold, g.gene, g.pcc, g.mse FROM gene_results g "
                               "JOIN runs r USING (run_id) ORDER BY 1, 2, 3, 4")


def test_two_processes_on_one_store_both_complete_with_the_sequential_numbers_and_embed_once(root, tmp_path):
    shared, alone, log = tmp_path / "shared", tmp_path / "alone", tmp_path / "extractions.log"
    args = ("run", "--data-root", str(root), "--store", str(shared), *GRID, "--alpha", "hest,cv")
    env = {"STBENCH_TEST_EXTRACT_LOG": str(log), "STBENCH_TEST_SLOW_FIT": "0.3"}
    a, b = _child(*args, env=env), _child(*args, env=env)
    (rc_a, out_a), (rc_b, out_b) = _finish(a), _finish(b)
    assert (rc_a, rc_b) == (0, 0), out_a + out_b
    assert "Traceback" not in out_a + out_b and "FAILED" not in out_a + out_b
    # each sample embedded by one process only; the other read the file back
    assert Counter(line.split()[1] for line in log.read_text().splitlines()) == {"S0": 1, "S1": 1, "S2": 1}
    rc, out = _finish(_child("run", "--data-root", str(root), "--store", str(alone), *GRID, "--alpha", "hest,cv"))
    assert rc == 0, out
    mine, reference = _numbers(shared), _numbers(alone)
    assert len(mine) == 4 * 3 * 20 and mine == reference
    with Store(shared, read_only=True) as st:
        assert st.catalog.inconsistencies() == []
        assert {s for (s,) in st.catalog.rows("SELECT status FROM runs")} == {"complete"}


def test_readers_work_while_a_run_computes(root, tmp_path):
    store, pause = tmp_path / "store", tmp_path / "go"
    assert _bench("run", "--data-root", str(root), "--store", str(store), *GRID).exit_code == 0
    slow = _child("run", "--data-root", str(root), "--store", str(store), *GRID, "--alpha", "cv",
                  env={"STBENCH_TEST_PAUSE_FIT": str(pause)})
    try:
        deadline = time.monotonic() + 120
        while not Path(f"{pause}.reached").exists():  # the run is inside its first fit, its cells started
            assert slow.poll() is None and time.monotonic() < deadline, "the run ended before it could be read"
            time.sleep(0.05)
        results = _bench("results", "--store", str(store), "--format", "csv")
        assert results.exit_code == 0 and results.output.count("test-tiny-cnn") == 2, results.output
        assert _bench("results", "--store", str(store), "--all", "--format", "csv").output.count("running") >= 1
        verify = _bench("store", "verify", "--store", str(store))
        assert verify.exit_code == 0, verify.output
        assert slow.poll() is None  # all of that happened during the run
    finally:
        pause.touch()
        rc, out = _finish(slow)
    assert rc == 0, out


def test_a_busy_catalog_is_waited_for_and_then_a_one_line_error_names_the_holder(root, tmp_path):
    store = tmp_path / "store"
    assert _bench("run", "--data-root", str(root), "--store", str(store), *GRID).exit_code == 0
    lock = FileLock(store / "catalog.duckdb.lock", what="test")
    lock.acquire()
    try:
        start = time.monotonic()
        rc, out = _finish(_child("results", "--store", str(store), "--lock-timeout", "1.5"))
        waited = time.monotonic() - start
        assert rc == 1 and "Traceback" not in out, out
        assert "waiting for the catalog" in out and f"PID {os.getpid()}" in out, out
        assert "still busy after" in out and "--lock-timeout" in out, out
        assert waited >= 1.5
        log = tmp_path / "waiting.log"
        with log.open("w") as fh:
            waiting = subprocess.Popen([sys.executable, "-m", "tests._bench_child", "results", "--store", str(store),
                                        "--lock-timeout", "60"], cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                                       env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"})
        deadline = time.monotonic() + 60
        while "waiting for the catalog" not in log.read_text():  # it waits, and says so ...
            assert waiting.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        lock.release()
    assert waiting.wait(timeout=60) == 0, log.read_text()  # ... and goes on once the holder is done
    assert "test-tiny-cnn" in log.read_text()


def _flip_every_file(store: Path) -> int:
    n = 0
    for path in (store / "embeddings").rglob("*.h5"):
        with h5py.File(path, "r+") as h5:
            h5["embeddings"][...] = -h5["embeddings"][()]
        n += 1
    return n


def test_a_copied_store_reads_its_own_files_never_the_originals(root, tmp_path):
    original, copy, fresh = tmp_path / "S", tmp_path / "S2", tmp_path / "R"
    assert _bench("run", "--data-root", str(root), "--store", str(original), *GRID).exit_code == 0
    shutil.copytree(original, copy)
    assert _flip_every_file(original) == 3  # the original's files damaged after the copy
    cv = ("--alpha", "cv")
    again = _bench("run", "--data-root", str(root), "--store", str(copy), *GRID, *cv)  # reads embeddings again
    assert again.exit_code == 0 and "checksum" not in again.output, again.output
    assert _bench("run", "--data-root", str(root), "--store", str(fresh), *GRID, *cv).exit_code == 0
    assert [r for r in _numbers(copy) if r[1] == "cv"] == _numbers(fresh)
    with Store(copy, read_only=True) as st:
        paths = [p for (p,) in st.catalog.rows("SELECT path FROM embeddings")]
    assert all(not Path(p).is_absolute() and (copy / p).is_file() for p in paths), paths


def test_a_stored_run_from_another_folder_is_read_back_without_loading_a_model_or_patches(root, tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert _bench("run", "--data-root", str(root), "--store", "store", *GRID).exit_code == 0
    monkeypatch.chdir(tmp_path / "b")
    monkeypatch.setattr(Encoder, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.setattr(PatchFile, "iter_chunks", lambda *a, **k: pytest.fail("patches were read"))
    again = _bench("run", "--data-root", str(root), "--store", "../a/store", *GRID)
    assert again.exit_code == 0, again.output
    assert again.output.count("cached") >= 2 and not (tmp_path / "b" / "store").exists()


def _fold_rows(store: Path) -> list[tuple]:
    with Store(store, read_only=True) as st:
        return st.catalog.rows("SELECT run_id, fold, pcc_mean, mse_mean, n_genes FROM fold_results ORDER BY 1, 2")


def test_force_keeps_the_previous_result_when_the_recomputation_fails(root, tmp_path, monkeypatch):
    store = tmp_path / "store"
    task = open_task("tiny", root)
    with Store(store) as st:
        [first] = run_task(task, "test-tiny-cnn", [ReducerChoice("pca")], Protocol.from_options(), st, device="cpu")
    before = _fold_rows(store)
    real, calls = runner._evaluate_fold, []

    def failing_on_fold_1(reducer, protocol, genes, data, fold, *a, **kw):
        calls.append(fold.index)
        if fold.index == 1:
            raise RuntimeError("node lost")
        return real(reducer, protocol, genes, data, fold, *a, **kw)

    monkeypatch.setattr(runner, "_evaluate_fold", failing_on_fold_1)
    with Store(store) as st, pytest.raises(RuntimeError, match="node lost"):
        run_task(task, "test-tiny-cnn", [ReducerChoice("pca")], Protocol.from_options(), st, device="cpu", force=True)
    assert calls == [0, 1]
    assert _fold_rows(store) == before  # every fold of the previous result, untouched
    with Store(store, read_only=True) as st:
        assert st.catalog.run_status(first.run_id) == "complete"
        old_finished = st.catalog.rows("SELECT finished_at FROM runs")[0][0]
    monkeypatch.setattr(runner, "_evaluate_fold", real)
    with Store(store) as st:
        [again] = run_task(task, "test-tiny-cnn", [ReducerChoice("pca")], Protocol.from_options(), st, device="cpu",
                           force=True)
        assert not again.cached and st.catalog.rows("SELECT finished_at FROM runs")[0][0] > old_finished
        assert st.catalog.inconsistencies() == []
    assert _fold_rows(store) == before  # the same inputs give the same numbers, now recomputed


@needs_sigkill
def test_a_force_recomputation_killed_midway_leaves_the_previous_result_whole(root, tmp_path):
    store = tmp_path / "store"
    assert _bench("run", "--data-root", str(root), "--store", str(store), *GRID).exit_code == 0
    before = _fold_rows(store)
    killed_at(tmp_path, f"""
        import sys
        from stbench import runner, tempfiles
        from stbench.encoders import encoders
        from tests._tiny import tiny_encoder
        encoders.register(tiny_encoder(), origin="tests")
        block_at(runner, "fit_fold", after=4)  # identity's 3 folds recomputed, pca's second fold under way
        from stbench.cli import cli
        cli.main(args=["run", "--data-root", {str(root)!r}, "--store", {str(store)!r}, *{GRID!r}, "--force"])
    """)
    assert _fold_rows(store) == before
    with Store(store, read_only=True) as st:
        assert {s for (s,) in st.catalog.rows("SELECT status FROM runs")} == {"complete"}
    result = _bench("run", "--data-root", str(root), "--store", str(store), *GRID)
    assert result.exit_code == 0 and result.output.count("cached") >= 2


def test_a_corrupt_catalog_is_a_one_line_error_naming_it(root, tmp_path):
    store = tmp_path / "store"
    assert _bench("run", "--data-root", str(root), "--store", str(store), *GRID).exit_code == 0
    cat = store / "catalog.duckdb"
    cat.write_bytes(b"\0garbage" * 4096)
    for args in (("results", "--store", str(store)), ("run", "--data-root", str(root), "--store", str(store), *GRID)):
        result = _bench(*args)
        assert result.exit_code != 0 and result.exception is None or isinstance(result.exception, SystemExit)
        assert "Traceback" not in result.output and f"{cat}: not a readable stbench catalog" in result.output, result.output
        assert "move it aside and rerun" in result.output


def test_verify_finds_every_kind_of_damage_and_repair_makes_the_next_run_whole(root, tmp_path):
    store = tmp_path / "store"
    args = ("run", "--data-root", str(root), "--store", str(store), *GRID)
    assert _bench(*args).exit_code == 0
    clean = _bench("store", "verify", "--store", str(store))
    assert clean.exit_code == 0 and "no problems" in clean.output, clean.output
    before = _numbers(store)
    files = {p.stem: p for p in (store / "embeddings").rglob("*.h5")}
    with h5py.File(files["S0"], "r+") as h5:  # one low bit of one float
        row = h5["embeddings"][0]
        row.view(np.uint32)[1] ^= 1
        h5["embeddings"][0] = row
    files["S1"].unlink()
    shutil.copy(files["S2"], files["S2"].with_name("stray.h5"))
    gone = subprocess.Popen(["true"])
    gone.wait()  # a writer on this host whose process has ended
    (files["S2"].parent / f".S2.h5.tmp-{tempfiles._host()}-{gone.pid}-1-deadbeef").write_bytes(b"half")
    with Store(store) as st:
        st.catalog.con.execute("UPDATE fold_results SET pcc_mean = pcc_mean + 0.1 WHERE fold = 2")
    found = _bench("store", "verify", "--store", str(store), "--format", "json")
    assert found.exit_code == 1, found.output
    import json

    kinds = Counter(f["kind"] for f in json.loads(found.output)["findings"])
    assert kinds == {"broken embedding": 2, "unregistered embedding": 1, "broken result": 2, "debris": 1}, kinds
    repaired = _bench("store", "verify", "--store", str(store), "--repair")
    assert repaired.exit_code == 0 and "all repaired" in repaired.output, repaired.output
    assert _bench("store", "verify", "--store", str(store)).exit_code == 0
    assert _bench(*args).exit_code == 0  # recomputes what was removed
    assert _numbers(store) == before


def test_verify_repair_registers_intact_files_the_catalog_lost(root, tmp_path, monkeypatch):
    store = tmp_path / "store"
    args = ("run", "--data-root", str(root), "--store", str(store), *GRID)
    assert _bench(*args).exit_code == 0
    with Store(store) as st:
        st.catalog.con.execute("DELETE FROM embeddings")  # e.g. a catalog restored from an older copy
        st.catalog.con.execute("DELETE FROM runs")
    repaired = _bench("store", "verify", "--store", str(store), "--repair")
    assert repaired.exit_code == 0 and repaired.output.count("registered again") == 3, repaired.output
    monkeypatch.setattr(Encoder, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    assert _bench(*args).exit_code == 0  # results recomputed from the re-registered embeddings


def test_verify_finds_missing_and_orphan_prediction_files(root, tmp_path):
    store = tmp_path / "store"
    args = ("run", "--data-root", str(root), "--store", str(store), *GRID)
    assert _bench(*args).exit_code == 0
    files = sorted((store / "predictions").rglob("*.parquet"))
    assert len(files) == 2 * 3  # one per fold of each result set
    files[0].unlink()
    shutil.copy(files[1], files[1].with_name("fold9-stray.parquet"))
    import json

    found = json.loads(_bench("store", "verify", "--store", str(store), "--format", "json").output)["findings"]
    assert Counter(f["kind"] for f in found) == {"broken result": 1, "orphan file": 1}, found
    assert "spot predictions" in next(f["detail"] for f in found if f["kind"] == "broken result")
    assert _bench("store", "verify", "--store", str(store), "--repair").exit_code == 0
    assert not files[1].with_name("fold9-stray.parquet").exists()
    assert _bench(*args).exit_code == 0 and len(list((store / "predictions").rglob("*.parquet"))) == 6
