"""Write the static leaderboard site: HTML pages whose data sit in ``<script type="application/json">`` blocks,
one shared stylesheet and scripts of our own, and plotly.js copied from the installed plotly package.

Everything is relative to the output folder (it works opened from disk, with no network). A spatial page's spot
values are not in the page but in one small file per (sample, gene) under ``data/spatial/``, loaded when shown
(`stbench.leaderboard.slices`); the embedding view's layouts come from the store's cache
(`stbench.leaderboard.layouts`). Every name that comes from the store (tasks, encoders, reducers, genes,
samples, options) is untrusted: HTML gets it through ``html.escape``, JSON blocks escape ``<``, ``>`` and ``&``,
file names are `slug` s, and the script only ever sets ``textContent``.

The site is built in a hidden temporary folder next to the output folder and swapped in whole, so a killed
build leaves the previous site as it was; the next build removes what the killed one left.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from stbench import __version__
from stbench.errors import StbenchError
from stbench.leaderboard.data import PCC_MODES, Leaderboard, load_leaderboard
from stbench.leaderboard.published import published_tables
from stbench.tempfiles import clean_stale, is_temp_name, temp_path

__all__ = ["BuildReport", "build_site", "first_load", "MARKER", "slug"]

MARKER = ".stbench-leaderboard"  # lists the files a build wrote: a rebuild carries over every other file
ASSETS = ("style.css", "app.js", "slices.js")
SYNTHETIC_NOTE = "SYNTHETIC data (bench data demo): these numbers test the pipeline, they say nothing about real tissue."
ALPHA_RULES = {
    "hest": "α = 100 / (n_features × n_genes), the HEST reference (nearly unregularised)",
    "cv": "α chosen by cross-validation inside each training fold, grouped by sample",
}

esc = html.escape


@dataclass
class BuildReport:
    out: Path
    n_runs: int  # result sets on the site (main views and variants)
    n_shown: int  # result sets in the main views
    n_excluded_synthetic: int
    tasks: list[str]
    pages: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    layouts_computed: list[str] = field(default_factory=list)  # "<task>: <representation>" computed by this build
    layouts_reused: list[str] = field(default_factory=list)  # taken from the store's layout cache
    spatial_built: int = 0  # spatial pages whose data folder this build wrote
    spatial_reused: int = 0  # ... that it took from the previous site (same key)


def slug(name: str) -> str:
    """A file-name-safe, collision-free form of an untrusted name."""
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "x"
    return f"{base}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"


def json_script(data: Any, element_id: str) -> str:
    """A JSON data block that no string inside can close or comment out."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for raw, safe in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, safe)
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def first_load(site: Path, page: str) -> tuple[int, list[str]]:
    """Bytes a browser reads to open ``page`` of the built ``site``, and the files besides the page: the page
    and every file its HTML names in ``<script src>`` and ``<link href>`` (the slices shown first included),
    plotly.js left out (one copy for the whole site, cached after the first page)."""
    site = Path(site)
    text = (site / page).read_text(encoding="utf-8")
    names = re.findall(r'<script src="([^"]+)"', text) + re.findall(r'<link rel="stylesheet" href="([^"]+)"', text)
    files = [html.unescape(n) for n in dict.fromkeys(names) if not n.endswith("plotly.min.js")]
    return (site / page).stat().st_size + sum((site / f).stat().st_size for f in files), files


# -- the output folder -------------------------------------------------------------------------------------

def _site_folder(out: Path) -> Path:
    """The folder to replace: ``out`` made absolute, a link followed (the link stays, its target is rebuilt)."""
    target = out.resolve() if out.is_symlink() else Path(os.path.abspath(out))
    if target.exists() and not target.is_dir():
        raise StbenchError(f"--out {out} is a file; choose a folder")
    if Path.cwd().resolve().is_relative_to(target.resolve()):  # it is renamed aside and deleted
        raise StbenchError(f"--out {out} holds the current folder; choose another --out or run from elsewhere")
    return target


def _own_files(target: Path) -> set[str]:
    """Files the build that wrote ``target`` listed; refuses a non-empty folder that no build wrote."""
    if not target.exists():
        return set()
    marker = target / MARKER
    if not marker.exists():
        if any(not is_temp_name(p.name) for p in target.iterdir()):
            raise StbenchError(f"{target} is not empty and was not written by `bench leaderboard build`; "
                               "choose another --out or empty it")
        return set()
    try:
        return set(json.loads(marker.read_text() or "[]"))
    except ValueError:
        return set()  # a damaged list: every file counts as the user's, and is carried over


