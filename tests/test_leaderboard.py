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
    # modes x (HEST: identity, pca x 2, booster; CV: identity, pca x 2; sweep: identity, pca)
    assert checked == 2 * ((2 + 2 + 1) + (1 + 2) + 2)
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
    assert set(published["table"]) == {"hest-readme-2024-08-30", "bpbooster-table3", "bpbooster-methods"}
    assert published["source"].null_count() == 0 and published["value"].null_count() == 0
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
    g = data["first_gene"]  # the best-predicted gene (test_views_open_on_the_best_predicted_gene)
    assert re.findall(r'<script src="(data/[^"]+)"', text) == [f"{first}/spots.js", f"{first}/{data['gene_files'][g]}.js"]
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
    assert protocol_label({"alpha": "sweep:1e-06:1e+08:29", "solver": "exact", "dtype": "float64", "intercept": False,
                           "genes": "task", "seed": 1}) == "CV α of sweep 1e-06..1e+08 (29)"
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


# -- issue 13: alpha sweeps, the evidence behind rankings, published methods, site details --------------------------

def _fold_gene(store: Path, run_ids: list[str]) -> dict[str, dict[tuple[int, str], float]]:
    with Catalog(store / "catalog.duckdb", read_only=True) as cat:
        rows = cat._frame("SELECT run_id, fold, gene, pcc FROM gene_results")
    out: dict[str, dict[tuple[int, str], float]] = {r: {} for r in run_ids}
    for rid, fold, gene, pcc in rows.iter_rows():
        if rid in out:
            out[rid][(fold, gene)] = pcc
    return out


def test_alpha_sensitivity_curves_are_the_stored_sweep(site, store):
    """Each sweep run's curve: at each swept alpha the mean over folds of the fold's mean PCC over genes; HEST's
    point at 100 / (n_features x n_genes) per fold; the CV choice per fold; on the plateau when within 0.002."""
    from tests._leaderboard import SWEEP

    out, _ = site
    page = _task_page(out)
    data = page_data(page)
    with Catalog(store / "catalog.duckdb", read_only=True) as cat:
        sweep = cat._frame("SELECT run_id, fold, gene, alpha, pcc FROM alpha_sweep")
        folds = cat._frame("SELECT run_id, fold, n_features, n_genes, alpha FROM fold_results")
        runs = cat._frame("SELECT run_id, encoder, reducer, alpha_rule FROM runs")
    swept = runs.filter(pl.col("alpha_rule").str.starts_with("sweep:"))
    assert sorted(swept["reducer"]) == ["identity", "pca"]
    assert sorted((c["encoder"], c["reducer"], c["run_id"]) for c in data["sweeps"]) == sorted(
        (e, r, i) for i, e, r, _ in swept.iter_rows())
    _, lo, hi, n = SWEEP.split(":")
    grid = np.logspace(np.log10(float(lo)), np.log10(float(hi)), int(n))
    text = page.read_text()
    for c in data["sweeps"]:
        mine = sweep.filter(pl.col("run_id") == c["run_id"])
        fr = folds.filter(pl.col("run_id") == c["run_id"]).sort("fold")
        fold_ids = fr["fold"].to_list()

        def at(fold: int, alpha: float, mine: pl.DataFrame = mine) -> float:  # the fold's mean over its finite genes
            v = mine.filter((pl.col("fold") == fold) & ((pl.col("alpha") / alpha - 1).abs() < 1e-9))["pcc"].to_numpy()
            assert len(v), (fold, alpha)
            return float(np.nanmean(v))

        assert all(any(abs(a / g - 1) < 1e-9 for a in c["alphas"]) for g in grid)  # every swept alpha is drawn
        for a, v in zip(c["alphas"], c["pcc"]):
            assert v == pytest.approx(np.mean([at(f, a) for f in fold_ids]), abs=1e-12)
        hest = [100.0 / (nf * ng) for nf, ng in zip(fr["n_features"], fr["n_genes"])]
        hest_pcc = float(np.mean([at(f, a) for f, a in zip(fold_ids, hest)]))
        assert c["hest"]["alphas"] == pytest.approx(hest) and c["hest"]["pcc"] == pytest.approx(hest_pcc, abs=1e-12)
        peak = max(max(c["pcc"]), hest_pcc)
        assert c["peak"]["pcc"] == pytest.approx(peak) and c["on_plateau"] == (peak - hest_pcc <= 0.002)
        assert [(x["fold"], x["alpha"]) for x in c["cv"]] == list(zip(fold_ids, fr["alpha"].to_list()))
        assert c["cv_pcc"] == pytest.approx(np.mean([at(f, a) for f, a in zip(fold_ids, fr["alpha"])]))
        li = re.search(rf'<li data-run="{c["run_id"]}" class="(on|off)">([^<]*)</li>', text)
        assert li and li.group(1) == ("on" if c["on_plateau"] else "off")
        assert ("on the plateau" if c["on_plateau"] else "off the plateau") in li.group(2)
        assert f"peak {peak:.4f}" in li.group(2) and f"gives {hest_pcc:.4f}" in li.group(2)
    assert 'id="alpha-chart"' in text and 'id="alpha-none"' not in text


