"""BP-Booster gene programs (stbench.reducers.bpbooster.programs): gene sets, HVGs, SVGs, pathway profiles."""

from __future__ import annotations

import functools
import http.server
import logging
import math
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stbench.errors import DataError, FetchError, ProtocolError
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
from tests.conftest import require_shared, shared_data_dir

HALLMARK_NAME = "h.all.v7.0.symbols.gmt"


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


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("S1\tdesc\tA\nS2\tonly-two-fields\n", "line 2"),
        ("S1\tdesc\t\t\n", "line 1"),  # three fields but no gene
        ("\n\n", "no gene sets"),
        ("S1\td\tA\nS1\td\tB\n", "appears twice"),
    ],
)
def test_read_gmt_malformed(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.gmt"
    path.write_text(text)
    with pytest.raises(DataError, match=needle) as info:
        read_gmt(path)
    assert info.value.path == path  # the message names the file


def test_read_gmt_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as info:
        read_gmt(tmp_path / "nope.gmt")
    assert "nope.gmt" in str(info.value)


# -------------------------------------------------------------------------------------- resolve_gene_sets


@pytest.fixture
def hallmark_bytes() -> bytes:
    """The shared Hallmark GMT, or a synthetic 50-set GMT when the shared data is absent."""
    path = shared_data_dir() / "genesets" / HALLMARK_NAME
    if path.is_file():
        return path.read_bytes()
    return "".join(f"HALLMARK_{i}\tdesc\tG{i}\tG{i + 1}\n" for i in range(50)).encode()


class _Server:
    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:
                outer.requests.append(self.path)
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
    gmt_server: _Server, tmp_path: Path, hallmark_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HALLMARK_URL_ENV, gmt_server.url(HALLMARK_NAME))
    cache = tmp_path / "cache"
    path = resolve_gene_sets("hallmark", cache_dir=cache)
    assert path == cache / HALLMARK_NAME
    assert path.read_bytes() == hallmark_bytes
    assert len(read_gmt(path)) == 50
    assert gmt_server.requests == [f"/{HALLMARK_NAME}"]
    assert sorted(p.name for p in cache.iterdir()) == [HALLMARK_NAME]  # no temporary file left

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
    with pytest.raises(FetchError, match="not cached.*--gene-sets PATH"):
        resolve_gene_sets("hallmark", cache_dir=cache)
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
    with pytest.raises(DataError, match="not found"):
        resolve_gene_sets(str(tmp_path / "absent.gmt"))


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
    assert any(f"share {sel.n_intersection} genes" in r.getMessage() for r in caplog.records)
    assert select_svgs(adata, coords, n_top=10, min_intersection=5) == sel  # deterministic


def test_select_svgs_one_sample() -> None:
    adata, coords = _svg_data(SHARED, SHARED)
    mask = (adata.obs["sample_id"] == "A").to_numpy()
    sel = select_svgs(adata[mask].copy(), coords[mask], n_top=11)
    assert sel.rule == "intersection" and sel.n_intersection == 11
    assert set(sel.genes) == set(SHARED) | {"RARE"}  # in one sample RARE is a real gradient
    assert list(sel.per_sample_top) == ["A"]


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