def _carry_over(old: Path, new: Path, own: set[str]) -> None:
    """Hard-link (else copy) into the new site what the previous one holds besides its own files, unless the
    new build wrote the same name: the user's files survive a rebuild, and the old site stays whole."""
    for folder, dirs, files in os.walk(old):
        base = Path(folder)
        links = [d for d in dirs if (base / d).is_symlink()]  # copied as links, not walked
        dirs[:] = [d for d in dirs if d not in links and not is_temp_name(d)]
        for name in [*files, *links]:
            rel = (base / name).relative_to(old).as_posix()
            dest = new / rel
            if rel in own or rel == MARKER or is_temp_name(name) or os.path.lexists(dest):
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = base / name
            if src.is_symlink():
                os.symlink(os.readlink(src), dest)
            else:
                try:
                    os.link(src, dest)
                except OSError:  # another file system, or links not allowed
                    shutil.copy2(src, dest)
        for d in dirs:
            (new / (base / d).relative_to(old)).mkdir(exist_ok=True)


def _swap_in(new: Path, target: Path) -> None:
    """Replace ``target`` by ``new``: the old site moves aside under a temporary name (put back by the next
    build if this one dies between the two renames), the new one moves in, the old one is removed."""
    if not target.exists():
        new.rename(target)
        return
    aside = temp_path(target, "old")
    target.rename(aside)
    new.rename(target)
    shutil.rmtree(aside, ignore_errors=True)


class _Writer:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.files: list[str] = []

    def text(self, rel: str, content: str) -> None:
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        self.files.append(rel)

    def csv(self, rel: str, frame: Any) -> None:
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_csv(path)
        self.files.append(rel)


def _write_assets(w: _Writer) -> None:
    import plotly.offline

    src = resources.files("stbench.leaderboard") / "assets"
    for name in ASSETS:
        w.text(f"assets/{name}", (src / name).read_text(encoding="utf-8"))
    # plotly.js ships inside the Python package: one copy, referenced by every page, no CDN
    w.text("assets/plotly.min.js", plotly.offline.get_plotlyjs())


# -- shared page parts ------------------------------------------------------------------------------------

def _page(*, title: str, page: str, body: str, data: dict[str, Any], scripts: Iterable[str] = (), synthetic: bool = False,
          nav: list[tuple[str, str]] = (), built_at: str, store_name: str) -> str:  # type: ignore[assignment]
    """A page: ``data`` in the ``stbench-data`` JSON block, then ``scripts`` (site-relative files: the slice
    loader and the slices shown first), then app.js."""
    badge = ' <span class="badge badge-synthetic">SYNTHETIC</span>' if synthetic else ""
    banner = f'<p class="banner banner-synthetic"><strong>SYNTHETIC</strong> {esc(SYNTHETIC_NOTE)}</p>' if synthetic else ""
    links = "".join(f'<a href="{esc(href)}">{esc(text)}</a>' for href, text in nav)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · stbench leaderboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="assets/style.css">