def _holm(p: list[float]) -> list[float]:
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def _check_rankings(data: dict, fold_gene: dict, *, n_folds: int) -> list[bool]:
    """Recompute every ranking of the task page independently; returns the 'told apart' flags seen."""
    from scipy.stats import wilcoxon

    seen = []
    for fp, modes in data["rankings"].items():
        shown = [r for r in data["runs"] if r["shown"] and r["protocol_fingerprint"] == fp]
        rk = modes["pooled"]
        pairs = []
        for key, name_key, group in (("encoders", "encoder", "reducer"), ("reducers", "reducer", "encoder")):
            for value, ranking in rk[key].items():
                mine = sorted([r for r in shown if r[group] == value], key=lambda r: -r["scores"]["pooled"]["mean"])
                assert [x["name"] for x in ranking["rows"]] == [r[name_key] for r in mine]
                pairs += [(ranking, i, mine[i]["run_id"], mine[i + 1]["run_id"]) for i in range(len(mine) - 1)]
        raw = []
        for ranking, i, a, b in pairs:
            da, db = fold_gene[a], fold_gene[b]
            keys = [k for k in da if k in db and not math.isnan(da[k]) and not math.isnan(db[k])]
            d = np.array([da[k] - db[k] for k in keys])
            nxt = ranking["rows"][i]["next"]
            assert nxt["n"] == len(d) and nxt["mean_diff"] == pytest.approx(d.mean())
            half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))  # the bootstrap interval is about the normal one
            assert nxt["ci"][0] == pytest.approx(d.mean() - half, abs=0.3 * half)
            assert nxt["ci"][1] == pytest.approx(d.mean() + half, abs=0.3 * half)
            per_fold = [np.mean([da[k] - db[k] for k in keys if k[0] == f]) for f in sorted({k[0] for k in keys})]
            assert nxt["fold_diffs"] == pytest.approx(per_fold) and len(per_fold) == n_folds
            raw.append(wilcoxon(d).pvalue)
        adjusted = _holm(raw)
        for (ranking, i, _, _), p, q in zip(pairs, raw, adjusted):
            nxt = ranking["rows"][i]["next"]
            assert nxt["p"] == pytest.approx(p) and nxt["p_holm"] == pytest.approx(q)
            same_sign = all(np.sign(x) == np.sign(nxt["mean_diff"]) for x in nxt["fold_diffs"])
            want = bool(q < 0.05 and not (nxt["ci"][0] <= 0 <= nxt["ci"][1]) and n_folds >= 3 and same_sign)
            assert nxt["apart"] is want, nxt
            seen.append(want)
        for ranking in [*rk["encoders"].values(), *rk["reducers"].values()]:  # rank ranges: chains of ties
            rows, i = ranking["rows"], 0
            while i < len(rows):
                j = i
                while j + 1 < len(rows) and not rows[j]["next"]["apart"]:
                    j += 1
                for k in range(i, j + 1):
                    assert rows[k]["rank"] == (str(i + 1) if i == j else f"{i + 1}–{j + 1}")
                i = j + 1
    return seen


