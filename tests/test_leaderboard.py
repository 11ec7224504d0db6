"""`bench leaderboard build|serve` on a store of real runs of the tiny synthetic task: the numbers shown equal
the catalog's, ranks and gains are right, the default variant is what the main views show, synthetic data is
labelled and kept apart, names are escaped, nothing points outside the site, the downloads hold the
catalog's rows and every page carries the protocol card."""

from __future__ import annotations

import base64
import json
import math
import re
import threading
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from stbench.cli import cli
from stbench.stores import Catalog

from tests._leaderboard import BOOSTER, EVIL, SECOND, evil_store, leaderboard_store, register_encoders


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    register_encoders()
    return leaderboard_store(tmp_path_factory)


@pytest.fixture(scope="module")
def site(store, tmp_path_factory):
    """The site with everything (synthetic included, the embedding view by UMAP): (folder, CLI output)."""
    out = tmp_path_factory.mktemp("site") / "site"
    r = CliRunner().invoke(cli, ["leaderboard", "build", "--store", str(store), "--out", str(out), "--include-synthetic"])
    assert r.exit_code == 0, r.output
    return out, " ".join(r.output.split())


@pytest.fixture(scope="module")
def summary(store):
    with Catalog(store / "catalog.duckdb", read_only=True) as cat:
        return cat.summary()


def page_data(path: Path, element_id: str = "stbench-data"):
    text = path.read_text()
    m = re.search(rf'<script type="application/json" id="{re.escape(element_id)}">(.*?)</script>', text, re.S)
    assert m, f"no {element_id} block in {path.name}"
    return json.loads(m.group(1))


def _task_page(out: Path) -> Path:
    [page] = [p for p in out.glob("task-*.html")]
    return page


def _per_sample(store: Path) -> dict[str, float]:
    """Per-sample PCC per run, computed independently: mean over genes per (fold, sample), over samples, over folds."""
    with Catalog(store / "catalog.duckdb", read_only=True) as cat:
        rows = cat._frame("SELECT run_id, fold, sample_id, pcc FROM sample_gene_results")
    per = (rows.filter(pl.col("pcc").is_not_nan()).group_by("run_id", "fold", "sample_id").agg(pl.col("pcc").mean())
           .group_by("run_id", "fold").agg(pl.col("pcc").mean()).group_by("run_id").agg(pl.col("pcc").mean()))
    return dict(per.iter_rows())


def _pca_default(summary: pl.DataFrame, encoder: str, alpha: str) -> dict:
    rows = [r for r in summary.iter_rows(named=True)
            if r["encoder"] == encoder and r["reducer"] == "pca" and r["alpha_rule"] == alpha
            and json.loads(r["reducer_options"]) == {"n_components": 256}]
    assert len(rows) == 1
    return rows[0]


# -- the build ------------------------------------------------------------------------------------------

def test_build_writes_every_page_and_says_what_it_wrote(site, summary):
    out, output = site
    assert f"from {len(summary)} result sets" in output and "tasks: TINY" in output
    assert "1 variants or older runs on task pages" in output  # the pca n_components=4 run
    for rel in ("index.html", "assets/plotly.min.js", "assets/app.js", "assets/slices.js", "assets/style.css",
                "data/results.csv"):
        assert (out / rel).is_file(), rel
    assert _task_page(out).exists()
    assert len(list(out.glob("spatial-*.html"))) == 2  # one per encoder
    assert len(list(out.glob("embeddings-*.html"))) == 1
    assert "embedding view: 3 layouts computed" in output  # raw, pca, booster: into the store's cache


def test_pages_are_self_contained(site):
    """No URL leaves the site: every src/href is relative (or an in-page anchor) and exists on disk."""
    out, _ = site
    for page in out.glob("*.html"):
        text = page.read_text()
        links = re.findall(r'(?:src|href)="([^"]*)"', text)
        assert links
        for link in links:
            assert not re.match(r"^[a-z]+:", link, re.I) or link == "data:,", (page.name, link)
            target = link.split("#")[0]
            if target and link != "data:,":
                assert (out / target).is_file(), (page.name, link)
        assert not re.search(r"(?:src|href)=\"(?:https?:)?//", text)
    assert "function" in (out / "assets/plotly.min.js").read_text()[:5000]  # the real plotly.js, copied