<script src="assets/plotly.min.js"></script>
</head>
<body data-page="{esc(page)}">
<header class="top"><a class="brand" href="index.html">stbench leaderboard</a><nav>{links}</nav></header>
<main>
<h1>{esc(title)}{badge}</h1>
{banner}
{body}
</main>
<footer>Built {esc(built_at)} by stbench {esc(__version__)} from the store <code>{esc(store_name)}</code>.
Self-contained: no network needed. Published reference numbers are labelled <span class="badge badge-published">PUBLISHED</span>
and are never ranked with ours.</footer>
{json_script(data, "stbench-data")}
{"".join(f'<script src="{esc(src)}"></script>' for src in scripts)}
<script src="assets/app.js"></script>
</body>
</html>
"""


def _public_options(options: dict[str, Any]) -> str:
    """Reducer options as ``k=v``; a gene-set file by its name (a local path says nothing to a reader)."""
    shown = {k: (Path(str(v)).name if k == "gene_sets" and v else v) for k, v in options.items()}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or "(none)"


def _dl(items: list[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _joined(values: Iterable[str]) -> str:
    return ", ".join(esc(v) for v in values) or "—"


def protocol_card(board: Leaderboard, runs: list[dict[str, Any]], *, built_at: str) -> str:
    """What produced the numbers on this page: every protocol, the reducers' options, genes, folds, seed,
    weights fingerprints, data versions, stbench versions and dates."""
    labels = {p["fingerprint"]: p for p in board.protocols}
    fps = [p["fingerprint"] for p in board.protocols if any(r["protocol_fingerprint"] == p["fingerprint"] for r in runs)]
    rows = []
    for fp in fps:
        p = labels[fp]
        proto = p["protocol"]
        alpha = ALPHA_RULES.get(str(proto.get("alpha")), f"fixed α = {proto.get('alpha')}")
        genes = {"task": "the task's list (var_50genes.json, HEST)", "train-hvg": "top HVGs of each training fold",
                 "file": f"the {str(proto['panel']).upper()} panel" if proto.get("panel") else "a gene file",
                 }.get(str(proto.get("genes")), str(proto.get("genes")))
        n_genes = ", ".join(str(n) for n in p["n_genes"])
        rows.append(
            f'<tr data-protocol="{esc(fp)}"><td>{esc(p["label"])}</td><td>{esc(alpha)}</td>'
            f'<td>{esc(str(proto.get("solver")))}</td><td>{"yes" if proto.get("intercept") else "no"}</td>'
            f"<td>{esc(genes)} ({esc(n_genes)} genes)</td><td>{esc(str(proto.get('expression', 'log1p')))}</td>"
            f"<td>{esc(str(proto.get('seed')))}</td><td><code>{esc(fp)}</code></td>"
            f"<td>{sum(1 for r in runs if r['protocol_fingerprint'] == fp)}</td></tr>")
    shown = [r for r in runs if r["shown"]] or runs
    options: dict[str, set[str]] = {}
    for r in shown:
        options.setdefault(r["reducer"], set()).add(_public_options(r["reducer_options"]))
    folds: dict[str, set[str]] = {}
    data_versions: dict[str, set[str]] = {}
    weights: dict[str, set[str]] = {}
    for r in runs:
        folds.setdefault(r["task"], set()).add(str(r["folds"]))
        data_versions.setdefault(r["task"], set()).add(str(r["task_fingerprint"]))
        weights.setdefault(r["encoder"], set()).add(str(r["weights_fingerprint"]))
    dates = sorted(r["finished_at"] for r in runs if r["finished_at"])
    items = [
        ("reducer options (main views)", "<ul>" + "".join(
            f"<li><strong>{esc(red)}</strong>: {'; '.join(esc(o) for o in sorted(opts))}</li>"
            for red, opts in options.items()) + "</ul>"),
        ("folds", _joined(f"{t}: {'/'.join(sorted(v))}" for t, v in folds.items())),
        ("PCC", "pooled = per gene over all test spots of a fold (HEST); per-sample = per gene within each test "
                "sample, averaged over the fold's samples. Score = mean over genes, then mean ± population std over folds."),
        ("weights fingerprints", _joined(f"{e}: {', '.join(sorted(v))}" for e, v in weights.items())),
        ("data version (task fingerprint)", _joined(f"{t}: {', '.join(sorted(v))}" for t, v in data_versions.items())),
        ("stbench version of the runs", _joined(sorted({str(r["stbench_version"]) for r in runs}))),
        ("runs finished", esc(f"{dates[0]} to {dates[-1]}" if dates else "—")),
        ("site built", esc(f"{built_at} by stbench {__version__}")),
    ]
    return f"""<section class="card protocol-card" id="protocol-card">