def test_rankings_mark_neighbours_that_cannot_be_told_apart(site, store):
    out, _ = site
    data = page_data(_task_page(out))
    fold_gene = _fold_gene(store, [r["run_id"] for r in data["runs"]])
    seen = _check_rankings(data, fold_gene, n_folds=3)
    assert True in seen and False in seen  # the tiny store has both


def test_kendall_tau_between_the_alpha_rules(site):
    out, _ = site
    data = page_data(_task_page(out))
    labels = {p["fingerprint"]: p["label"] for p in data["protocols"]}
    got = {(labels[t["from"]], labels[t["to"]], t["mode"]): t for t in data["taus"]}
    sweep_label = next(lab for lab in labels.values() if lab.startswith("CV α of sweep"))
    assert set(got) == {("HEST α", to, m) for to in ("CV α", sweep_label) for m in ("pooled", "per-sample")}
    for t in data["taus"]:
        def scores(fp, t=t):
            return {f"{r['encoder']} · {r['reducer']}": r["scores"][t["mode"]]["mean"] for r in data["runs"]
                    if r["shown"] and r["protocol_fingerprint"] == fp}
        a, b = scores(t["from"]), scores(t["to"])
        keys = sorted(set(a) & set(b))
        assert t["entries"] == keys and t["n"] == len(keys)
        conc = sum(np.sign(a[x] - a[y]) * np.sign(b[x] - b[y]) for i, x in enumerate(keys) for y in keys[i + 1:])
        assert t["tau"] == pytest.approx(conc / (len(keys) * (len(keys) - 1) / 2))  # no ties among these scores
    assert got[("HEST α", "CV α", "pooled")]["n"] == 3 and got[("HEST α", sweep_label, "pooled")]["n"] == 2
    assert "Kendall τ between the ranking under" in _task_page(out).read_text()


def test_two_folds_never_separate_and_no_sweep_says_how(store, tmp_path):
    """A store with two folds: every neighbour pair is 'not significant' whatever its p, ranks become ranges; without
    sweep runs the task page says which command stores them."""
    import shutil

    import duckdb

    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    with duckdb.connect(str(copy / "catalog.duckdb")) as con:
        for table in ("fold_results", "gene_results", "sample_gene_results", "alpha_sweep"):
            con.execute(f"DELETE FROM {table} WHERE fold = 2")  # noqa: S608
        swept = [r for (r,) in con.execute("SELECT run_id FROM runs WHERE alpha_rule LIKE 'sweep:%'").fetchall()]
        for table in ("runs", "fold_results", "gene_results", "sample_gene_results", "alpha_sweep"):
            con.execute(f"DELETE FROM {table} WHERE run_id IN (SELECT unnest(?))", [swept])  # noqa: S608
    out = tmp_path / "site"
    r = CliRunner().invoke(cli, ["leaderboard", "build", "--store", str(copy), "--out", str(out), "--include-synthetic",
                                 "--no-embeddings"])
    assert r.exit_code == 0, r.output
    page = _task_page(out)
    data = page_data(page)
    seen = _check_rankings(data, _fold_gene(copy, [r["run_id"] for r in data["runs"]]), n_folds=2)
    assert seen and not any(seen)
    nexts = [row["next"] for fp in data["rankings"].values() for mode in fp.values()
             for ranking in [*mode["encoders"].values(), *mode["reducers"].values()] for row in ranking["rows"] if row["next"]]
    assert nexts and all(n["reason"].startswith("only 2 folds") and not n["apart"] for n in nexts)
    assert any(n["p_holm"] < 0.05 for n in nexts)  # a difference across genes, still not called real
    assert data["sweeps"] == []
    text = " ".join(page.read_text().split())
    assert 'id="alpha-none"' in text and 'id="alpha-chart"' not in text
    assert "bench run --task TINY --encoder test-tiny-cnn,test-tiny-cnn-b --reducer identity,pca,bpbooster-random --alpha sweep" in text


def _best_gene(store: Path, run_ids: list[str], genes: list[str]) -> str:
    """The gene with the highest pooled PCC (mean over folds per run, then over the runs), first by name among equals."""
    fg = _fold_gene(store, run_ids)
    means = {}
    for g in genes:
        per_run = [np.nanmean([v for (f, gg), v in fg[r].items() if gg == g]) for r in run_ids]
        per_run = [v for v in per_run if not math.isnan(v)]
        if per_run:
            means[g] = float(np.mean(per_run))
    top = max(means.values())
    return min(g for g, v in means.items() if v == top)