def test_main_table_shows_the_catalog_numbers_with_ranks(site, summary, store):
    out, _ = site
    data = page_data(out / "index.html")
    [sec] = data["sections"]
    assert sec["synthetic"] and sec["id"] == "synthetic"
    by_id = {r["run_id"]: r for r in summary.iter_rows(named=True)}
    per_sample = _per_sample(store)
    checked = 0
    for fp, modes in sec["main"].items():
        for mode, tables in modes.items():
            for reducer, table in tables.items():
                assert table["tasks"] == ["TINY"]
                for row in table["rows"]:
                    cell = row["cells"]["TINY"]
                    run = by_id[cell["run_id"]]
                    assert (run["protocol_fingerprint"], run["reducer"], run["encoder"]) == (fp, reducer, row["encoder"])
                    if mode == "pooled":
                        assert cell["mean"] == pytest.approx(run["pcc_mean"], rel=1e-12)
                        assert cell["std"] == pytest.approx(run["pcc_std"], rel=1e-12)
                    else:
                        assert cell["mean"] == pytest.approx(per_sample[cell["run_id"]], rel=1e-9)
                    assert row["avg"] == pytest.approx(cell["mean"])  # one task: the average is that task
                    checked += 1
                avgs = [r["avg"] for r in table["rows"]]
                assert [r["rank"] for r in table["rows"]] == [1 + sum(a > v for a in avgs) for v in avgs]
                assert avgs == sorted(avgs, reverse=True)
    assert checked == 2 * ((2 + 2 + 1) + (1 + 2))  # modes x (HEST: identity, pca x 2, booster; CV: identity, pca x 2)
    hest = data["default_protocol"]
    assert data["protocols"][0]["fingerprint"] == hest and data["protocols"][0]["label"] == "HEST α"
    assert data["default_reducer"] == "pca"


def test_main_views_use_the_default_variant_and_list_the_others(site, summary):
    out, _ = site
    data = page_data(out / "index.html")
    [sec] = data["sections"]
    hest = data["default_protocol"]
    pca_rows = {r["encoder"]: r for r in sec["main"][hest]["pooled"]["pca"]["rows"]}
    assert pca_rows["test-tiny-cnn"]["cells"]["TINY"]["run_id"] == _pca_default(summary, "test-tiny-cnn", "hest")["run_id"]
    assert pca_rows["test-tiny-cnn"]["cells"]["TINY"]["variant"] == ""
    booster = sec["main"][hest]["pooled"]["bpbooster-random"]["rows"][0]["cells"]["TINY"]
    assert "epochs=2" in booster["variant"]  # no run with the defaults: the newest variant, labelled
    runs = page_data(_task_page(out))["runs"]
    assert len(runs) == len(summary)
    [variant] = [r for r in runs if not r["shown"]]
    assert (variant["reducer"], variant["variant"]) == ("pca", "n_components=4")


def test_reducer_gain_over_pca(site):
    out, _ = site
    data = page_data(out / "index.html")
    [sec] = data["sections"]
    assert sec["reducers"] == ["identity", "pca", "bpbooster-random"]
    for fp, modes in sec["gain"].items():
        for mode, rows in modes.items():
            main = sec["main"][fp][mode]
            for row in rows:
                for reducer, value in row["values"].items():
                    cells = {r["encoder"]: r["cells"]["TINY"]["mean"] for r in main.get(reducer, {"rows": []})["rows"]}
                    assert value == cells.get(row["encoder"])
                for reducer, gain in row["gain"].items():
                    v = row["values"][reducer]
                    assert gain is None if v is None else gain == pytest.approx(v - row["values"]["pca"])
    rows = {r["encoder"]: r for r in sec["gain"][data["default_protocol"]]["pooled"]}
    assert rows[SECOND]["values"]["bpbooster-random"] is None and rows[SECOND]["gain"]["bpbooster-random"] is None