<h2>Protocol card</h2>
<table class="protocols"><thead><tr><th>protocol</th><th>alpha rule</th><th>ridge solver</th><th>intercept</th>
<th>genes</th><th>expression</th><th>seed</th><th>fingerprint</th><th>result sets</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
{_dl(items)}
</section>"""


def _controls(board: Leaderboard, fps: list[str], *, extra: str = "", modes: bool = True) -> str:
    """The protocol switch (alpha rule and the other settings, one option per stored protocol) and the PCC switch."""
    options = "".join(f'<option value="{esc(p["fingerprint"])}">{esc(p["label"])}</option>'
                      for p in board.protocols if p["fingerprint"] in fps)
    buttons = "".join(f'<button type="button" data-value="{m}">{m} PCC</button>' for m in PCC_MODES)
    switch = f'<span class="switch" id="mode" role="group" aria-label="PCC">{buttons}</span>' if modes else ""
    return f'<div class="controls"><label>Protocol <select id="protocol">{options}</select></label>{switch}{extra}</div>'



def _protocol_list(board: Leaderboard) -> list[dict[str, str]]:
    return [{"fingerprint": p["fingerprint"], "label": p["label"]} for p in board.protocols]


def _published_html(pub: dict[str, Any]) -> str:
    hest = pub["hest"]
    head = "".join(f'<th data-type="num">{esc(c)}</th>' for c in hest["columns"])
    body = "".join(
        f'<tr><td><span class="badge badge-published">PUBLISHED</span> {esc(r["encoder"])}</td>'
        + "".join(f'<td data-sort="{r["values"][c]}">{r["values"][c]:.4f}</td>' for c in hest["columns"]) + "</tr>"
        for r in hest["rows"])
    return f"""<section class="card published" id="published">
<h2>Published reference <span class="badge badge-published">PUBLISHED</span></h2>
<p>{esc(hest["title"])}. Source: {esc(hest["source"])}. {esc(hest["note"])} These rows come from other code and
other data versions: shown for context, <strong>never ranked with ours</strong>.</p>
<table class="sortable" id="published-hest"><thead><tr><th>model</th>{head}</tr></thead><tbody>{body}</tbody></table>
</section>"""


def _methods_html(m: dict[str, Any]) -> str:
    """The paper's comparison with published methods (ST-Net, HisToGene, BLEEP, Stem): one row per model and task."""
    metrics = m["metrics"]
    head = "".join(f'<th data-type="num">{esc(x.upper())}</th>' for x in metrics)
    body = "".join(
        f'<tr data-kind="{esc(r["kind"])}"><td><span class="badge badge-published">PUBLISHED</span> {esc(r["model"])}</td>'
        f'<td>{esc(r["task"])}</td>'
        + "".join(f'<td class="num" data-sort="{r["values"][x]}">{r["values"][x]:.4f}</td>' if x in r["values"]
                  else '<td class="num missing" data-sort="">—</td>' for x in metrics) + "</tr>" for r in m["rows"])
    return f"""<section class="card published" id="published-methods">
<h2>Published methods <span class="badge badge-published">PUBLISHED</span></h2>
<p>{esc(m["title"])}: the published method baselines (ST-Net, HisToGene, BLEEP, Stem) and BP-Booster's own rows.
Source: {esc(m["source"])}. {esc(m["note"])} Their numbers, their protocols: <strong>never ranked with ours</strong>.</p>
<table class="sortable" id="published-methods-table"><thead><tr><th>model</th><th>task</th>{head}</tr></thead>
<tbody>{body}</tbody></table></section>"""


# -- pages ----------------------------------------------------------------------------------------------

