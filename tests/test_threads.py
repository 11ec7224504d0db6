"""Threads: the CPUs this process may use (affinity, cgroup v1/v2 quota, read from fake files), and `bench run
--threads` / STBENCH_THREADS applied to torch and BLAS for the run and shown in its output."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from threadpoolctl import threadpool_info

from stbench.cli import cli
from stbench.encoders import encoders
from stbench.errors import StbenchError
from stbench.reducers import Reducer, TrainFold, reducers
from stbench.threads import available_cpus, busy_hint, cgroup_cpu_quota, resolve_threads, use_threads
from tests._tiny import make_tiny_task, tiny_encoder


def _cgroup(tmp_path, files: dict[str, str], proc: str):
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    root.mkdir(exist_ok=True)
    (tmp_path / "proc-cgroup").write_text(proc)
    return root, tmp_path / "proc-cgroup"


@pytest.mark.parametrize(("files", "proc", "quota"), [
    ({"cpu.max": "150000 100000\n"}, "0::/\n", 1.5),  # v2 in a container: its own cgroup at the root
    ({"cpu.max": "max 100000\n"}, "0::/\n", None),
    ({"a/cpu.max": "200000 100000", "a/b/cpu.max": "max 100000"}, "0::/a/b\n", 2.0),  # a parent's limit applies
    ({"a/cpu.max": "400000 100000", "a/b/cpu.max": "100000 100000"}, "0::/a/b\n", 1.0),  # the tightest wins
    ({"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, "4:cpu,cpuacct:/docker/abc\n", 3.0),  # v1
    ({"cpu,cpuacct/cpu.cfs_quota_us": "50000", "cpu,cpuacct/cpu.cfs_period_us": "100000"}, "2:cpu,cpuacct:/\n", 0.5),
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, "4:cpu,cpuacct:/\n", None),  # v1, no limit
    ({}, "", None),
])
def test_the_cgroup_cpu_quota_is_read_from_v1_and_v2_files(tmp_path, files, proc, quota):
    root, proc_file = _cgroup(tmp_path, files, proc)
    assert cgroup_cpu_quota(root, proc_file) == quota


@pytest.mark.parametrize(("quota", "affinity", "cpus"), [
    ("150000 100000", 8, 1),  # 1.5 CPUs of quota: one thread, not two fighting over them
    ("800000 100000", 2, 2),  # the affinity mask is tighter
    ("50000 100000", 4, 1),  # at least one
    ("max 100000", 3, 3),
])
def test_available_cpus_is_the_affinity_capped_by_the_quota(tmp_path, quota, affinity, cpus):
    root, proc_file = _cgroup(tmp_path, {"cpu.max": quota}, "0::/\n")
    n, why = available_cpus(root=root, proc_cgroup=proc_file, affinity=affinity)
    assert n == cpus and f"affinity {affinity}" in why


def test_requested_threads_win_and_must_be_positive():
    assert resolve_threads(3) == (3, "--threads")
    assert resolve_threads(2, source="STBENCH_THREADS") == (2, "STBENCH_THREADS")
    with pytest.raises(StbenchError, match="--threads 0: expected a number of threads >= 1"):
        resolve_threads(0)


def test_use_threads_sets_torch_and_blas_then_restores_them():
    before = torch.get_num_threads()
    with use_threads(1):
        assert torch.get_num_threads() == 1
        assert {i["num_threads"] for i in threadpool_info()} == {1}
    assert torch.get_num_threads() == before


SEEN: list[tuple[int, set[int]]] = []


class ThreadSpy(Reducer):
    """The identity, recording torch's and the BLAS libraries' thread counts while it is fitted."""

    name = "test-thread-spy"

    def fit(self, train: TrainFold):
        SEEN.append((torch.get_num_threads(), {i["num_threads"] for i in threadpool_info()}))
        return self

    def transform(self, X):
        return np.asarray(X, np.float32)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    if "test-tiny-cnn" not in encoders:
        encoders.register(tiny_encoder(), origin="tests")
    if "test-thread-spy" not in reducers:
        reducers.register(ThreadSpy, origin="tests")
    path = tmp_path_factory.mktemp("threads") / "data"
    make_tiny_task(path)
    return path


@pytest.mark.parametrize(("args", "env", "shown"), [
    (["--threads", "1"], {}, "threads: 1 (--threads)"),
    ([], {"STBENCH_THREADS": "1"}, "threads: 1 (STBENCH_THREADS)"),
])
def test_run_threads_apply_to_torch_and_blas_and_appear_in_the_output(root, tmp_path, args, env, shown):
    SEEN.clear()
    before = torch.get_num_threads()
    result = CliRunner().invoke(cli, ["run", "--task", "tiny", "--encoder", "test-tiny-cnn", "--reducer",
                                      "test-thread-spy", "--data-root", str(root), "--store", str(tmp_path / "store"),
                                      "--no-progress", "--device", "cpu", *args], env=env)
    assert result.exit_code == 0, result.output
    assert shown in result.output
    assert SEEN and all(t == 1 and b == {1} for t, b in SEEN), SEEN  # every fold's fit ran on one thread
    assert torch.get_num_threads() == before  # the process's own setting comes back after the run


def test_run_threads_default_to_the_cpus_this_process_may_use(root, tmp_path):
    result = CliRunner().invoke(cli, ["run", "--task", "tiny", "--encoder", "test-tiny-cnn", "--reducer", "identity",
                                      "--data-root", str(root), "--store", str(tmp_path / "store"), "--no-progress"])
    assert result.exit_code == 0, result.output
    n, _ = available_cpus()
    assert f"threads: {n} (CPUs this process may use: affinity" in result.output


def test_bad_threads_are_a_one_line_error_before_any_work(root, tmp_path):
    result = CliRunner().invoke(cli, ["run", "--task", "tiny", "--encoder", "test-tiny-cnn", "--data-root", str(root),
                                      "--store", str(tmp_path / "store"), "--threads", "0"])
    assert result.exit_code != 0 and result.output.strip() == "Error: --threads 0: expected a number of threads >= 1"
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(("threads", "requested", "load", "hint"), [
    (2, False, 5.6, True),  # the measured case: 2 default threads, other jobs keep the load at 5.6
    (2, False, 2.9, False),  # load below threads + 1: the run's own threads are the load
    (2, False, 3.0, True),
    (2, True, 5.6, False),  # the user chose: no advice
    (1, False, 9.0, False),  # one thread cannot spin-wait on another
])
def test_a_busy_machine_gets_a_threads_hint_only_under_the_default(threads, requested, load, hint):
    line = busy_hint(threads, requested=requested, load=load)
    assert (line is not None) == hint
    if hint:
        assert line.startswith(f"load average {load:.1f} on {threads} CPUs") and "--threads 1" in line


@pytest.mark.parametrize(("args", "shown"), [([], True), (["--threads", "2"], False)])
def test_run_on_a_busy_machine_prints_the_hint_and_keeps_the_default(root, tmp_path, monkeypatch, args, shown):
    import stbench.threads as threads_mod

    monkeypatch.setattr(threads_mod, "available_cpus", lambda: (2, "CPUs this process may use: affinity 2"))
    monkeypatch.setattr(threads_mod.os, "getloadavg", lambda: (5.6, 5.0, 4.0))
    result = CliRunner().invoke(cli, ["run", "--task", "tiny", "--encoder", "test-tiny-cnn", "--reducer", "identity",
                                      "--data-root", str(root), "--store", str(tmp_path / "store"), "--no-progress",
                                      "--device", "cpu", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "threads: 2 (" in result.output  # the default is not lowered: numbers do not depend on the load
    assert ("note: load average 5.6 on 2 CPUs" in result.output) == shown