def test_protocol_sensitivity_ranks_moves(site, summary):
    out, _ = site
    data = page_data(out / "index.html")
    [sec] = data["sections"]
    labels = {p["fingerprint"]: p["label"] for p in data["protocols"]}
    [cmp] = [c for c in sec["sensitivity"] if c["from"]["mode"] == c["to"]["mode"] == "pooled"
             and c["from"]["protocol"] != c["to"]["protocol"]]
    assert (labels[cmp["from"]["protocol"]], labels[cmp["to"]["protocol"]]) == ("HEST α", "CV α")

    def ranks(alpha, key, **where):  # among what exists under both alphas (the default pca variant only)
        rows = [r for r in summary.iter_rows(named=True) if all(r[k] == v for k, v in where.items())
                and json.loads(r["reducer_options"]) != {"n_components": 4}]
        both = {r[key] for r in rows if r["alpha_rule"] == "hest"} & {r[key] for r in rows if r["alpha_rule"] == "cv"}
        mine = [r for r in rows if r["alpha_rule"] == alpha and r[key] in both]
        return {r[key]: 1 + sum(o["pcc_mean"] > r["pcc_mean"] for o in mine) for r in mine}

    got = {r["reducer"]: (r["rank_a"], r["rank_b"], r["move"]) for r in cmp["reducer_rows"]}
    a, b = ranks("hest", "reducer", encoder="test-tiny-cnn"), ranks("cv", "reducer", encoder="test-tiny-cnn")
    assert set(got) == {"identity", "pca"} and got == {k: (a[k], b[k], a[k] - b[k]) for k in a}
    assert {r["encoder"] for r in cmp["reducer_rows"]} == {"test-tiny-cnn"}  # the second has one reducer under both
    got = {r["encoder"]: (r["rank_a"], r["rank_b"], r["move"]) for r in cmp["encoder_rows"]}
    a, b = ranks("hest", "encoder", reducer="pca"), ranks("cv", "encoder", reducer="pca")
    assert set(got) == {"test-tiny-cnn", SECOND} and got == {k: (a[k], b[k], a[k] - b[k]) for k in a}
    assert any(c["from"]["mode"] == "pooled" and c["to"]["mode"] == "per-sample" for c in sec["sensitivity"])


def test_synthetic_is_labelled_everywhere_and_left_out_by_default(site, store, tmp_path):
    out, _ = site
    for page in out.glob("*.html"):
        text = page.read_text()
        assert 'class="badge badge-synthetic">SYNTHETIC' in text, page.name
        assert "they say nothing about real tissue" in text, page.name
    r = CliRunner().invoke(cli, ["leaderboard", "build", "--store", str(store), "--out", str(tmp_path / "s")])
    assert r.exit_code != 0 and "--include-synthetic" in r.output and "only synthetic" in r.output
    # a real task beside the synthetic one: its own section; the synthetic runs are left out, and it says so
    import duckdb

    mixed = evil_store(store, tmp_path / "mixed")
    with duckdb.connect(str(mixed / "catalog.duckdb")) as con:
        con.execute("UPDATE runs SET synthetic = false WHERE task = ? || ' task'", [EVIL])
    r = CliRunner().invoke(cli, ["leaderboard", "build", "--store", str(mixed), "--out", str(tmp_path / "m"), "--no-embeddings"])
    assert r.exit_code == 0 and "synthetic result set(s) left out" in " ".join(r.output.split())
    data = page_data(tmp_path / "m" / "index.html")
    assert [s["id"] for s in data["sections"]] == ["real"] and data["sections"][0]["tasks"] == [EVIL + " task"]
    assert "synthetic result set(s) left out" in (tmp_path / "m" / "index.html").read_text()
    assert not list((tmp_path / "m").glob("task-tiny-*.html"))
    r = CliRunner().invoke(cli, ["leaderboard", "build", "--store", str(mixed), "--out", str(tmp_path / "m"), "--no-embeddings",
                                 "--include-synthetic"])
    data = page_data(tmp_path / "m" / "index.html")
    assert [(s["id"], s["synthetic"]) for s in data["sections"]] == [("real", False), ("synthetic", True)]
    assert "TINY" not in data["sections"][0]["tasks"] and data["sections"][1]["tasks"] == ["TINY"]