def _index(board: Leaderboard, *, default_reducer: str, task_files: dict[str, str], built_at: str, store_name: str) -> str:
    pub = published_tables()
    sections_html = []
    for sec in board.sections:
        sid = sec["id"]
        synth = sec["synthetic"]
        badge = ' <span class="badge badge-synthetic">SYNTHETIC</span>' if synth else ""
        warn = (f'<p class="banner banner-synthetic"><strong>SYNTHETIC</strong> {esc(SYNTHETIC_NOTE)} '
                "Ranked only among themselves, never with real tasks.</p>") if synth else ""
        tasks = "".join(
            f'<li><a href="{esc(task_files[t])}">{esc(t)}</a>{badge}</li>' for t in sec["tasks"])
        sections_html.append(f"""<section class="board" data-section="{esc(sid)}" id="section-{esc(sid)}">
<h2>{esc(sec["title"])}{badge}</h2>
{warn}
<div class="tasks-list">Task pages: <ul class="inline">{tasks}</ul></div>
<div class="card" id="main-{esc(sid)}"><h3>Encoders × tasks{badge}</h3>
<p class="hint">Mean PCC ± population std over folds, for the reducer chosen below; the average over tasks and
the rank by it (only encoders with every task are ranked). Click a column header to sort.</p>
<div class="switch reducer-switch" role="group" aria-label="reducer" data-section="{esc(sid)}"></div>
<div class="table-wrap"><table class="sortable main-table" id="main-table-{esc(sid)}"></table></div>
<p class="empty hidden">No result sets for this reducer under this protocol.</p>
</div>
<div class="card" id="heatmap-card-{esc(sid)}"><h3>Heatmap: encoders × tasks{badge}</h3>
<div class="chart heatmap" id="heatmap-{esc(sid)}"></div>
<p class="empty hidden heat-empty" id="heatmap-empty-{esc(sid)}"></p></div>
<div class="card" id="gain-{esc(sid)}"><h3>Reducer gain (the BP-Booster paper's Table 3){badge}</h3>
<p class="hint">Each reducer's mean PCC per task and encoder under the chosen protocol, and its gain over PCA
(Δ = reducer − PCA).</p>
<div class="table-wrap"><table class="sortable gain-table" id="gain-table-{esc(sid)}"></table></div>
</div>
<div class="card" id="sensitivity-{esc(sid)}"><h3>Protocol sensitivity{badge}</h3>
<p class="hint">How ranks move between protocols. Reducers are ranked within each task and encoder, encoders
within each task and reducer, among what exists under both. Move &gt; 0: a better rank under the second protocol.
Under the HEST alpha the ridge is nearly unregularised, which favours reducers that shrink their latent.</p>
<label>Comparison <select class="comparison"></select></label>
<div class="chart slope" id="slope-{esc(sid)}"></div>
<h4>Reducer ranks</h4><div class="table-wrap"><table class="sortable sens-reducers"></table></div>
<h4>Encoder ranks</h4><div class="table-wrap"><table class="sortable sens-encoders"></table></div>
<p class="empty hidden">No result set exists under both protocols of a comparison yet: run the same grid with
<code>--alpha cv</code> (or <code>--alpha hest</code>).</p>
</div>
</section>""")
    excluded = (f'<p class="note">{board.excluded_synthetic} synthetic result set(s) left out '
                "(<code>bench leaderboard build --include-synthetic</code> shows them in their own section).</p>"
                if board.excluded_synthetic else "")
    t3 = pub["table3"]
    t3_rows = "".join(
        f'<tr><td><span class="badge badge-published">PUBLISHED</span> {esc(r["encoder"])}</td><td>{esc(r["task"])}</td>'
        + "".join(f'<td data-sort="{r["values"][red]}">{r["values"][red]:.4f}</td>' for red in t3["reducers"])
        + "".join(f'<td data-sort="{r["gain"][red]}">{r["gain"][red]:+.4f}</td>' for red in t3["reducers"] if red != "pca")
        + "</tr>" for r in t3["rows"])
    t3_head = "".join(f'<th data-type="num">{esc(red)}</th>' for red in t3["reducers"]) + "".join(
        f'<th data-type="num">Δ {esc(red)}</th>' for red in t3["reducers"] if red != "pca")
    table3 = f"""<section class="card published" id="published-table3">
<h2>Published reducer gains <span class="badge badge-published">PUBLISHED</span></h2>
<p>{esc(t3["title"])}. Source: {esc(t3["source"])}. {esc(t3["note"])} Other tasks, encoders and code than ours:
for comparison only, <strong>never ranked with ours</strong>.</p>
<table class="sortable" id="published-t3"><thead><tr><th>encoder</th><th>task</th>{t3_head}</tr></thead>
<tbody>{t3_rows}</tbody></table></section>"""
    methods = _methods_html(pub["methods"])
    downloads = """<section class="card" id="downloads"><h2>Downloads (CSV)</h2><ul>
<li><a href="data/results.csv" download>results.csv</a>: one row per result set (pooled and per-sample PCC, variant, protocol, fingerprints)</li>
<li><a href="data/folds.csv" download>folds.csv</a>: one row per result set and fold</li>
<li><a href="data/genes.csv" download>genes.csv</a>: PCC and MSE per result set, fold and gene (pooled)</li>
<li><a href="data/sample_genes.csv" download>sample_genes.csv</a>: PCC and MSE per result set, fold, test sample and gene</li>
<li><a href="data/published.csv" download>published.csv</a>: the published reference numbers (one row per table, model, task and metric), with their source</li>
</ul></section>"""
    fps = sorted({fp for s in board.sections for fp in s["protocols"]}, key=[p["fingerprint"] for p in board.protocols].index)
    body = (_controls(board, fps) + excluded + "".join(sections_html) + _published_html(pub) + table3 + methods + downloads
            + protocol_card(board, board.included, built_at=built_at))
    data = {"page": "index", "default_reducer": default_reducer, "default_protocol": board.default_protocol,
            "protocols": _protocol_list(board), "sections": board.sections, "task_pages": task_files}
    nav = [("#section-real" if board.sections[0]["id"] == "real" else f"#section-{board.sections[0]['id']}", "Leaderboard"),
           ("#published", "Published"), ("#published-methods", "Methods"), ("#downloads", "Downloads"), ("#protocol-card", "Protocol")]
    return _page(title="Which encoder and reducer best predict expression?", page="index", body=body, data=data,
                 nav=nav, built_at=built_at, store_name=store_name)