def test_views_open_on_the_best_predicted_gene(site, store):
    out, _ = site
    task = page_data(_task_page(out))
    differs = []
    for page in out.glob("spatial-*.html"):
        data = page_data(page)
        runs = [r["run_id"] for r in task["runs"] if r["shown"] and r["encoder"] == data["encoder"]
                and r["protocol_fingerprint"] == data["default_protocol"]]
        best = _best_gene(store, runs, data["genes"])
        assert data["genes"][data["first_gene"]] == best
        differs.append(best != min(data["genes"]))
        assert f"opens on the best-predicted gene, {best} (highest mean PCC over folds and reducers under HEST α)" in \
            " ".join(page.read_text().split())
    assert any(differs)  # not the first gene by name
    [emb] = out.glob("embeddings-*.html")
    data = page_data(emb)
    hest = page_data(out / "index.html")["default_protocol"]
    runs = [r["run_id"] for r in task["runs"] if r["shown"] and r["encoder"] == data["encoder"] and r["protocol_fingerprint"] == hest]
    assert data["first_gene"] == _best_gene(store, runs, sorted(data["genes"]))


# the numbers of shared/specs/bp-booster.md, typed again here
METHODS = {("ST-Net", "IDC"): {"pcc": 0.4147}, ("ST-Net", "SKCM"): {"pcc": 0.5109},
           ("HisToGene", "IDC"): {"pcc": 0.089}, ("HisToGene", "SKCM"): {"pcc": 0.2655},
           ("BLEEP", "IDC"): {"pcc": 0.4131}, ("BLEEP", "SKCM"): {"pcc": 0.3812},
           ("Stem", "PRAD"): {"pcc-10": 0.6103, "pcc-50": 0.5315, "pcc-200": 0.3832, "mse": 1.4873}}


def test_published_method_baselines_are_labelled_reference_rows(site):
    from stbench.leaderboard.published import published_for_task

    out, _ = site
    text = (out / "index.html").read_text()
    block = text[text.index('id="published-methods"'):]
    block = block[:block.index("</section>")]
    for (model, task), values in METHODS.items():
        row = re.search(rf'<tr data-kind="method"><td><span class="badge badge-published">PUBLISHED</span> {model}</td>'
                        rf'<td>{task}</td>(.*?)</tr>', block)
        assert row, (model, task)
        for v in values.values():
            assert f">{v:.4f}<" in row.group(1)
    assert block.count("badge-published") >= 1 + 8 + 7  # the heading and every row
    csv = pl.read_csv(out / "data/published.csv").filter(pl.col("table") == "bpbooster-methods")
    for (model, task), values in METHODS.items():
        for metric, v in values.items():
            assert csv.filter((pl.col("encoder") == model) & (pl.col("task") == task) & (pl.col("metric") == metric))[
                "value"].to_list() == [v]
    data = page_data(out / "index.html")
    ranked = {r["encoder"] for s in data["sections"] for t in s["main"].values() for m in t.values()
              for table in m.values() for r in table["rows"]}
    assert not ranked & {m for m, _ in METHODS}
    # a task page shows the published rows of its task only (LUAD is our LUNG), apart from the ranking
    assert not published_for_task("TINY") and 'id="published-task"' not in _task_page(out).read_text()
    lung = published_for_task("luad")
    assert {(r["model"], r["reducer"]) for r in lung if r["table"].startswith("BP-Booster paper, Table 3")} == {
        (e, red) for e in ("ResNet 50", "CTransPath", "Phikon", "CONCH", "GigaPath", "UNI", "Virchow", "Virchow2",
                           "H-Optimus-0") for red in ("identity", "pca", "bpbooster-random", "bpbooster-gp")}
    assert {r["model"] for r in published_for_task("SKCM") if not r["reducer"]} >= {"ST-Net", "HisToGene", "BLEEP"}
    assert [r["values"] for r in published_for_task("prad") if r["model"] == "Stem"] == [METHODS[("Stem", "PRAD")]]