def test_protocol_card_on_every_page(site, summary):
    out, _ = site
    fps = set(summary["protocol_fingerprint"])
    weights = set(summary["weights_fingerprint"])
    for page in out.glob("*.html"):
        text = page.read_text()
        card = text[text.index('id="protocol-card"'):]
        for field in ("alpha rule", "reducer options", "genes", "folds", "seed", "weights fingerprints",
                      "data version", "stbench version", "runs finished", "site built"):
            assert field in card, (page.name, field)
        assert any(fp in card for fp in fps) and any(w in card for w in weights), page.name
        assert "100 / (n_features × n_genes)" in card
    index = (out / "index.html").read_text()
    assert all(fp in index for fp in fps) and "TINY: 3" in index  # both protocols, 3 folds


def test_csv_downloads_hold_the_catalog_rows(site, summary, store):
    out, _ = site
    results = pl.read_csv(out / "data/results.csv")
    assert sorted(results["run_id"]) == sorted(summary["run_id"])
    merged = results.join(summary.select("run_id", pl.col("pcc_mean").alias("cat")), on="run_id")
    assert (merged["pcc_mean"] - merged["cat"]).abs().max() < 1e-12
    with Catalog(store / "catalog.duckdb", read_only=True) as cat:
        genes = cat.gene_table()
        n_sample = cat.con.execute("SELECT count(*) FROM sample_gene_results").fetchall()[0][0]
        n_folds = cat.con.execute("SELECT count(*) FROM fold_results").fetchall()[0][0]
        spots = cat.spot_predictions([r for (r,) in cat.rows("SELECT run_id FROM runs")])
    csv_genes = pl.read_csv(out / "data/genes.csv")
    assert len(csv_genes) == len(genes)
    assert csv_genes.sort("run_id", "fold", "gene")["pcc"].to_list() == pytest.approx(genes["pcc"].to_list(), nan_ok=True)
    assert len(pl.read_csv(out / "data/sample_genes.csv")) == n_sample
    assert len(pl.read_csv(out / "data/folds.csv")) == n_folds
    published = pl.read_csv(out / "data/published.csv")
    assert set(published["table"]) == {"hest-readme-2024-08-30", "bpbooster-table3"} and published["source"].null_count() == 0
    pages = list(out.glob("spatial-*.html"))
    for page in pages:  # the spatial CSVs: one per sample, a row per spot and gene, a column per run shown, the stored values
        data = page_data(page)
        df = pl.concat([pl.read_csv(out / s["csv"]) for s in data["samples"]])
        assert set(df["sample_id"]) == {s["id"] for s in data["samples"]}
        run = data["runs"][0]["run_id"]
        stored = spots.filter(pl.col("run_id") == run)
        assert len(df) == len(stored) and len(df.columns) == 6 + len(data["runs"])
        col = next(c for c in df.columns if c.endswith(run))
        both = df.join(stored, on=["sample_id", "barcode", "gene"])
        assert len(both) == len(df) and (both[col] - both["y_pred"]).abs().max() < 1e-3
        assert (both["measured"] - both["y_true"]).abs().max() < 1e-3
    assert len(pages) == 2


def test_task_page_per_gene_pcc(site, store):
    out, _ = site
    data = page_data(_task_page(out))
    assert data["task"] == "TINY" and data["synthetic"]
    with Catalog(store / "catalog.duckdb", read_only=True) as cat:
        genes = cat.gene_table()
    for fp, modes in data["genes"].items():
        for enc, by_reducer in modes["pooled"].items():
            for reducer, values in by_reducer.items():
                [run] = [r for r in data["runs"] if r["shown"] and (r["protocol_fingerprint"], r["encoder"], r["reducer"])
                         == (fp, enc, reducer)]
                mine = genes.filter(pl.col("run_id") == run["run_id"]).group_by("gene").agg(pl.col("pcc").mean())
                assert set(values) == set(mine["gene"])
                for gene, v in mine.iter_rows():
                    assert values[gene] == pytest.approx(v) if not math.isnan(v) else values[gene] is None
    assert 'id="gene-search"' in _task_page(out).read_text()


def read_slice(path: Path) -> tuple[str, dict]:
    """A slice file's key and data: the file is one call, ``stbenchSlice("<key>", {...});``."""
    m = re.fullmatch(r'stbenchSlice\(("[^"]*"),(.*)\);\n', path.read_text(), re.S)
    assert m, path
    return json.loads(m.group(1)), json.loads(m.group(2))