# -- CSVs --------------------------------------------------------------------------------------------------

def _published_frame() -> Any:
    import polars as pl

    pub = published_tables()
    rows = [{"table": pub["hest"]["id"], "source": pub["hest"]["source"], "encoder": r["encoder"], "task": task,
             "reducer": "pca", "metric": "pcc", "value": v} for r in pub["hest"]["rows"] for task, v in r["values"].items()]
    rows += [{"table": pub["table3"]["id"], "source": pub["table3"]["source"], "encoder": r["encoder"], "task": r["task"],
              "reducer": red, "metric": "pcc", "value": v} for r in pub["table3"]["rows"] for red, v in r["values"].items()]
    rows += [{"table": pub["methods"]["id"], "source": pub["methods"]["source"], "encoder": r["model"], "task": r["task"],
              "reducer": "", "metric": m, "value": v} for r in pub["methods"]["rows"] for m, v in r["values"].items()]
    return pl.DataFrame(rows)


# -- the build ----------------------------------------------------------------------------------------------

def build_site(store_root: Path, out: Path, *, reducer: str = "pca", include_synthetic: bool = False,
               embeddings: bool = True, projection: str = "umap", seed: int = 1, spatial_csv: bool = True,
               background: bool = True) -> BuildReport:
    """Build the site for the store at ``store_root`` into ``out``; returns what was written.

    Writes a hidden ``.<out>.tmp-...`` folder next to ``out``, then swaps it in whole (see `_swap_in`); files in
    ``out`` that the previous build did not write are carried over. Refuses a non-empty ``out`` that no build wrote.
    A spatial page's data folder whose key is unchanged is taken from the previous site (`slices.reuse_spatial`);
    the embedding view's layouts come from the store's cache, computed there where missing
    (`layouts.ensure_layouts`: writes ``<store>/cache/layouts/``), by a child process on a second CPU while the
    spatial pages are written (``background``, when the process may use two CPUs), else in this process.
    """
    store_root, out = Path(store_root), Path(out)
    board = load_leaderboard(store_root, include_synthetic=include_synthetic)
    all_reducers = [r for s in board.sections for r in s["reducers"]]
    if reducer not in all_reducers:
        if reducer != "pca":
            raise StbenchError(f"--reducer {reducer}: no result sets with that reducer; the store has "
                               f"{', '.join(dict.fromkeys(all_reducers))}")
        reducer = all_reducers[0]
    target = _site_folder(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target.parent, target=target.name)  # a killed build's folder, or its old site put back
    own = _own_files(target)
    report = BuildReport(out=out, n_runs=len(board.included), n_shown=sum(1 for r in board.included if r["shown"]),
                         n_excluded_synthetic=board.excluded_synthetic, tasks=sorted(board.tasks))
    tmp = temp_path(target)
    tmp.mkdir()
    try:
        w = _Writer(tmp)
        _write_site(w, board, store_root, report, reducer=reducer, embeddings=embeddings, projection=projection,
                    seed=seed, previous=target if own else None, spatial_csv=spatial_csv, background=background)
        if target.exists():
            _carry_over(target, tmp, own)
        (tmp / MARKER).write_text(json.dumps(sorted(w.files), indent=0))
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.pages = [f for f in w.files if f.endswith(".html")]
    return report


