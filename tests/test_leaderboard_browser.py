"""The built leaderboard in headless Chromium (Playwright, the system's chromium; no download): the table
renders with the right rows, a header click reorders it, the reducer switch changes the numbers, the charts
draw, nothing is requested from the network, names stay text, and no page logs a console error. A screenshot
of each page is kept in ``$STBENCH_ARTIFACTS`` (default ``tests/artifacts/``).

Skipped when playwright or chromium is missing, unless ``STBENCH_REQUIRE_BROWSER=1`` (CI), which fails instead.
Install: ``pip install playwright`` and ``apt-get install chromium`` (``STBENCH_CHROMIUM`` names another binary).
"""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from stbench.cli import cli

from tests._leaderboard import EVIL, evil_store, leaderboard_store, register_encoders
from tests.test_leaderboard import page_data

REPO = Path(__file__).resolve().parents[1]


def _chromium() -> str:
    required = os.environ.get("STBENCH_REQUIRE_BROWSER") == "1"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if required:
            pytest.fail("STBENCH_REQUIRE_BROWSER=1 but playwright is not installed (pip install playwright)")
        pytest.skip("playwright is not installed (pip install playwright); STBENCH_REQUIRE_BROWSER=1 makes this a failure")
    path = os.environ.get("STBENCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        if required:
            pytest.fail(f"STBENCH_REQUIRE_BROWSER=1 but no chromium at {path} (apt-get install chromium, or set STBENCH_CHROMIUM)")
        pytest.skip(f"no chromium at {path} (apt-get install chromium, or set STBENCH_CHROMIUM)")
    return path


@pytest.fixture(scope="module")
def browser():
    path = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu", "--disable-quic"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A site from the tiny store with an encoder, a reducer, a task and a gene named like a script."""
    register_encoders()
    store = evil_store(leaderboard_store(tmp_path_factory), tmp_path_factory.mktemp("browser") / "store")
    out = tmp_path_factory.mktemp("browser-site") / "site"
    r = CliRunner().invoke(cli, ["leaderboard", "build", "--store", str(store), "--out", str(out), "--include-synthetic"])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def artifacts():
    path = Path(os.environ.get("STBENCH_ARTIFACTS") or REPO / "tests" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Watched:
    """A page that records console errors, uncaught exceptions, dialogs and any request off the disk."""

    def __init__(self, browser) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.files: list[str] = []  # every file:// URL the page asked for, in order
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.files.append(r.url) if r.url.startswith("file:") else
                     None if r.url.startswith("data:") else self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def open(self, path: Path):
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        return self.page

    def check_clean(self) -> None:
        assert not self.errors, self.errors
        assert not self.requests, f"network requests: {self.requests}"
        assert not self.dialogs, f"a name ran as script: {self.dialogs}"


def _numbers(page, selector: str, column: int) -> list[str]:
    return page.eval_on_selector_all(f"{selector} tbody tr", f"rows => rows.map(r => r.cells[{column}].textContent)")


def test_index_table_sorting_switches_and_charts(browser, site, artifacts):
    w = Watched(browser)
    page = w.open(site / "index.html")
    table = "#main-table-synthetic"
    # pca under the HEST alpha: the tiny CNN and the encoder named like a script
    assert page.locator(f"{table} tbody tr").count() == 2
    encoders = _numbers(page, table, 1)
    assert sorted(encoders) == sorted(["test-tiny-cnn", EVIL])  # shown as text, never run
    assert page.locator(f"{table} thead th").all_inner_texts()[:3] == ["rank", "encoder", "TINY"]

    # clicking a column header sorts by it, clicking again reverses
    page.locator(f"{table} thead th", has_text="encoder").click()
    first = _numbers(page, table, 1)
    assert first == sorted(first, key=str.lower)
    page.locator(f"{table} thead th", has_text="encoder").click()
    assert _numbers(page, table, 1) == first[::-1]
    page.locator(f"{table} thead th", has_text="TINY").click()
    means = [float(t.split(" ± ")[0]) for t in _numbers(page, table, 2)]
    assert means == sorted(means, reverse=True)

    # the reducer switch changes the numbers
    before = _numbers(page, table, 2)
    page.locator("#section-synthetic .reducer-switch button", has_text="bpbooster-random").click()
    after = _numbers(page, table, 2)
    assert len(after) == 1 and after[0] not in before
    assert page.locator("#section-synthetic .reducer-switch button[aria-pressed='true']").inner_text() == "bpbooster-random"
    box = page.locator("#heatmap-synthetic").bounding_box()  # one encoder, one task: one modest cell, not a page-wide box
    assert box["height"] <= 200 and box["width"] <= 500, box
    # the protocol switch reaches every view: no booster run under the CV alpha, pca has both encoders again
    page.select_option("#protocol", label="CV α")
    assert page.locator("#main-synthetic .empty").is_visible()
    assert not page.locator("#heatmap-synthetic").is_visible()  # no blank box: a sentence instead
    note = page.locator("#heatmap-empty-synthetic")
    assert note.is_visible() and "No result sets of bpbooster-random under CV α" in note.inner_text()
    page.locator("#section-synthetic .reducer-switch button", has_text="pca").click()
    assert page.locator(f"{table} tbody tr").count() == 2 and _numbers(page, table, 2) != before
    page.locator("#mode button", has_text="per-sample").click()
    assert page.locator("#protocol-card tr.current").count() == 1

    # charts: the heatmap and the protocol-sensitivity slope chart are drawn by plotly
    assert page.locator("#heatmap-synthetic .main-svg").count() > 0
    assert page.locator("#heatmap-synthetic .hm image, #heatmap-synthetic .heatmaplayer").count() > 0
    assert page.locator("#slope-synthetic .scatterlayer .trace").count() >= 2
    assert page.locator("#slope-synthetic").bounding_box()["height"] <= 300  # two ranks: sized to them
    assert page.locator("#published-hest tbody tr").count() == 9
    page.select_option("#protocol", label="HEST α")
    page.locator("#mode button", has_text="pooled").click()
    page.screenshot(path=str(artifacts / "leaderboard-index.png"), full_page=True)
    w.check_clean()


def test_task_spatial_and_embedding_pages(browser, site, artifacts):
    w = Watched(browser)
    [task] = [p for p in site.glob("task-tiny-*.html")]
    page = w.open(task)
    assert page.locator("#gene-chart .main-svg").count() > 0
    assert page.locator("#gene-chart .scatterlayer .trace").count() == 2  # the first encoder, EVIL: EVIL and pca
    page.select_option("#encoder", "test-tiny-cnn")
    assert page.locator("#gene-chart .scatterlayer .trace").count() == 3  # identity, pca, booster
    assert page.locator("#gene-table tbody tr").count() == 20
    page.fill("#gene-search", "script")
    assert page.locator("#gene-table tbody tr:not(.hidden)").count() == 1
    assert page.locator("#gene-table tbody tr:not(.hidden) td").first.inner_text() == EVIL
    page.fill("#gene-search", "")
    assert page.locator("#runs-table tbody tr").count() >= 8
    _check_ranking_and_alpha(page, task)
    _check_gene_suggestions(page, task)
    page.screenshot(path=str(artifacts / "leaderboard-task.png"), full_page=True)

    [spatial] = [p for p in site.glob("spatial-tiny-*-test-tiny-cnn-*.html")]
    page = w.open(spatial)
    assert page.locator("#maps .panel:has(.main-svg)").count() == 1 + 3  # measured; identity, pca, booster (HEST alpha)
    assert page.locator("#maps .panel .scatterlayer .point").count() == 4 * 24  # every spot of the sample, each panel
    page.screenshot(path=str(artifacts / "leaderboard-spatial.png"), full_page=True)

    [emb] = list(site.glob("embeddings-*.html"))
    page = w.open(emb)
    assert page.locator("#embeddings .panel:has(.main-svg)").count() == 3
    assert page.input_value("#gene") == page_data(emb)["first_gene"]  # the best-predicted gene
    page.locator("#colour button", has_text="gene").click()
    page.locator("#layout button", has_text="tissue").click()
    assert page.locator("#embeddings .panel:has(.main-svg)").count() == 3
    page.screenshot(path=str(artifacts / "leaderboard-embeddings.png"), full_page=True)
    w.check_clean()


def _close(word: str, names: list[str]) -> list[str]:
    """What the page should suggest: Python's difflib, case-folded."""
    import difflib

    lower = {n.lower(): n for n in names}
    return [lower[x] for x in difflib.get_close_matches(word.lower(), list(lower))]


def _check_ranking_and_alpha(page, task: Path) -> None:
    """The ranking tables show the page data's ranks and verdicts; the alpha chart draws every sweep curve."""
    data = page_data(task)
    fp = page.eval_on_selector("#protocol", "s => s.value")
    mode = "pooled"
    view = data["rankings"][fp][mode]
    tables = page.locator("#rank-encoders table.ranking")
    reducers = [r for r in data["reducers"] if r in view["encoders"]]
    assert tables.count() == len(reducers)
    for t, red in enumerate(reducers):
        rows = view["encoders"][red]["rows"]
        cells = tables.nth(t).evaluate("t => Array.from(t.tBodies[0].rows).map(r => Array.from(r.cells).map(c => c.textContent))")
        assert [c[0] for c in cells] == [r["rank"] for r in rows] and [c[1] for c in cells] == [r["name"] for r in rows]
        for c, r in zip(cells, rows):
            if r["next"]:
                want = f"yes, from {r['next']['vs']}" if r["next"]["apart"] else f"not significant: {r['next']['reason']}"
                assert c[6] == want
    assert page.locator("#rank-reducers table.ranking tbody tr").count() == len(
        view["reducers"][page.eval_on_selector("#encoder", "s => s.value")]["rows"])
    per_curve = [2 + (c["hest"]["pcc"] is not None) + bool(c["cv"]) for c in data["sweeps"]]
    assert data["sweeps"] and page.locator("#alpha-chart .scatterlayer .trace").count() == sum(per_curve)
    assert page.eval_on_selector("#alpha-chart", "d => d.layout.xaxis.type") == "log"
    assert page.locator("#alpha-sentences li").count() == len(data["sweeps"])


def _check_gene_suggestions(page, task: Path) -> None:
    names = page.eval_on_selector_all("#gene-table tbody tr", "rows => rows.map(r => r.cells[0].textContent)")
    gene = next(n for n in names if re.fullmatch(r"G\d{3}", n))
    typo = gene[:2] + "O" + gene[3:]  # a letter O for a digit: no gene has it
    page.fill("#gene-search", typo)
    assert page.locator("#gene-table tbody tr:not(.hidden)").count() == 0
    note = page.locator("#gene-note")
    assert f"“{typo}” is not among this task's {len(names)} genes" in note.inner_text()
    want = _close(typo, names)
    assert want and note.locator("button.suggestion").all_inner_texts() == want
    note.locator("button.suggestion").first.click()
    assert page.input_value("#gene-search") == want[0]
    assert page.locator("#gene-table tbody tr:not(.hidden) td").first.inner_text() == want[0]
    page.fill("#gene-search", "zzzz")
    assert "No name is close to it." in page.locator("#gene-note").inner_text()
    page.fill("#gene-search", "")
    assert page.locator("#gene-note").inner_text() == ""


def _drawn(page) -> list[list[float | None]]:
    """The colour values of every panel drawn on the spatial page (plotly keeps a div's traces in ``.data``)."""
    return page.evaluate("Array.from(document.querySelectorAll('#maps .panel')).map(d => d.data[0].marker.color)")


def test_spatial_page_loads_one_slice_per_choice(browser, site, artifacts):
    """Opened from disk, the spatial page reads its first sample's spots and first gene only; choosing a gene
    loads that gene's slice, choosing a sample that sample's spots and gene, and draws the values they hold."""
    from stbench.leaderboard.slices import unpack_u16

    from tests.test_leaderboard import read_slice

    [spatial] = [p for p in site.glob("spatial-tiny-*-test-tiny-cnn-*.html")]
    data = page_data(spatial)
    w = Watched(browser)
    page = w.open(spatial)
    folder = site / "data" / data["folder"]

    def slice_files() -> list[str]:
        return [u.split("/data/", 1)[1] for u in w.files if "/data/spatial/" in u]

    def expect(sample: int, gene: int) -> None:
        s = data["samples"][sample]
        key = f"{data['folder']}/{s['dir']}/{data['gene_files'][gene]}"
        page.wait_for_selector(f"#maps[data-drawn='{key}']", timeout=10_000)
        _, values = read_slice(folder / s["dir"] / f"{data['gene_files'][gene]}.js")
        hest = [j for j, r in enumerate(data["runs"]) if r["protocol"] == data["default_protocol"]]
        want = [unpack_u16(values["m"], s["n_shown"])] + [unpack_u16(values["p"][j], s["n_shown"]) for j in hest]
        got = _drawn(page)
        assert len(got) == len(want) == 4  # measured; identity, pca, booster
        for g, v in zip(got, want):
            assert [x is None for x in g] == [math.isnan(x) for x in v]
            assert [x for x in g if x is not None] == pytest.approx([x for x in v if not math.isnan(x)], abs=1e-9)

    first = data["samples"][0]["dir"]
    best = data["first_gene"]  # the page opens on the best-predicted gene
    assert page.input_value("#gene") == data["genes"][best]
    assert slice_files() == [f"{data['folder']}/{first}/spots.js", f"{data['folder']}/{first}/{data['gene_files'][best]}.js"]
    expect(0, best)
    g = 3 if best != 3 else 4
    page.fill("#gene", data["genes"][g])
    expect(0, g)
    assert slice_files()[2:] == [f"{data['folder']}/{first}/{data['gene_files'][g]}.js"]
    page.select_option("#sample", "2")
    expect(2, g)
    third = data["samples"][2]["dir"]
    assert slice_files()[3:] == [f"{data['folder']}/{third}/spots.js", f"{data['folder']}/{third}/{data['gene_files'][g]}.js"]
    assert page.get_attribute("#csv-link", "href") == data["samples"][2]["csv"]
    evil = data["genes"].index(EVIL)  # the gene named like a script: its file is a slug, its name stays text
    page.fill("#gene", EVIL)
    expect(2, evil)
    assert slice_files()[5:] == [f"{data['folder']}/{third}/{data['gene_files'][evil]}.js"]
    assert EVIL in page.locator("#maps .panel .gtitle").first.text_content()
    page.select_option("#protocol", label="CV α")  # the same slice, other runs: nothing new to load
    page.wait_for_function("document.querySelectorAll('#maps .panel').length === 3")  # measured; identity, pca
    assert len(slice_files()) == 6
    # a name that is not among the task's genes: said so, with the close names; picking one draws it
    typo = data["genes"][best] + "x"
    page.fill("#gene", typo)
    page.press("#gene", "Enter")
    note = page.locator("#gene-note")
    assert f"“{typo}” is not among this task's {len(data['genes'])} genes" in note.inner_text()
    want = _close(typo, data["genes"])
    assert note.locator("button.suggestion").all_inner_texts() == want and data["genes"][best] in want
    note.locator("button.suggestion", has_text=data["genes"][best]).click()
    page.wait_for_selector(f"#maps[data-drawn$='/{data['gene_files'][best]}']", timeout=10_000)
    assert note.inner_text() == "" and page.input_value("#gene") == data["genes"][best]
    page.screenshot(path=str(artifacts / "leaderboard-spatial-slices.png"), full_page=True)
    w.check_clean()