def test_spatial_maps_show_the_stored_predictions(site, store):
    """A slice holds the stored values to within the 16-bit step; its key is its path; the page names the first
    sample's slices as scripts and every other slice exists."""
    from stbench.leaderboard.slices import unpack_u16

    out, _ = site
    [page] = [p for p in out.glob("spatial-*.html") if "-b-" not in p.name]
    data = page_data(page)
    assert data["encoder"] == "test-tiny-cnn" and data["reducers"][:2] == ["identity", "pca"]
    assert {s["id"] for s in data["samples"]} == {"S0", "S1", "S2"}  # every sample is a test sample once
    with Catalog(store / "catalog.duckdb", read_only=True) as cat:
        spots = cat.spot_predictions([r for (r,) in cat.rows("SELECT run_id FROM runs")], samples=["S1"],
                                     genes=[data["genes"][3]])
    i = [s["id"] for s in data["samples"]].index("S1")
    sample = data["samples"][i]
    folder = out / "data" / data["folder"] / sample["dir"]
    key, values = read_slice(folder / f"{data['gene_files'][3]}.js")
    assert key == f"{data['folder']}/{sample['dir']}/{data['gene_files'][3]}"
    _, xy = read_slice(folder / "spots.js")
    n = sample["n_shown"]
    for j, run in enumerate(data["runs"]):
        mine = spots.filter(pl.col("run_id") == run["run_id"]).sort("barcode")
        truth, pred = unpack_u16(values["m"], n), unpack_u16(values["p"][j], n)
        step_t, step_p = (values["m"][1] - values["m"][0]) / 65534, (values["p"][j][1] - values["p"][j][0]) / 65534
        assert np.abs(truth - mine["y_true"].to_numpy()).max() <= step_t / 2 + 1e-6
        assert np.abs(pred - mine["y_pred"].to_numpy()).max() <= step_p / 2 + 1e-6
        assert pcc_of(store, run["run_id"], "S1", data["genes"][3]) == pytest.approx(data["pcc"][j][i][3], abs=1e-4)
    x = np.frombuffer(base64.b64decode(xy["x"]), dtype="<f4")
    assert x.tolist() == pytest.approx(mine["x"].to_list())
    text = page.read_text()
    first = f"data/{data['folder']}/{data['samples'][0]['dir']}"
    assert re.findall(r'<script src="(data/[^"]+)"', text) == [f"{first}/spots.js", f"{first}/{data['gene_files'][0]}.js"]
    for s in data["samples"]:  # every slice the page can ask for
        for name in ["spots", *data["gene_files"]]:
            assert read_slice(out / "data" / data["folder"] / s["dir"] / f"{name}.js")[0].endswith(f"/{s['dir']}/{name}")


def test_slice_values_round_trip_within_half_a_step():
    from stbench.leaderboard.slices import pack_u16, unpack_u16

    rng = np.random.default_rng(0)
    v = rng.normal(2, 3, size=5000).astype(np.float32)
    v[::7] = np.nan
    packed = pack_u16(v)
    back = unpack_u16(packed, len(v))
    assert np.array_equal(np.isnan(back), np.isnan(v))
    step = (packed[1] - packed[0]) / 65534
    assert np.nanmax(np.abs(back - v)) <= step / 2 * (1 + 1e-6)
    assert np.nanmin(back) == np.nanmin(v) and np.nanmax(back) == pytest.approx(np.nanmax(v), abs=1e-6)
    assert pack_u16(np.full(3, np.nan)) is None and np.isnan(unpack_u16(None, 3)).all()
    assert unpack_u16(pack_u16(np.full(4, 1.5)), 4).tolist() == [1.5] * 4  # a constant: exact


def pcc_of(store: Path, run_id: str, sample: str, gene: str) -> float:
    with Catalog(store / "catalog.duckdb", read_only=True) as cat:
        return cat.rows("SELECT avg(pcc) FROM sample_gene_results WHERE run_id=? AND sample_id=? AND gene=?",
                        [run_id, sample, gene])[0][0]


