"""BP-Booster gene programs (stbench.reducers.bpbooster.programs): gene sets, HVGs, SVGs, pathway profiles."""

from __future__ import annotations

import functools
import http.server
import io
import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from stbench.errors import DataError, FetchError, ProtocolError
from stbench.reducers.bpbooster import programs
from stbench.reducers.bpbooster.programs import (
    HALLMARK_URL_ENV,
    Programs,
    SVGSelection,
    match_pathways,
    mean_pairwise_correlation,
    program_profiles,
    read_gmt,
    resolve_gene_sets,
    select_hvgs,
    select_svgs,
)
from stbench.tempfiles import parse_temp_name
from tests.conftest import require_shared, shared_data_dir

HALLMARK_NAME = "h.all.v7.0.symbols.gmt"
LOCAL_HINT = "pass --gene-sets PATH to a local GMT file (e.g. MSigDB h.all.*.symbols.gmt)"
NOT_GMT = "is not GMT (need name<TAB>description<TAB>gene...); fix the line or use another --gene-sets file"


# ----------------------------------------------------------------------------------------------- read_gmt


def test_read_gmt_shared_hallmark() -> None:
    sets = read_gmt(require_shared("genesets", HALLMARK_NAME))
    assert len(sets) == 50
    assert next(iter(sets)) == "HALLMARK_TNFA_SIGNALING_VIA_NFKB"  # file order kept
    assert "JUNB" in sets["HALLMARK_TNFA_SIGNALING_VIA_NFKB"]
    assert "GREB1" in sets["HALLMARK_ESTROGEN_RESPONSE_EARLY"]
    assert all(len(genes) == len(set(genes)) > 0 for genes in sets.values())


def test_read_gmt_dedups_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "ok.gmt"
    path.write_text("S1\tdesc\tA\tB\tA\t\n\n   \nS2\thttp://x\tC\r\n")
    assert read_gmt(path) == {"S1": ["A", "B"], "S2": ["C"]}


