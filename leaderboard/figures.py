"""The figure pages: spatial maps (per task and encoder, data in slice files) and the embedding view (per task,
layouts from the store's cache). Called by `stbench.leaderboard.site.build_site`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from stbench.leaderboard.data import best_gene
from stbench.leaderboard.site import _controls, _joined, _page, _protocol_list, esc, protocol_card, slug
from stbench.leaderboard.slices import reuse_spatial, spatial_folder, spatial_key, write_spatial

if TYPE_CHECKING:
    from stbench.leaderboard.data import Leaderboard
    from stbench.leaderboard.site import _Writer
    from stbench.stores import Store

__all__ = ["SpatialPage", "write_spatial_page", "spatial_page", "embedding_page", "plan_views", "embedding_views"]


@dataclass
class SpatialPage:
    file: str  # the page, e.g. spatial-<task>-<encoder>.html
    manifest: dict[str, Any]
    reused: bool
    files: list[str] = field(default_factory=list)


def _columns(board: Leaderboard, runs: list[dict[str, Any]]) -> dict[str, str]:
    labels = {p["fingerprint"]: p["label"] for p in board.protocols}
    return {r["run_id"]: f"predicted {r['reducer']} [{labels[r['protocol_fingerprint']]}] {r['run_id']}" for r in runs}


def write_spatial_page(w: _Writer, st: Store, board: Leaderboard, task: str, encoder: str, *, seed: int,
                       previous: Path | None, task_file: str, built_at: str, store_name: str,
                       csv: bool = True) -> SpatialPage | None:
    """Write one spatial page and its data folder (reusing the previous site's when its key still holds);
    None when the store holds no predictions for it."""
    from stbench.leaderboard.maps import MAX_MAP_SPOTS, spatial_maps, spatial_pcc, spatial_runs

    if not board.has_spot_predictions:
        return None
    runs = spatial_runs(board, task, encoder)
    if not runs:
        return None
    folder = spatial_folder(slug(task), slug(encoder))
    columns = _columns(board, runs)
    with st.catalog.session():  # the key and the values from one snapshot
        key = spatial_key(st, runs, columns, max_spots=MAX_MAP_SPOTS, seed=seed, csv=csv)
        manifest = reuse_spatial(previous, w.out, folder, key)
        maps = None if manifest else spatial_maps(st, board, task, encoder, seed=seed, max_spots=MAX_MAP_SPOTS)
    reused = manifest is not None
    if manifest is None:
        if maps is None:
            return None
        name = f"spatial-{slug(task)}-{slug(encoder)}"
        manifest = write_spatial(w.text, w.csv, maps, folder=folder, key=key,
                                 sample_dirs=[slug(s.id) for s in maps.samples],
                                 gene_files=[slug(g) for g in maps.genes],
                                 csv_names=[f"{name}-{slug(s.id)}.csv" for s in maps.samples] if csv else None,
                                 columns=columns)
    else:
        w.files += manifest["files"]
    run_ids = manifest["runs"]
    pcc = spatial_pcc(st, run_ids, [s["id"] for s in manifest["samples"]], manifest["genes"])
    file = f"spatial-{slug(task)}-{slug(encoder)}.html"
    w.text(file, spatial_page(board, task, encoder, manifest, pcc, folder=folder, task_file=task_file,
                              built_at=built_at, store_name=store_name))
    return SpatialPage(file=file, manifest=manifest, reused=reused)


def _pcc_lists(pcc: np.ndarray) -> list:
    """runs x samples x genes, 4 decimals, None where undefined."""
    rounded = np.round(pcc, 4)
    return [[[None if np.isnan(v) else float(v) for v in row] for row in sample] for sample in rounded]


def spatial_page(board: Leaderboard, task: str, encoder: str, manifest: dict[str, Any], pcc: np.ndarray, *,
                 folder: str, task_file: str, built_at: str, store_name: str) -> str:
    synthetic = board.tasks[task]["synthetic"]
    runs = [board.run(rid) for rid in manifest["runs"]]
    samples = manifest["samples"]
    fps = [p["fingerprint"] for p in board.protocols if any(r["protocol_fingerprint"] == p["fingerprint"] for r in runs)]
    sample_opts = "".join(f'<option value="{i}">{esc(s["id"])}</option>' for i, s in enumerate(samples))
    max_spots = manifest["max_spots"]
    subsampled = [s for s in samples if s["n_shown"] < s["n_spots"]]
    sub_note = (f'<p class="note">Samples with more than {max_spots} spots show a random subset of '
                f'{max_spots} (fixed seed): {_joined(s["id"] for s in subsampled)}.</p>' if subsampled else "")
    variants = sorted({(r["reducer"], r["variant"]) for r in runs if r["variant"]})
    if variants:
        sub_note += ('<p class="note">† no run with the default options; the newest variant is shown: '
                     + "; ".join(f"{esc(red)}: {esc(v)}" for red, v in variants) + ".</p>")
    extra = (f'<label>Test sample <select id="sample">{sample_opts}</select></label>'
             '<label>Gene <input list="gene-list" id="gene" autocomplete="off"></label><datalist id="gene-list"></datalist>'
             '<span id="gene-note" class="note" aria-live="polite"></span>')
    # the page opens on the best-predicted gene (highest mean PCC over the reducers under the page's first protocol)
    best = best_gene(board, task, encoder, manifest["genes"], protocol=fps[0])
    first_gene = manifest["genes"].index(best) if best is not None else 0
    first = samples[0]
    if first["csv"]:
        links = "".join(f'<li><a href="{esc(s["csv"])}" download>{esc(s["id"])}</a> ({s["n_shown"]} spots)</li>'
                        for s in samples)
        download = f"""<p>The values shown for the chosen sample, measured and predicted per spot and gene (3 decimals):
<a id="csv-link" href="{esc(first["csv"])}" download>{esc(first["id"])}</a></p>
<details><summary>Every test sample ({len(samples)})</summary><ul>{links}</ul></details>"""
    else:
        download = ("<p>Left out of this build (<code>bench leaderboard build --no-spatial-csv</code>); the per-sample "
                    'PCC behind the panel titles is in <a href="data/sample_genes.csv" download>sample_genes.csv</a>.</p>')
    body = f"""<p>Encoder <strong>{esc(encoder)}</strong> on task <a href="{esc(task_file)}">{esc(task)}</a>:
measured and predicted log1p expression of one gene at the spot coordinates of a test sample, for each reducer
(default options), under the chosen protocol. It opens on the best-predicted gene, {esc(manifest["genes"][first_gene])}
(highest mean PCC over folds and reducers under {esc(next(p["label"] for p in board.protocols if p["fingerprint"] == fps[0]))}). Each panel has its own colour scale; its title gives that
sample's PCC for the gene. Each sample and gene is a small file loaded when chosen (values to 16 bits: within
1/131,068 of the panel's range of the stored value).</p>
{_controls(board, fps, extra=extra, modes=False)}
{sub_note}
<section class="card"><p class="hint" id="slice-status" aria-live="polite"></p><div class="maps" id="maps"></div></section>
<section class="card"><h2>Download (CSV)</h2>{download}</section>
{protocol_card(board, runs, built_at=built_at)}"""
    data = {"page": "spatial", "task": task, "encoder": encoder, "synthetic": synthetic, "protocols": _protocol_list(board),
            "default_protocol": fps[0], "folder": folder,
            "samples": [{k: s[k] for k in ("id", "dir", "n_spots", "n_shown", "csv")} for s in samples],
            "genes": manifest["genes"], "gene_files": manifest["gene_files"], "first_gene": first_gene,
            "runs": [{"run_id": r["run_id"], "reducer": r["reducer"], "protocol": r["protocol_fingerprint"],
                      "variant": r["variant"]} for r in runs],
            "pcc": _pcc_lists(pcc), "reducers": [r["reducer"] for r in runs]}
    base = f"data/{folder}/{first['dir']}"
    scripts = ["assets/slices.js", f"{base}/spots.js", f"{base}/{manifest['gene_files'][first_gene]}.js"]
    return _page(title=f"Spatial maps · {task} · {encoder}", page="spatial", body=body, data=data, scripts=scripts,
                 synthetic=synthetic, nav=[("index.html", "Leaderboard"), (task_file, f"Task {task}"),
                                           ("#protocol-card", "Protocol")], built_at=built_at, store_name=store_name)


# -- the embedding view ---------------------------------------------------------------------------------------

def plan_views(st: Store, board: Leaderboard, *, method: str, seed: int) -> dict[str, Any]:
    """Every task's embedding-view plan (`stbench.leaderboard.layouts.plan_view`)."""
    from stbench.leaderboard.layouts import plan_view

    with st.catalog.session():
        return {task: plan_view(st, board, task, method=method, seed=seed) for task in board.tasks}


def embedding_views(st: Store, board: Leaderboard, plans: dict[str, Any], report: Any) -> dict[str, dict[str, Any]]:
    """Every task's embedding view: its layouts taken from the store's cache, or computed and stored there first
    (`stbench.leaderboard.layouts.ensure_layouts`); ``report`` (a `LayoutReport`) records which."""
    from stbench.leaderboard.layouts import ensure_layouts
    from stbench.leaderboard.maps import embedding_view

    views = {}
    for task, plan in plans.items():
        layouts = ensure_layouts(st, plan, report) if plan.reason is None else {}
        with st.catalog.session():
            views[task] = embedding_view(st, plan, layouts, board)
    return views


def embedding_page(board: Leaderboard, task: str, view: dict[str, Any], *, task_file: str, built_at: str,
                   store_name: str) -> str:
    synthetic = board.tasks[task]["synthetic"]
    runs = [r for r in board.included if r["task"] == task and r["encoder"] == view["encoder"]]
    method = "UMAP (scanpy: 15-NN graph on the top 50 PCs, then sc.tl.umap)" if view["method"] == "umap" else \
        "t-SNE (scanpy sc.tl.tsne on the top 50 PCs)"
    notes = "".join(f"<li>{esc(n)}</li>" for n in view["notes"]) + "".join(
        f'<li class="warn">{esc(n)}</li>' for n in view["warnings"])
    sub = (f" A random subset of {view['n_shown']} of the {view['n_spots']} spots is shown (fixed seed)."
           if view["n_shown"] < view["n_spots"] else "")
    extra = ('<span class="switch" id="colour" role="group" aria-label="colour by">'
             '<button type="button" data-value="cluster">k-means cluster</button>'
             '<button type="button" data-value="gene">gene</button></span>'
             '<label>Gene <input list="gene-list" id="gene" autocomplete="off"></label><datalist id="gene-list"></datalist>'
             '<span id="gene-note" class="note" aria-live="polite"></span>'
             '<span class="switch" id="layout" role="group" aria-label="layout">'
             f'<button type="button" data-value="projection">{esc(view["method"].upper())}</button>'
             '<button type="button" data-value="tissue">tissue coordinates</button></span>')
    keys = "".join(f"<li>{esc(name)}: <code>{esc(key)}</code></li>" for name, key in view["layout_keys"].items())
    body = f"""<p>Encoder <strong>{esc(view["encoder"])}</strong> on task <a href="{esc(task_file)}">{esc(task)}</a>:
the test spots of fold 0 (samples {_joined(view["samples"])}) in 2-D by {esc(method)}, coloured by k-means
cluster (k = {view["k"]}, 10 starts, seed {view["seed"]}, fitted on the top 50 PCs of each representation) or by a
gene's measured log1p expression. PCA is fitted at build time on fold 0's training spots (StandardScaler then PCA,
as the pipeline does); BP-Booster is the model the run saved for fold 0, applied unchanged.{esc(sub)}</p>
{'<ul class="notes">' + notes + '</ul>' if notes else ''}
<div class="controls">{extra}</div>
<section class="card"><div class="maps" id="embeddings"></div></section>
<section class="card"><details><summary>Layouts in the store's cache</summary><p class="hint">Each layout is
computed once and kept under <code>cache/layouts/</code> in the store, keyed by the sha256 of everything it depends
on (the embedding files' and model file's digests, the subsample, the projection and its parameters, k-means, the
seed and the libraries' versions).</p><ul>{keys}</ul></details></section>
{protocol_card(board, runs, built_at=built_at)}"""
    names = sorted(view.get("genes") or {})
    data = {"page": "embeddings", "task": task, "synthetic": synthetic, **view,
            "first_gene": best_gene(board, task, view["encoder"], names) or (names[0] if names else "")}
    return _page(title=f"Embedding view · {task} · {view['encoder']}", page="embeddings", body=body, data=data,
                 synthetic=synthetic, nav=[("index.html", "Leaderboard"), (task_file, f"Task {task}"),
                                           ("#protocol-card", "Protocol")], built_at=built_at, store_name=store_name)