def test_first_load_stays_small(site, store):
    """What a page reads at open (its HTML and the files it names, plotly.js excepted) is bounded by what it shows
    first, not by all it can show: a spatial page names its first sample's spots and first gene only."""
    from stbench.leaderboard.site import first_load

    out, _ = site
    shared = sum((out / "assets" / f).stat().st_size for f in ("app.js", "slices.js", "style.css"))
    for page in out.glob("*.html"):
        data = page_data(page)
        weight, files = first_load(out, page.name)
        if data["page"] == "spatial":
            n_runs, n_samples, n_genes = len(data["runs"]), len(data["samples"]), len(data["genes"])
            n0 = data["samples"][0]["n_shown"]
            # the page: ~8 KB of text and protocol card, and ~10 bytes per PCC value; the slices: 2 bytes a value
            # (base64: 8/3), float32 coordinates (16/3 each), ~500 bytes of keys and ranges
            bound = shared + 8_000 + 10 * n_runs * n_samples * n_genes + 3 * (n_runs + 1) * n0 + 11 * n0 + 800
            assert len([f for f in files if f.startswith("data/")]) == 2
            everything = sum(p.stat().st_size for p in (out / "data" / data["folder"]).rglob("*.js"))
            assert weight - (page.stat().st_size + shared) < everything / 10  # 2 of 63 slices
        elif data["page"] == "embeddings":
            n, reps = data["n_shown"], len(data["reps"])
            bound = shared + 10_000 + n * (reps * 20 + 16 + 7 * len(data["genes"]))
        else:  # index and task pages: tables of per-run and per-gene numbers
            n_runs = len(data.get("runs") or [None] * 9)
            bound = shared + 32_000 + 2_000 * n_runs
        assert weight <= bound, (page.name, weight, bound)


def test_embedding_view_projects_raw_pca_and_booster(site):
    out, _ = site
    [page] = out.glob("embeddings-*.html")
    data = page_data(page)
    assert data["encoder"] == "test-tiny-cnn" and data["method"] == "umap"
    assert [r["name"] for r in data["reps"]] == ["raw", "pca", "bpbooster-random"]
    n = data["n_shown"]
    assert n == 24 and len(data["spot_x"]) == n
    for rep in data["reps"]:
        assert len(rep["x"]) == len(rep["y"]) == len(rep["cluster"]) == n
        assert set(rep["cluster"]) <= set(range(data["k"])) and all(v is not None for v in rep["x"])
    assert len(data["genes"]) == 20 and all(len(v) == n for v in data["genes"].values())
    assert "fitted at build time" in page.read_text()


def test_a_rebuild_after_one_new_run_reuses_the_rest(site, store, tmp_path, monkeypatch):
    """The layouts sit in the store's cache: after one new run (a newer BP-Booster variant, which the views then
    show) the rebuild computes that one layout and takes the others from the cache, byte for byte; the spatial
    folder of the encoder without the run is taken from the previous site. A layout computed again from an empty
    cache equals the cached one. (t-SNE: the same cache as UMAP, without compiling UMAP in this process.)"""
    import shutil

    from stbench.leaderboard import layouts
    from stbench.leaderboard.site import build_site
    from stbench.protocol import Protocol
    from stbench.runner import ReducerChoice, run_task
    from stbench.stores import Store
    from stbench.tasks import open_task

    out, _ = site
    copy, old_site = tmp_path / "store", tmp_path / "site"
    shutil.copytree(store, copy)
    shutil.copytree(out, old_site)
    computed: list[tuple[int, int]] = []
    real = layouts.compute_layout
    monkeypatch.setattr(layouts, "compute_layout", lambda Z, **kw: computed.append(Z.shape) or real(Z, **kw))

    def build():  # layouts computed in this process (no child), for the spy
        return build_site(copy, old_site, include_synthetic=True, projection="tsne", background=False)

    first = build()
    before = page_data(next(old_site.glob("embeddings-*.html")))
    assert len(computed) == 3 and before["method"] == "tsne" and first.spatial_reused == 2  # nothing new for the maps
    with Store(copy) as st:
        run_task(open_task("tiny", store.parent / "data"), "test-tiny-cnn",
                 [ReducerChoice("bpbooster-random", {**BOOSTER, "epochs": 1})], Protocol.from_options(), st, device="cpu")
    computed.clear()
    report = build()
    after = page_data(next(old_site.glob("embeddings-*.html")))
    assert report.layouts_computed == ["TINY: bpbooster-random"] and len(computed) == 1
    assert sorted(report.layouts_reused) == ["TINY: pca", "TINY: raw"]
    old, new = ({r["name"]: json.dumps(r) for r in d["reps"]} for d in (before, after))
    assert new["raw"] == old["raw"] and new["pca"] == old["pca"] and new["bpbooster-random"] != old["bpbooster-random"]
    assert after["layout_keys"]["raw"] == before["layout_keys"]["raw"]
    assert (report.spatial_built, report.spatial_reused) == (1, 1)  # the encoder with the new run, the other
    [kept] = [p for p in old_site.glob("spatial-*.html") if "-b-" in p.name]
    folder = old_site / "data" / page_data(kept)["folder"]
    assert all(f.read_bytes() == (out / f.relative_to(old_site)).read_bytes() for f in folder.rglob("*") if f.is_file())

    shutil.rmtree(copy / "cache")  # the same layouts computed again
    computed.clear()
    report = build()
    again = page_data(next(old_site.glob("embeddings-*.html")))
    assert len(computed) == 3 and report.layouts_reused == []
    assert json.dumps(again["reps"]) == json.dumps(after["reps"]) and again["layout_keys"] == after["layout_keys"]
    assert report.spatial_reused == 2  # nothing changed