def test_read_gmt_keeps_a_set_with_an_empty_description(tmp_path: Path) -> None:
    path = tmp_path / "nodesc.gmt"
    path.write_text("S1\t\tA\tB\n")
    assert read_gmt(path) == {"S1": ["A", "B"]}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("S1\tdesc\tA\nS2\tonly-two-fields\n", f"line 2 {NOT_GMT}"),
        ("S1\tdesc\t\t\n", f"line 1 {NOT_GMT}"),  # three fields but no gene
        ("S1\tdesc\tA\n\tdesc\tB\n", f"line 2 {NOT_GMT}"),  # a set without a name
        ("\n\n", "no gene sets in the file; pass --gene-sets PATH to a non-empty GMT file"),
        ("S1\td\tA\nS1\td\tB\n", "line 2: gene set 'S1' appears twice; keep one of them"),
    ],
)
def test_read_gmt_malformed(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.gmt"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_gmt(path)
    assert info.value.problem == problem
    assert info.value.path == path  # the message names the file


def test_read_gmt_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        read_gmt(tmp_path / "nope.gmt")
    assert info.value.path == tmp_path / "nope.gmt"
    assert info.value.problem == "gene-set file not found; pass --gene-sets PATH to an existing GMT file"


def test_read_gmt_not_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.gmt"
    path.write_bytes("S1\td\tG\u00c8NE\n".encode("latin-1"))
    with pytest.raises(DataError) as info:
        read_gmt(path)
    assert info.value.path == path
    assert info.value.problem.startswith("cannot read as UTF-8 text (")
    assert info.value.problem.endswith("); pass a GMT gene-set file")


def test_read_gmt_reads_utf8_whatever_the_locale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "utf8.gmt"
    path.write_text("WNT_\u03b2_CATENIN\tdesc\tCTNNB1\n", encoding="utf-8")
    # a machine whose locale encoding is not UTF-8 (Windows: cp1252) must read the same names
    monkeypatch.setattr(io, "text_encoding", lambda encoding, stacklevel=2: encoding or "cp1252")
    assert read_gmt(path) == {"WNT_\u03b2_CATENIN": ["CTNNB1"]}


# -------------------------------------------------------------------------------------- resolve_gene_sets


@pytest.fixture
def hallmark_bytes() -> bytes:
    """The shared Hallmark GMT, or a synthetic 50-set GMT when the shared data is absent."""
    path = shared_data_dir() / "genesets" / HALLMARK_NAME
    if path.is_file():
        return path.read_bytes()
    return "".join(f"HALLMARK_{i}\tdesc\tG{i}\tG{i + 1}\n" for i in range(50)).encode()


class _Server:
    """Serves ``root``; records each request's path and User-Agent, runs ``on_get`` before answering, and
    holds ``/stall`` without a reply until stopped."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        self.agents: list[str | None] = []
        self.on_get: Callable[[], None] | None = None
        self.unstall = threading.Event()
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:
                outer.requests.append(self.path)
                outer.agents.append(self.headers.get("User-Agent"))
                if outer.on_get is not None:
                    outer.on_get()
                if self.path == "/stall":
                    outer.unstall.wait(10)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
        )
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.running = True

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def stop(self) -> None:
        self.unstall.set()
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(5)
            self.running = False


@pytest.fixture
def gmt_server(tmp_path: Path, hallmark_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    """A real HTTP server on 127.0.0.1 serving the Hallmark GMT (plus a non-GMT page); downloads allowed."""
    root = tmp_path / "srv"
    root.mkdir()
    (root / HALLMARK_NAME).write_bytes(hallmark_bytes)
    (root / "login.gmt").write_text("<html><body>Please log in</body></html>\n")
    for var in ("STBENCH_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    server = _Server(root)
    yield server
    server.stop()


def test_resolve_hallmark_downloads_once_then_uses_cache(
    gmt_server: _Server,
    tmp_path: Path,
    hallmark_bytes: bytes,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = gmt_server.url(HALLMARK_NAME)
    monkeypatch.setenv(HALLMARK_URL_ENV, url)
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="stbench"):
        path = resolve_gene_sets("hallmark", cache_dir=cache)
    assert path == cache / HALLMARK_NAME
    assert path.read_bytes() == hallmark_bytes
    assert len(read_gmt(path)) == 50
    assert gmt_server.requests == [f"/{HALLMARK_NAME}"]
    assert gmt_server.agents == ["stbench"]  # servers that refuse Python's default agent still answer
    assert sorted(p.name for p in cache.iterdir()) == [HALLMARK_NAME]  # no temporary file left
    assert [r.getMessage() for r in caplog.records] == [f"gene sets: downloaded {url} to {path}"]

    gmt_server.stop()  # a second call that tried the network would now fail
    assert resolve_gene_sets("HallMark", cache_dir=cache) == path
    assert len(gmt_server.requests) == 1


def test_resolve_hallmark_refused_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{HALLMARK_NAME}"
    monkeypatch.setenv(HALLMARK_URL_ENV, url)
    for var in ("STBENCH_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    cache = tmp_path / "cache"
    with pytest.raises(FetchError) as info:
        resolve_gene_sets("hallmark", cache_dir=cache)
    message = str(info.value)
    assert "failed" in message and url in message and "--gene-sets PATH" in message
    assert "\n" not in message
    assert not cache.exists() or list(cache.iterdir()) == []


def test_resolve_hallmark_writes_aside_under_a_temp_name_in_the_cache(
    gmt_server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HALLMARK_URL_ENV, gmt_server.url(HALLMARK_NAME))
    cache = tmp_path / "home" / "genesets"  # neither folder exists yet
    seen: list[list[str]] = []
    gmt_server.on_get = lambda: seen.append(os.listdir(cache))
    assert resolve_gene_sets("hallmark", cache_dir=cache) == cache / HALLMARK_NAME
    # While the bytes arrive, the cache holds only a hidden stbench temp name for the target: the rename
    # stays within the folder (atomic) and a killed download's leftover is what clean_stale removes.
    [[partial]] = seen
    tag = parse_temp_name(partial)
    assert partial.startswith(".") and tag is not None and (tag.target, tag.kind) == (HALLMARK_NAME, "tmp")


def test_resolve_hallmark_clears_a_killed_download_and_keeps_other_files(
    gmt_server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HALLMARK_URL_ENV, gmt_server.url(HALLMARK_NAME))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mine.gmt").write_text("S\td\tA\n")
    debris = cache / f".{HALLMARK_NAME}.tmp-elsewhere-4242-1-0123abcd"  # a writer on another host, 8 days ago
    debris.write_bytes(b"HALLMARK_HALF\td")
    old = time.time() - 8 * 24 * 3600
    os.utime(debris, (old, old))
    assert resolve_gene_sets("hallmark", cache_dir=cache) == cache / HALLMARK_NAME
    assert sorted(p.name for p in cache.iterdir()) == [HALLMARK_NAME, "mine.gmt"]


def test_resolve_hallmark_url_not_naming_a_gmt_is_cached_as_hallmark_gmt(
    gmt_server: _Server, tmp_path: Path, hallmark_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "srv" / "download").write_bytes(hallmark_bytes)
    monkeypatch.setenv(HALLMARK_URL_ENV, gmt_server.url("download"))
    cache = tmp_path / "cache"
    assert resolve_gene_sets("hallmark", cache_dir=cache) == cache / "hallmark.gmt"
    assert (cache / "hallmark.gmt").read_bytes() == hallmark_bytes


def test_resolve_hallmark_not_a_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HALLMARK_URL_ENV, "not a url")
    monkeypatch.delenv("STBENCH_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cache = tmp_path / "cache"
    with pytest.raises(FetchError) as info:
        resolve_gene_sets("hallmark", cache_dir=cache)
    message = str(info.value)
    assert message.startswith("downloading the MSigDB Hallmark gene sets from not a url failed (")
    assert "unknown url type" in message and message.endswith(f"); {LOCAL_HINT}")
    assert not cache.exists()


def test_resolve_hallmark_silent_server_times_out(
    gmt_server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(programs, "_TIMEOUT_S", 0.2)  # 30 s in use; the rule, not the wait, is tested
    url = gmt_server.url("stall")
    monkeypatch.setenv(HALLMARK_URL_ENV, url)
    cache = tmp_path / "cache"
    with pytest.raises(FetchError) as info:
        resolve_gene_sets("hallmark", cache_dir=cache)
    gmt_server.unstall.set()
    assert str(info.value) == (
        f"downloading the MSigDB Hallmark gene sets from {url} failed (timed out); {LOCAL_HINT}"
    )
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize(("name", "needle"), [("login.gmt", "not a GMT file"), ("missing.gmt", "404")])
def test_resolve_hallmark_bad_download_leaves_nothing(
    gmt_server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, needle: str
) -> None:
    monkeypatch.setenv(HALLMARK_URL_ENV, gmt_server.url(name))
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match=needle):
        resolve_gene_sets("hallmark", cache_dir=cache)
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("var", ["STBENCH_OFFLINE", "HF_HUB_OFFLINE"])
def test_resolve_hallmark_offline(
    gmt_server: _Server, tmp_path: Path, hallmark_bytes: bytes, monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    monkeypatch.setenv(HALLMARK_URL_ENV, gmt_server.url(HALLMARK_NAME))
    monkeypatch.setenv(var, "1")
    cache = tmp_path / "cache"
    with pytest.raises(FetchError) as info:
        resolve_gene_sets("hallmark", cache_dir=cache)
    assert str(info.value) == (
        f"MSigDB Hallmark gene sets are not cached at {cache / HALLMARK_NAME} and downloads are off "
        f"(STBENCH_OFFLINE/HF_HUB_OFFLINE=1); {LOCAL_HINT}"
    )
    assert gmt_server.requests == []  # never tried
    cache.mkdir()
    (cache / HALLMARK_NAME).write_bytes(hallmark_bytes)
    assert resolve_gene_sets("hallmark", cache_dir=cache) == cache / HALLMARK_NAME  # a cached copy serves


def test_resolve_hallmark_default_cache_is_under_stbench_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STBENCH_OFFLINE", "1")
    with pytest.raises(FetchError, match=str(tmp_path / "home" / "genesets")):
        resolve_gene_sets("hallmark")


def test_resolve_gene_sets_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.gmt"
    path.write_text("S\td\tA\n")
    assert resolve_gene_sets(str(path)) == path
    with pytest.raises(DataError) as info:
        resolve_gene_sets(str(tmp_path / "absent.gmt"))
    assert info.value.path == tmp_path / "absent.gmt"
    assert info.value.problem == f"gene-set file not found; {LOCAL_HINT} or use --gene-sets hallmark"


# -------------------------------------------------------------------------------------------------- HVGs


def _hvg_data(seed: int = 0):
    """Two samples x 200 spots x 300 genes of counts: HV0-9 overdispersed in both, SA0-4 only in sample A."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    n_per, n_noise = 200, 283
    names = [f"HV{i}" for i in range(10)] + [f"SA{i}" for i in range(5)] + [f"N{i}" for i in range(n_noise)]
    names += ["RARE1", "RARE2"]
    mu = np.exp(rng.uniform(np.log(3), np.log(30), size=len(names)))
    blocks = []
    for sample in ("A", "B"):
        lam = np.tile(mu, (n_per, 1))
        burst = rng.lognormal(-1.125, 1.5, size=(n_per, 15))  # mean 1: same mean, extra-Poisson variance
        lam[:, :10] *= burst[:, :10]
        if sample == "A":
            lam[:, 10:15] *= burst[:, 10:15]
        blocks.append(rng.poisson(lam).astype(np.float32))
    X = np.vstack(blocks)
    X[:, -2:] = 0
    X[[0, 250], -2] = 7  # RARE1 in 2 spots only: below the 3-spot floor
    X[[1, 2, 3], -1] = 5  # RARE2 in exactly 3 spots: allowed
    adata = ad.AnnData(X)
    adata.var_names = names
    adata.obs["sample_id"] = ["A"] * n_per + ["B"] * n_per
    return adata


def test_select_hvgs_two_samples_ranks_shared_genes_first() -> None:
    adata = _hvg_data()
    before = adata.X.copy()
    hvgs = select_hvgs(adata, n_top=30)
    assert len(hvgs) == 30 and len(set(hvgs)) == 30
    hv = [hvgs.index(f"HV{i}") for i in range(10)]  # HVG in both samples
    sa = [hvgs.index(f"SA{i}") for i in range(5)]  # HVG in sample A only: kept, ranked after all of those
    assert max(hv) < 12 and max(hv) < min(sa)
    assert "RARE1" not in hvgs
    np.testing.assert_array_equal(adata.X, before)  # the caller's counts are untouched
    assert select_hvgs(adata, n_top=30) == hvgs  # deterministic


def test_select_hvgs_n_top_and_single_sample() -> None:
    adata = _hvg_data()
    top5 = select_hvgs(adata, n_top=5)
    assert len(top5) == 5 and set(top5) <= {f"HV{i}" for i in range(10)}
    every = select_hvgs(adata, n_top=10_000)
    assert len(every) == adata.n_vars - 1 and "RARE1" not in every and "RARE2" in every

    one = adata[adata.obs["sample_id"] == "B"].copy()  # in B only the HV genes are overdispersed
    hv_b = select_hvgs(one, n_top=10)
    assert set(hv_b) == {f"HV{i}" for i in range(10)}
    del one.obs["sample_id"]  # no sample column: one sample
    assert select_hvgs(one, n_top=10) == hv_b


def _scanpy_ranking(adata, n_top: int) -> list[str]:  # noqa: ANN001
    """The paper's HVG rule run with scanpy directly: genes in >= 3 spots, normalise to 1e4, log1p, seurat
    HVGs (per sample when there are several); rank by samples where HVG, then normalised dispersion."""
    import anndata as ad
    import pandas as pd
    import scanpy as sc

    keep = np.asarray((adata.X > 0).sum(axis=0)).ravel() >= 3
    x = ad.AnnData(adata.X[:, keep].astype(np.float64))
    x.var_names = adata.var_names[keep]
    x.obs["sample_id"] = pd.Categorical(adata.obs["sample_id"].to_numpy())
    sc.pp.normalize_total(x, target_sum=1e4)
    sc.pp.log1p(x)
    several = x.obs["sample_id"].nunique() > 1
    df = sc.pp.highly_variable_genes(
        x, n_top_genes=n_top, flavor="seurat", batch_key="sample_id" if several else None, inplace=False
    )
    df.index = x.var_names
    by = "highly_variable_nbatches" if several else "highly_variable"
    return df.sort_values([by, "dispersions_norm"], ascending=False, kind="stable").index[:n_top].tolist()


@pytest.mark.parametrize(("samples", "n_top"), [(("A", "B"), 60), (("B",), 20)])
def test_select_hvgs_ranking_matches_scanpy_run_directly(samples: tuple[str, ...], n_top: int) -> None:
    adata = _hvg_data()
    adata = adata[adata.obs["sample_id"].isin(samples)].copy()
    assert select_hvgs(adata, n_top=n_top) == _scanpy_ranking(adata, n_top)


def test_select_hvgs_n_top_default_and_bounds() -> None:
    adata = _hvg_data()
    assert len(select_hvgs(adata)) == 200  # the head's 200 targets
    [top] = select_hvgs(adata, n_top=1)
    assert top.startswith("HV")
    with pytest.raises(ValueError) as info:
        select_hvgs(adata, n_top=0)
    assert str(info.value) == "n_top must be >= 1, got 0"


def _flat_library(X: np.ndarray, total: float) -> np.ndarray:
    """Counts with a last column "FILL" that brings every spot to the same library size."""
    fill = total - X.sum(axis=1, keepdims=True)
    assert (fill > 0).all()
    return np.hstack([X, fill])


@pytest.mark.filterwarnings("ignore:invalid value encountered in log:RuntimeWarning")  # scanpy, on FLAT
def test_select_hvgs_gene_without_variance_ranks_last() -> None:
    import anndata as ad

    rng = np.random.default_rng(0)
    X = rng.poisson(rng.uniform(3, 30, size=30), size=(100, 30)).astype(np.float64)
    X[:, 0] = 5  # FLAT: the same count in spots of the same library size: no dispersion at all
    adata = ad.AnnData(_flat_library(X, 2000.0))
    adata.var_names = ["FLAT"] + [f"G{i}" for i in range(29)] + ["FILL"]
    ranked = select_hvgs(adata, n_top=adata.n_vars)
    assert len(ranked) == 31 and ranked[-1] == "FLAT"


def test_select_hvgs_needs_a_gene_in_three_spots() -> None:
    import anndata as ad

    X = np.zeros((10, 4))
    X[[0, 1], :] = 1  # every gene in 2 spots only
    with pytest.raises(DataError) as info:
        select_hvgs(ad.AnnData(X))
    assert info.value.problem == "no gene is expressed in >= 3 training spots; check the expression data"


def test_select_hvgs_adds_no_warning_of_its_own() -> None:
    adata = _hvg_data()
    adata.obs_names = [f"spot-{i}" for i in range(adata.n_obs)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        select_hvgs(adata, n_top=30)
    assert [w.message for w in caught if issubclass(w.category, UserWarning)] == []


def test_select_hvgs_silences_only_scanpys_user_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    import scanpy as sc

    real = sc.pp.highly_variable_genes

    def noisy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        warnings.warn("`n_top_genes` > number of normalized dispersions", UserWarning, stacklevel=2)
        warnings.warn("a future scanpy changes this", FutureWarning, stacklevel=2)
        return real(*args, **kwargs)

    monkeypatch.setattr(sc.pp, "highly_variable_genes", noisy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        select_hvgs(_hvg_data(), n_top=30)
    assert [str(w.message) for w in caught if issubclass(w.category, (UserWarning, FutureWarning))] == [
        "a future scanpy changes this"
    ]


# -------------------------------------------------------------------------------------------------- SVGs

GRID = 15


def _svg_sample(rng: np.random.Generator, strong: list[str], mild: list[str], names: list[str]) -> np.ndarray:
    """Counts on a 15x15 grid: genes rising with x, steeply (``strong``) or gently (``mild``); rest noise."""
    xs, _ = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    x = xs.ravel() / (GRID - 1)
    lam = np.full((GRID * GRID, len(names)), 5.0)
    for j, name in enumerate(names):
        if name in strong:
            lam[:, j] = 1.0 + 12.0 * x
        elif name in mild:
            lam[:, j] = 3.0 + 5.0 * x
    return rng.poisson(lam).astype(np.float32)


def _svg_data(
    strong_a: list[str], strong_b: list[str], mild_a: tuple[str, ...] = (), mild_b: tuple[str, ...] = ()
):
    import anndata as ad

    rng = np.random.default_rng(0)
    names = [f"P{i}" for i in range(20)] + [f"N{i}" for i in range(120)] + ["RARE"]
    X = np.vstack(
        [
            _svg_sample(rng, [*strong_a, "RARE"], list(mild_a), names),
            _svg_sample(rng, strong_b, list(mild_b), names),
        ]
    )
    rare_b = np.flatnonzero(X[GRID * GRID :, -1] > 0)
    X[GRID * GRID + rare_b[2:], -1] = 0  # RARE: a gradient in A, in only 2 spots of B
    adata = ad.AnnData(X)
    adata.var_names = names
    adata.obs["sample_id"] = ["A"] * GRID**2 + ["B"] * GRID**2
    xs, ys = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    grid = np.column_stack([xs.ravel(), ys.ravel()]).astype(float) * 100.0  # 100 um pitch
    return adata, np.vstack([grid, grid])


SHARED = [f"P{i}" for i in range(10)]


def test_select_svgs_planted_gradient_genes_come_first() -> None:
    adata, coords = _svg_data(SHARED, SHARED)
    sel = select_svgs(adata, coords, n_top=10, min_intersection=5)
    assert isinstance(sel, SVGSelection)
    assert sel.rule == "intersection" and sel.n_intersection == 10
    assert set(sel.genes) == set(SHARED)
    assert all(set(top) == set(SHARED) for top in sel.per_sample_top.values())
    assert list(sel.per_sample_top) == ["A", "B"]
    assert list(sel.moran) == sel.genes and min(sel.moran.values()) > 0.3  # a smooth gradient: strong I

    wide = select_svgs(adata, coords, n_top=30, min_intersection=1)
    assert set(wide.genes[:10]) == set(SHARED)  # ordered by mean rank: planted genes lead
    assert "RARE" not in wide.genes and all("RARE" not in t for t in wide.per_sample_top.values())
    noise_i = [wide.moran[g] for g in wide.genes[10:]]
    assert max(noise_i) < min(wide.moran[g] for g in SHARED)


def test_select_svgs_falls_back_to_mean_rank(caplog: pytest.LogCaptureFixture) -> None:
    # Each sample's top 10 is its own steep genes (no overlap), but the other sample's are gently spatial
    # there, so all 20 planted genes beat the noise on mean rank.
    only_a, only_b = [f"P{i}" for i in range(10)], [f"P{i}" for i in range(10, 20)]
    adata, coords = _svg_data(only_a, only_b, mild_a=tuple(only_b), mild_b=tuple(only_a))
    with caplog.at_level(logging.WARNING, logger="stbench"):
        sel = select_svgs(adata, coords, n_top=10, min_intersection=5)
    assert sel.rule == "mean-rank"
    assert sel.n_intersection == 0
    assert len(sel.genes) == 10 and set(sel.genes) <= set(only_a + only_b)
    assert set(sel.per_sample_top["A"]) == set(only_a) and set(sel.per_sample_top["B"]) == set(only_b)
    assert [r.getMessage() for r in caplog.records] == [
        "SVG selection: the top-10 lists of the 2 training samples share 0 genes (< 5); "
        "using the 10 genes of best mean rank instead"
    ]
    assert select_svgs(adata, coords, n_top=10, min_intersection=5) == sel  # deterministic


def test_select_svgs_one_sample() -> None:
    adata, coords = _svg_data(SHARED, SHARED)
    mask = (adata.obs["sample_id"] == "A").to_numpy()
    sel = select_svgs(adata[mask].copy(), coords[mask], n_top=11)
    assert sel.rule == "intersection" and sel.n_intersection == 11
    assert set(sel.genes) == set(SHARED) | {"RARE"}  # in one sample RARE is a real gradient
    assert list(sel.per_sample_top) == ["A"]

    unnamed = adata[mask].copy()
    del unnamed.obs["sample_id"]  # no sample column: one sample, named "0"
    assert select_svgs(unnamed, coords[mask], n_top=11) == SVGSelection(
        sel.genes, sel.rule, {"0": sel.per_sample_top["A"]}, sel.n_intersection, sel.moran
    )


N_CLOUD = 80


def _cloud_data(seed: int = 0):  # noqa: ANN202
    """Two samples of integer counts at random spot positions (no distance ties). G0-G7 rise along x, from
    flat to steep; RARE holds big counts in 2 spots of A (below the floor, yet part of their library
    size); spot 5 of A is empty (off the tissue) and spot 7 of B holds a single count."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    blocks, coords = [], []
    for _ in "AB":
        xy = rng.uniform(0, 1000, size=(N_CLOUD, 2))
        lam = 2.0 + np.outer(xy[:, 0] / 1000, np.linspace(0, 12, 8))
        blocks.append(np.column_stack([rng.poisson(lam), np.zeros(N_CLOUD, dtype=np.int64)]))
        coords.append(xy)
    X = np.vstack(blocks)
    X[[3, 4], -1] = 400
    X[5] = 0
    X[N_CLOUD + 7] = 0
    X[N_CLOUD + 7, 7] = 1
    adata = ad.AnnData(X)
    adata.var_names = [f"G{i}" for i in range(8)] + ["RARE"]
    adata.obs["sample_id"] = ["A"] * N_CLOUD + ["B"] * N_CLOUD
    return adata, np.vstack(coords)


def _moran_by_hand(counts: np.ndarray, coords: np.ndarray, k: int) -> np.ndarray:
    """Moran's I of each column of log1p(counts scaled to 1e4 per spot, an empty spot left at 0) on the
    graph of each spot's k nearest neighbours, weights 1/k: I = sum_ij w_ij z_i z_j / sum_i z_i^2."""
    from scipy.spatial import cKDTree

    counts = np.asarray(counts, dtype=np.float64)
    lib = counts.sum(axis=1, keepdims=True)
    logexpr = np.log1p(np.divide(counts * 1e4, lib, out=np.zeros_like(counts), where=lib > 0))
    _, nearest = cKDTree(coords).query(coords, k=k + 1)  # the spot itself first
    n = len(coords)
    W = np.zeros((n, n))
    W[np.repeat(np.arange(n), k), nearest[:, 1:].ravel()] = 1.0 / k
    z = logexpr - logexpr.mean(axis=0)
    with np.errstate(invalid="ignore"):  # a column of zeros has no I
        return (z * (W @ z)).sum(axis=0) / (z * z).sum(axis=0)


def _cloud_moran_by_hand(adata, coords: np.ndarray, k: int) -> dict[str, float]:  # noqa: ANN001
    """Mean over the two samples of `_moran_by_hand`, for G0-G7 (RARE is no candidate)."""
    halves = [slice(0, N_CLOUD), slice(N_CLOUD, 2 * N_CLOUD)]
    per_sample = [_moran_by_hand(adata.X[rows], coords[rows], k)[:8] for rows in halves]
    return dict(zip(adata.var_names[:8], np.mean(per_sample, axis=0)))


@pytest.mark.parametrize("dtype", [np.int64, np.float32])  # HEST's h5ad files hold float32 counts
def test_select_svgs_moran_matches_a_direct_computation(dtype: type) -> None:
    """Library sizes and scaling in float64 whatever the counts' dtype: float32 sums would move I in the 8th
    digit."""
    adata, coords = _cloud_data()
    adata.X = adata.X.astype(dtype)
    for sel, k in [
        (select_svgs(adata, coords, n_top=50, min_intersection=1), 6),  # the default graph: 6 neighbours
        (select_svgs(adata, coords, n_top=50, min_intersection=1, n_neighs=4), 4),
    ]:
        expected = _cloud_moran_by_hand(adata, coords, k)
        assert sorted(sel.moran) == sorted(expected)
        np.testing.assert_allclose([sel.moran[g] for g in expected], list(expected.values()), rtol=1e-9)


@pytest.mark.filterwarnings("ignore:Calling `spatial_neighbors` is deprecated:FutureWarning")  # squidpy 1.8
def test_select_svgs_with_squidpy_before_1_8(monkeypatch: pytest.MonkeyPatch) -> None:
    import squidpy as sq

    monkeypatch.delattr(sq.gr, "spatial_neighbors_knn")  # squidpy < 1.8 has only spatial_neighbors
    adata, coords = _cloud_data()
    sel = select_svgs(adata, coords, n_top=50, min_intersection=1, n_neighs=4)
    expected = _cloud_moran_by_hand(adata, coords, 4)
    np.testing.assert_allclose([sel.moran[g] for g in expected], list(expected.values()), rtol=1e-9)


def test_select_svgs_prints_nothing_and_calls_no_deprecated_squidpy(capfd: pytest.CaptureFixture) -> None:
    adata, coords = _cloud_data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        select_svgs(adata, coords, n_top=50, min_intersection=1)
    assert [w.message for w in caught if issubclass(w.category, FutureWarning)] == []
    assert capfd.readouterr() == ("", "")  # squidpy's graph builder logs each call to the console


def _overlap_data():  # noqa: ANN202
    """Two 15x15 grids: in A genes S0-S199 follow x, in B S150-S349, and N0-N49 are noise. Each sample's
    top 200 are its spatial genes, so the two lists share exactly S150-S199. Half of the spatial genes rise
    and half fall, so library sizes stay flat and normalising does not make the noise spatial."""
    import anndata as ad

    rng = np.random.default_rng(0)
    names = [f"S{i}" for i in range(350)] + [f"N{i}" for i in range(50)]
    xs, ys = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    x = (xs.ravel() / (GRID - 1))[:, None]
    falls = np.arange(len(names)) % 2 == 1
    blocks = []
    for spatial in (slice(0, 200), slice(150, 350)):
        lam = np.full((GRID * GRID, len(names)), 5.0)
        lam[:, spatial] = np.where(falls[spatial], 13.0 - 12.0 * x, 1.0 + 12.0 * x)
        blocks.append(rng.poisson(lam).astype(np.float32))
    adata = ad.AnnData(np.vstack(blocks))
    adata.var_names = names
    adata.obs["sample_id"] = ["A"] * GRID**2 + ["B"] * GRID**2
    grid = np.column_stack([xs.ravel(), ys.ravel()]).astype(float) * 100.0
    return adata, np.vstack([grid, grid])


def test_select_svgs_defaults_keep_an_intersection_of_exactly_50(caplog: pytest.LogCaptureFixture) -> None:
    adata, coords = _overlap_data()
    sel = select_svgs(adata, coords)  # n_top=200, min_intersection=50
    assert {s: len(top) for s, top in sel.per_sample_top.items()} == {"A": 200, "B": 200}
    assert set(sel.per_sample_top["A"]) == {f"S{i}" for i in range(200)}
    assert (sel.rule, sel.n_intersection) == ("intersection", 50)
    assert set(sel.genes) == {f"S{i}" for i in range(150, 200)}

    with caplog.at_level(logging.WARNING, logger="stbench"):
        short = select_svgs(adata, coords, min_intersection=51)
    assert (short.rule, short.n_intersection, len(short.genes)) == ("mean-rank", 50, 200)
    assert [r.getMessage() for r in caplog.records] == [
        "SVG selection: the top-200 lists of the 2 training samples share 50 genes (< 51); "
        "using the 200 genes of best mean rank instead"
    ]


@pytest.mark.filterwarnings("ignore:1 variables were constant:UserWarning")  # scanpy's Moran's I, on FLAT
def test_select_svgs_gene_without_spatial_variance_ranks_last() -> None:
    import anndata as ad

    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 1000, size=(100, 2))
    rising = rng.poisson(2.0 + np.outer(coords[:, 0] / 1000, [4.0, 8.0, 12.0]))
    X = np.column_stack([np.full(100, 5.0), rising])  # FLAT first: its position cannot rank it last
    adata = ad.AnnData(_flat_library(X, 2000.0))  # same library size: FLAT is constant, its I is NaN
    adata.var_names = ["FLAT", "G0", "G1", "G2", "FILL"]
    every = select_svgs(adata, coords, n_top=5)
    assert every.per_sample_top["0"][-1] == every.genes[-1] == "FLAT"
    assert math.isnan(every.moran["FLAT"])  # said as is
    assert "FLAT" not in select_svgs(adata, coords, n_top=2).genes


def test_select_svgs_candidates_are_genes_in_three_spots_of_every_sample() -> None:
    adata, coords = _cloud_data()
    X = adata.X
    X[:, 0] = 0
    X[[10, 11, 12, N_CLOUD + 10, N_CLOUD + 11, N_CLOUD + 12], 0] = 1  # G0: a count of 1 in 3 spots of each
    X[:N_CLOUD, 1] = 0
    X[[0, 1], 1] = 4  # G1: 2 spots of the first sample, every spot of the second
    sel = select_svgs(adata, coords, n_top=50, min_intersection=1)
    candidates = {"G0", "G2", "G3", "G4", "G5", "G6", "G7"}
    assert set(sel.per_sample_top["A"]) == set(sel.per_sample_top["B"]) == set(sel.genes) == candidates


def test_select_svgs_sample_too_small_for_the_graph() -> None:
    adata, coords = _cloud_data()
    rows = np.r_[0:N_CLOUD, N_CLOUD : N_CLOUD + 6]  # B cut to 6 spots: a 6-neighbour graph needs 7
    with pytest.raises(DataError) as info:
        select_svgs(adata[rows].copy(), coords[rows])
    assert info.value.problem == "training sample 'B' has 6 spots, too few for a 6-neighbour graph"

    alone = adata[:6].copy()
    del alone.obs["sample_id"]  # no sample column: one sample, named "0"
    with pytest.raises(DataError) as info:
        select_svgs(alone, coords[:6])
    assert info.value.problem == "training sample '0' has 6 spots, too few for a 6-neighbour graph"


def test_select_svgs_no_gene_in_three_spots_of_every_sample() -> None:
    adata, coords = _cloud_data()
    adata.X[N_CLOUD + 2 :] = 0  # B: counts in 2 spots only
    with pytest.raises(DataError) as info:
        select_svgs(adata, coords)
    assert info.value.problem == "no gene is expressed in >= 3 spots of every training sample"


def test_select_svgs_n_top_bounds() -> None:
    adata, coords = _cloud_data()
    with pytest.raises(ValueError) as info:
        select_svgs(adata, coords, n_top=0)
    assert str(info.value) == "n_top must be >= 1, got 0"
    sel = select_svgs(adata, coords, n_top=1, min_intersection=1)
    assert len(sel.genes) == 1 and [len(top) for top in sel.per_sample_top.values()] == [1, 1]


def test_sparse_counts_give_the_same_genes() -> None:
    from scipy import sparse

    adata, coords = _svg_data(SHARED, SHARED)
    dense_svg = select_svgs(adata, coords, n_top=12, min_intersection=1)
    dense_hvg = select_hvgs(adata, n_top=12)
    adata.X = sparse.csr_matrix(adata.X)
    assert select_svgs(adata, coords, n_top=12, min_intersection=1) == dense_svg
    assert select_hvgs(adata, n_top=12) == dense_hvg


def test_duplicate_gene_names_are_refused() -> None:
    adata, coords = _svg_data(SHARED, SHARED)
    adata.var_names = ["P0", *adata.var_names[1:-1], "P0"]
    with pytest.raises(DataError, match="duplicate gene name 'P0'"):
        select_svgs(adata, coords)
    with pytest.raises(DataError, match="duplicate gene name 'P0'"):
        select_hvgs(adata)


def test_select_svgs_rejects_mismatched_coords() -> None:
    adata, coords = _svg_data(SHARED, SHARED)
    with pytest.raises(ValueError, match="coords"):
        select_svgs(adata, coords[:-1])


# ---------------------------------------------------------------------------------------- match_pathways

SVGS = ["A", "B", "c", "D", "E"]
SETS = {"P1": ["a", "b", "C", "X"], "P2": ["D", "Y"], "P3": ["e", "a", "b", "c", "d"]}


def test_match_pathways_threshold_and_case() -> None:
    progs = match_pathways(SVGS, SETS, min_shared=3)
    assert isinstance(progs, Programs)
    assert progs.names == ["P1", "P3"]  # GMT order
    assert progs.overlap == {"P1": 3, "P2": 1, "P3": 5}  # rejected pathways counted too
    assert progs.membership.dtype == np.float32 and progs.membership.shape == (5, 2)
    np.testing.assert_array_equal(progs.membership[:, 0], [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(progs.membership[:, 1], [1, 1, 1, 1, 1])
    assert match_pathways(SVGS, SETS, min_shared=1).names == ["P1", "P2", "P3"]


def test_match_pathways_too_few_says_the_counts() -> None:
    with pytest.raises(ProtocolError) as info:
        match_pathways(SVGS, SETS, min_shared=6)
    message = str(info.value)
    assert "only 0 of 3 pathways share >= 6 genes with the 5 SVGs" in message
    assert "P3 5, P1 3, P2 1" in message
    assert "min_shared=5" in message and "--gene-sets" in message and "bpbooster-random" in message
    with pytest.raises(ProtocolError, match=r"only 2 of 3 .*min_shared=1"):
        match_pathways(SVGS, SETS, min_shared=3, min_programs=3)


def test_match_pathways_default_threshold_is_10_shared_genes() -> None:
    svgs = [f"G{i}" for i in range(20)]
    progs = match_pathways(svgs, {"TEN": [*svgs[:10], "X"], "NINE": svgs[10:19]})
    assert progs.names == ["TEN"]  # exactly min_programs (1) qualify: enough
    assert progs.overlap == {"TEN": 10, "NINE": 9}


def test_match_pathways_refuses_a_threshold_below_one() -> None:
    with pytest.raises(ValueError) as info:
        match_pathways(SVGS, SETS, min_shared=0)
    assert str(info.value) == "min_shared must be >= 1, got 0"


_OTHERWISE = "use another --gene-sets file, or use bpbooster-random"
_LOWER_TO_6 = "lower min_shared (--reducer-opt min_shared=6), "


@pytest.mark.parametrize(
    ("n_sets", "min_shared", "min_programs", "tail"),
    [
        (6, 7, 1, f"(best: T1 6, T2 5, T3 4, T4 3, T5 2, ...); {_LOWER_TO_6}{_OTHERWISE}"),  # 5 shown
        (5, 7, 1, f"(best: T1 6, T2 5, T3 4, T4 3, T5 2); {_LOWER_TO_6}{_OTHERWISE}"),
        # more programs asked for than there are pathways: no threshold would do, none is suggested
        (3, 5, 4, f"(best: T1 6, T2 5, T3 4); {_OTHERWISE}"),
        (0, 10, 1, f"(best: none); {_OTHERWISE}"),
    ],
)
def test_match_pathways_too_few_message(n_sets: int, min_shared: int, min_programs: int, tail: str) -> None:
    svgs = [f"G{i}" for i in range(6)]
    sets = {f"T{j}": svgs[: 7 - j] for j in range(1, n_sets + 1)}  # T1 shares 6, T2 5, ...
    with pytest.raises(ProtocolError) as info:
        match_pathways(svgs, sets, min_shared=min_shared, min_programs=min_programs)
    kept = sum(7 - j >= min_shared for j in range(1, n_sets + 1))
    assert str(info.value) == (
        f"only {kept} of {n_sets} pathways share >= {min_shared} genes with the 6 SVGs, "
        f"{min_programs} needed {tail}"
    )


def test_match_pathways_sharing_nothing_suggests_no_threshold() -> None:
    with pytest.raises(ProtocolError) as info:
        match_pathways(SVGS, {"Q1": ["X", "Y"]})
    assert str(info.value) == (
        f"only 0 of 1 pathways share >= 10 genes with the 5 SVGs, 1 needed (best: Q1 0); {_OTHERWISE}"
    )


# -------------------------------------------------------------------------------------- program_profiles


def _profiles_by_loops(G: np.ndarray, B: np.ndarray, standardize: bool) -> np.ndarray:
    """The spec's steps 3-5 written out element by element."""
    n_spots, n_genes = G.shape
    n_prog = B.shape[1]
    Z = [[float(G[n, k]) for k in range(n_genes)] for n in range(n_spots)]
    if standardize:
        for k in range(n_genes):
            col = [Z[n][k] for n in range(n_spots)]
            mean = sum(col) / n_spots
            std = math.sqrt(sum((v - mean) ** 2 for v in col) / n_spots) or 1.0
            for n in range(n_spots):
                Z[n][k] = (Z[n][k] - mean) / std
    P = np.zeros((n_prog, n_genes))
    for j in range(n_prog):
        A = [sum(Z[n][k] * B[k, j] for k in range(n_genes)) for n in range(n_spots)]
        sig = [1.0 / (1.0 + math.exp(-a)) for a in A]
        total = sum(sig)
        for k in range(n_genes):
            P[j, k] = sum(sig[n] / total * Z[n][k] for n in range(n_spots))
    return P


@pytest.mark.parametrize("standardize", [True, False])
def test_program_profiles_hand_checked(standardize: bool) -> None:
    G = np.array([[0.0, 1.0, 2.0, 3.0], [1.0, 0.5, 0.0, 3.0], [2.0, 0.0, 1.5, 3.0]], dtype=np.float32)
    B = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=np.float32)  # gene 4 is constant: std 0 -> 1
    P = program_profiles(G, B, standardize=standardize)
    assert P.dtype == np.float32 and P.shape == (2, 4)
    np.testing.assert_allclose(P, _profiles_by_loops(G, B, standardize), rtol=1e-5, atol=1e-6)
    if standardize:
        np.testing.assert_allclose(P[:, 3], 0.0, atol=1e-7)  # a constant gene carries nothing


def test_program_profiles_constant_gene_carries_nothing() -> None:
    # 0.1 three times: the float64 mean is not exactly 0.1, so the std comes out ~1e-17, not 0
    G = np.array([[0.0, 1.0, 2.0], [1.0, 0.5, 0.0], [2.0, 0.0, 1.5]])
    B = np.array([[1, 0], [1, 1], [0, 1]], dtype=np.float32)
    P = program_profiles(np.column_stack([G, [0.1, 0.1, 0.1]]), np.vstack([B, [1, 1]]))
    np.testing.assert_array_equal(P[:, 3], 0.0)
    np.testing.assert_allclose(P[:, :3], _profiles_by_loops(G, B, standardize=True), rtol=1e-5, atol=1e-6)


def test_program_profiles_float32_input_is_computed_in_float64() -> None:
    # A highly expressed gene with little spread (a housekeeping gene): float32 arithmetic would lose
    # its z-scores to cancellation.
    rng = np.random.default_rng(0)
    G = np.column_stack([8.0 + 0.01 * rng.standard_normal(500), rng.gamma(2.0, 0.5, size=(500, 3))])
    G = G.astype(np.float32)
    B = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=np.float32)
    expected = _profiles_by_loops(G.astype(np.float64), B, standardize=True)
    np.testing.assert_allclose(program_profiles(G, B), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("G_shape", "B_shape"), [((3, 4), (5, 2)), ((4,), (4, 2)), ((3, 4), (4,))])
def test_program_profiles_refuses_mismatched_shapes(G_shape: tuple, B_shape: tuple) -> None:
    with pytest.raises(ValueError) as info:
        program_profiles(np.ones(G_shape), np.ones(B_shape))
    assert str(info.value) == f"G_svg (N, K_S) and membership (K_S, J) do not match: {G_shape} and {B_shape}"


def test_program_profiles_literal_saturates_standardised_separates() -> None:
    """The spec's DECISION: literal log1p weights are uniform, standardised ones tell programs apart."""
    rng = np.random.default_rng(0)
    n_spots, n_genes = 400, 200
    active = rng.integers(0, 2, size=n_spots)  # which of two programs is high in each spot
    lam = np.full((n_spots, n_genes), 3.0)
    lam[active == 0, :100] *= 3.0  # program 1: genes 0-99
    lam[active == 1, 100:] *= 3.0  # program 2: genes 100-199
    G = np.log1p(rng.poisson(lam)).astype(np.float32)
    B = np.zeros((n_genes, 2), dtype=np.float32)
    B[:100, 0] = B[100:, 1] = 1

    literal = program_profiles(G, B, standardize=False)
    np.testing.assert_allclose(literal, np.tile(G.mean(axis=0), (2, 1)), atol=1e-5)  # both = column mean
    assert mean_pairwise_correlation(literal) > 0.9999

    std = program_profiles(G, B)
    assert (std[0, :100].mean() > 0.5) and (std[0, 100:].mean() < -0.5)  # p_1: program-1 genes high
    assert (std[1, 100:].mean() > 0.5) and (std[1, :100].mean() < -0.5)
    assert mean_pairwise_correlation(std) < -0.5


# ----------------------------------------------------------------------------- mean_pairwise_correlation


def test_mean_pairwise_correlation() -> None:
    row = np.array([1.0, 2.0, 4.0, 3.0])
    assert mean_pairwise_correlation(np.stack([row, row, 2 * row + 1])) == pytest.approx(1.0)
    assert math.isnan(mean_pairwise_correlation(row[None, :]))
    three = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    assert mean_pairwise_correlation(three) == pytest.approx(-1.0 / 3.0)  # pairs: -1, +1, -1


def test_mean_pairwise_correlation_without_a_defined_pair_is_nan_and_silent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(mean_pairwise_correlation(np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])))
        assert math.isnan(mean_pairwise_correlation(np.array([[1.0], [2.0]])))  # one gene: no correlation