def _write_site(w: _Writer, board: Leaderboard, store_root: Path, report: BuildReport, *, reducer: str,
                embeddings: bool, projection: str, seed: int, previous: Path | None = None,
                spatial_csv: bool = True, background: bool = True) -> None:
    import polars as pl
    from stbench.leaderboard.figures import embedding_page, embedding_views, plan_views, write_spatial_page
    from stbench.leaderboard.layouts import Background, LayoutReport, cached, spare_cpu
    from stbench.leaderboard.task_page import task_page
    from stbench.stores import Store

    built_at = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    store_name = store_root.resolve().name
    _write_assets(w)
    frames = board.frames
    for name in ("results", "folds", "genes", "sample_genes"):
        w.csv(f"data/{name}.csv", frames[name])
    w.csv("data/published.csv", _published_frame())
    task_files = {t: f"task-{slug(t)}.html" for t in board.tasks}
    files: dict[str, Any] = {"spatial": {}, "embeddings": {}, "embeddings_reason": {}, "task_csv": {},
                             "spatial_reason": ("this store predates spot predictions (stbench schema m003); rerun "
                                                "`bench run ... --force` to record them" if not board.has_spot_predictions
                                                else "no spot predictions stored for this task")}
    with Store(store_root, read_only=True) as st:
        plans = plan_views(st, board, method=projection, seed=seed) if embeddings else {}
        # the layouts missing from the store's cache: computed by a child on the second CPU meanwhile
        missing = [t for t, plan in plans.items() if plan.reason is None and not cached(st, plan)]
        child = (Background(store_root, missing, include_synthetic=board.excluded_synthetic == 0, method=projection,
                            seed=seed) if missing and background and spare_cpu() else None)
        try:
            for task in board.tasks:
                files["task_csv"][task] = f"genes-{slug(task)}.csv"
                ids = [r["run_id"] for r in board.included if r["task"] == task]
                w.csv(f"data/{files['task_csv'][task]}", frames["genes"].filter(pl.col("run_id").is_in(ids)))
                for enc in board.tasks[task]["encoders"]:
                    page = write_spatial_page(w, st, board, task, enc, seed=seed, previous=previous,
                                              task_file=task_files[task], built_at=built_at, store_name=store_name,
                                              csv=spatial_csv)
                    if page is None:
                        continue
                    report.spatial_reused += page.reused
                    report.spatial_built += not page.reused
                    files["spatial"].setdefault(task, {})[enc] = page.file
            done = child.finish() if child is not None else None
        finally:
            if child is not None:
                child.stop()
        layouts = LayoutReport()
        views = embedding_views(st, board, plans, layouts)  # from the cache; what is still missing, computed here
        if embeddings:
            by_child = done.computed if done is not None else []
            report.layouts_computed = by_child + layouts.computed
            report.layouts_reused = [x for x in layouts.reused if x not in by_child]
            report.notes.append(f"embedding view: {len(report.layouts_computed)} layouts computed"
                                + (" (in a second process)" if by_child else "") + f", {len(report.layouts_reused)} "
                                f"taken from the store's cache ({store_root / 'cache' / 'layouts'})")
            if layouts.unwritable or (done is not None and done.unwritable):
                report.notes.append("the store's layout cache could not be written (read-only?): the next build "
                                    "computes these layouts again")
        for task in board.tasks:
            if not embeddings:
                files["embeddings_reason"][task] = "left out of this build (--no-embeddings)"
                continue
            view = views[task]
            if not view["available"]:
                files["embeddings_reason"][task] = view["reason"]
                report.notes.append(f"embedding view of {task}: {view['reason']}")
                continue
            report.notes += [f"embedding view of {task}: {n}" for n in view["warnings"]]
            name = f"embeddings-{slug(task)}.html"
            w.text(name, embedding_page(board, task, view, task_file=task_files[task], built_at=built_at,
                                        store_name=store_name))
            files["embeddings"][task] = name
    if report.spatial_reused:
        report.notes.append(f"spatial maps: {report.spatial_built} data folders written, {report.spatial_reused} "
                            "unchanged since the previous build (reused)")
    for task in board.tasks:
        w.text(task_files[task], task_page(board, task, files=files, built_at=built_at, store_name=store_name))
    w.text("index.html", _index(board, default_reducer=reducer, task_files=task_files, built_at=built_at,
                                store_name=store_name))