def test_published_rows_are_labelled_and_never_ranked(site):
    out, _ = site
    text = (out / "index.html").read_text()
    assert text.count("badge-published") >= 9 + 18  # every published row carries the badge
    assert "mahmoodlab/HEST README" in text and "Biology-Guided Prototype Booster" in text
    data = page_data(out / "index.html")
    ours = {r["encoder"] for s in data["sections"] for t in s["main"].values() for m in t.values()
            for table in m.values() for r in table["rows"]}
    assert ours == {"test-tiny-cnn", SECOND}


def test_names_are_escaped(store, tmp_path):
    bad = evil_store(store, tmp_path / "evil")
    out = tmp_path / "site"
    r = CliRunner().invoke(cli, ["leaderboard", "build", "--store", str(bad), "--out", str(out), "--include-synthetic",
                                 "--no-embeddings"])
    assert r.exit_code == 0, r.output
    pages = list(out.glob("*.html"))
    assert len(pages) >= 4
    escaped_html = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&amp;&#x27;"
    seen_html = seen_json = False
    for page in pages:
        text = page.read_text()
        assert "<script>alert" not in text and "alert(1)</script>" not in text, page.name
        assert re.fullmatch(r"[a-z0-9-]+\.html", page.name)
        seen_html |= escaped_html in text
        seen_json |= "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e\\\"\\u0026'" in text
    assert seen_html and seen_json
    data = page_data(out / "index.html")  # the names survive the round trip intact
    assert EVIL in {r["encoder"] for s in data["sections"] for r in s["main"][data["default_protocol"]]["pooled"]["pca"]["rows"]}
    assert EVIL in {r for s in data["sections"] for r in s["reducers"]}
    assert any(t.startswith(EVIL) for t in data["task_pages"])
    genes = [g for p in out.glob("task-*.html") for fp in page_data(p)["genes"].values()
             for enc in fp["pooled"].values() for red in enc.values() for g in red]
    assert EVIL in genes


# -- errors, rebuilds, serving -----------------------------------------------------------------------------