def test_mean_pairwise_correlation_under_strict_numpy_errors() -> None:
    # a user running with np.seterr(all="raise") still gets the constant row left out, not an error
    with np.errstate(all="raise"):
        constant_first = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
        assert mean_pairwise_correlation(constant_first) == -1.0
        assert math.isnan(mean_pairwise_correlation(np.array([[1.0], [2.0]])))


# ------------------------------------------------------------------------------------------ real data


@pytest.mark.realdata
def test_real_b4_svgs_and_hallmark_programs() -> None:
    import anndata as ad

    from stbench.data.her2st import _read_counts

    counts = require_shared("her2st", "data", "ST-cnts", "B4.tsv.gz")
    gmt = require_shared("genesets", HALLMARK_NAME)
    spots, genes, X = _read_counts(counts)
    adata = ad.AnnData(X)
    adata.var_names = genes
    adata = adata[:, ~adata.var_names.duplicated()].copy()
    adata.obs["sample_id"] = "B4"
    coords = np.array([[float(v) for v in spot.split("x")] for spot in spots])  # spot id "<x>x<y>"

    sel = select_svgs(adata, coords, n_top=200)
    assert len(sel.genes) == 200 == len(set(sel.genes))
    assert all(v > 0 for v in sel.moran.values())
    assert select_svgs(adata, coords, n_top=200) == sel

    try:
        progs = match_pathways(sel.genes, read_gmt(gmt), min_shared=10)
    except ProtocolError as exc:
        assert "pathways share >= 10 genes with the 200 SVGs" in str(exc)
        print(f"B4: no Hallmark pathway qualifies: {exc}")
    else:
        assert len(progs.names) >= 1 and progs.membership.shape == (200, len(progs.names))
        assert all(progs.overlap[n] >= 10 for n in progs.names)
        print(f"B4: J={len(progs.names)} programs: {progs.names}")