def test_errors_say_what_to_do(tmp_path):
    r = CliRunner().invoke(cli, ["leaderboard", "build", "--store", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "bench run" in r.output
    Catalog(tmp_path / "empty" / "catalog.duckdb").close()
    r = CliRunner().invoke(cli, ["leaderboard", "build", "--store", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "no complete runs" in r.output and "run `bench run` first" in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["leaderboard", "serve", "--no-build", "--out", str(tmp_path / "nothing")])
    assert r.exit_code != 0 and "bench leaderboard build" in r.output


def test_rebuild_replaces_its_own_files_only(store, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    args = ["leaderboard", "build", "--store", str(store), "--include-synthetic", "--no-embeddings", "--reducer", "identity"]
    r = CliRunner().invoke(cli, [*args, "--out", str(foreign)])
    assert r.exit_code != 0 and "not empty" in r.output and (foreign / "notes.txt").read_text() == "mine"
    out = tmp_path / "site"
    assert CliRunner().invoke(cli, [*args, "--out", str(out)]).exit_code == 0
    (out / "task-stale.html").write_text("left by the user")
    (out / "index.html").write_text("stale")
    assert CliRunner().invoke(cli, [*args, "--out", str(out)]).exit_code == 0
    assert (out / "task-stale.html").exists() and page_data(out / "index.html")["default_reducer"] == "identity"
    r = CliRunner().invoke(cli, [*args[:-2], "--reducer", "umap", "--out", str(out)])
    assert r.exit_code != 0 and "no result sets with that reducer" in r.output


def test_spatial_csvs_can_be_left_out(store, tmp_path):
    out = tmp_path / "site"
    r = CliRunner().invoke(cli, ["leaderboard", "build", "--store", str(store), "--include-synthetic", "--no-embeddings",
                                 "--no-spatial-csv", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert not list((out / "data" / "spatial").rglob("*.csv")) and list((out / "data" / "spatial").rglob("*.js"))
    for page in out.glob("spatial-*.html"):
        assert "--no-spatial-csv" in page.read_text() and all(s["csv"] is None for s in page_data(page)["samples"])


def test_a_folder_holding_only_debris_is_built_into(store, tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / ".index.html.1a2b3c4d.tmp").write_text("left by a killed writer")
    r = CliRunner().invoke(cli, ["leaderboard", "build", "--store", str(store), "--include-synthetic", "--no-embeddings",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "index.html").exists() and not (out / ".index.html.1a2b3c4d.tmp").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # built next to it, swapped in, nothing left over

def test_serve_answers_on_localhost(site):
    from stbench.leaderboard import make_server

    out, _ = site
    server = make_server(out, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as resp:  # noqa: S310
            assert resp.status == 200 and b"stbench leaderboard" in resp.read()
    finally:
        server.shutdown()
        server.server_close()


def test_cli_import_stays_light():
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from stbench.cli import cli; "
            "r = CliRunner().invoke(cli, ['leaderboard', '--help']); assert r.exit_code == 0, r.output; "
            "heavy = [m for m in ('torch', 'scanpy', 'duckdb', 'polars', 'plotly', 'sklearn') if m in sys.modules]; "
            "assert not heavy, heavy; print(r.output)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "build" in out.stdout and "serve" in out.stdout


def test_protocol_labels_and_tied_ranks():
    from stbench.leaderboard.data import protocol_label, rank_desc

    assert protocol_label({"alpha": "hest", "solver": "lsqr", "genes": "task", "seed": 1}) == "HEST α"
    assert protocol_label({"alpha": "cv", "solver": "exact", "genes": "task", "seed": 1}) == "CV α"
    assert protocol_label({"alpha": "hest", "solver": "exact", "genes": "file", "gene_list": ["A", "B"],
                           "panel": "pam50", "intercept": True, "seed": 2}) == "HEST α · solver exact · genes PAM50 (2) · intercept · seed 2"
    assert rank_desc({"a": 0.5, "b": 0.7, "c": 0.5, "d": None}) == {"a": 2, "b": 1, "c": 2, "d": None}


def test_a_random_weight_control_is_its_own_labelled_row(store, tmp_path):
    """Runs of the same encoder with random weights (fingerprint random:seedN) are never shown as, or ranked
    with, the pretrained encoder's: they get their own row, named '... (random weights)'."""
    import shutil

    import duckdb
    from stbench.leaderboard.data import load_leaderboard

    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    con = duckdb.connect(str(copy / "catalog.duckdb"))
    con.execute("UPDATE runs SET weights_fingerprint = 'random:seed0-timm1.0-torch2.14' WHERE encoder = ?", [SECOND])
    con.close()
    board = load_leaderboard(copy, include_synthetic=True)
    names = {(r["encoder"], r["encoder_name"]) for r in board.runs}
    assert names == {("test-tiny-cnn", "test-tiny-cnn"), (f"{SECOND} (random weights)", SECOND)}
