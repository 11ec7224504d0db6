"""A task page: its views, the rankings with the evidence behind each step, the alpha-sensitivity curves, per-gene
PCC, published reference numbers for the task and every result set. Called by `stbench.leaderboard.site`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stbench.leaderboard.data import PCC_MODES
from stbench.leaderboard.published import published_for_task
from stbench.leaderboard.site import _controls, _page, _protocol_list, _public_options, esc, protocol_card
from stbench.leaderboard.stats import MIN_FOLDS, SIGNIFICANCE
from stbench.leaderboard.sweeps import PLATEAU

if TYPE_CHECKING:
    from stbench.leaderboard.data import Leaderboard

__all__ = ["task_page"]


def _run_public(r: dict[str, Any]) -> dict[str, Any]:
    keep = ("run_id", "task", "synthetic", "encoder", "reducer", "variant", "shown", "alpha_rule", "protocol_fingerprint",
            "weights_fingerprint", "scores", "alphas", "n_test", "folds", "finished_at", "stbench_version")
    return {**{k: r[k] for k in keep}, "options": _public_options(r["reducer_options"])}


def _taus_html(page: dict[str, Any]) -> str:
    if not page["taus"]:
        return ('<p class="empty" id="taus-none">Kendall τ between the rankings under the HEST α and a cross-validated '
                "α: needs the same encoders and reducers under both (<code>bench run ... --alpha hest,cv</code>).</p>")
    def item(t: dict[str, Any]) -> str:
        tau = "—" if t["tau"] is None else f"{t['tau']:+.3f}"
        small = " (two entries: τ is ±1 by construction)" if t["n"] == 2 else ""
        return (f'<li data-mode="{esc(t["mode"])}" data-from="{esc(t["from"])}" data-to="{esc(t["to"])}">Kendall τ '
                f'between the ranking under <strong>{esc(t["from_label"])}</strong> and under '
                f'<strong>{esc(t["to_label"])}</strong> ({esc(t["mode"])} PCC, {t["n"]} encoder × reducer entries): '
                f'<strong class="tau">{tau}</strong>{small}</li>')

    items = "".join(item(t) for t in page["taus"])
    return f'<ul class="taus" id="taus">{items}</ul>'


def _published_rows_html(task: str) -> str:
    rows = published_for_task(task)
    if not rows:
        return ""
    metrics = [m for m in ("pcc", "pcc-10", "pcc-50", "pcc-200", "mse") if any(m in r["values"] for r in rows)]
    head = "".join(f'<th>{esc(m.upper())}</th>' for m in metrics)
    body = "".join(
        f'<tr class="published-row"><td><span class="badge badge-published">PUBLISHED</span> {esc(r["model"])}</td>'
        f'<td>{esc(r["reducer"] or "—")}</td>'
        + "".join(f'<td class="num">{r["values"][m]:.4f}</td>' if m in r["values"] else '<td class="num missing">—</td>'
                  for m in metrics)
        + f'<td class="hint">{esc(r["table"])}</td></tr>' for r in rows)
    return f"""<h3 id="published-task">Published reference numbers for {esc(task)} <span class="badge badge-published">PUBLISHED</span></h3>
<p class="hint">Other code, other data versions and (for some) other metrics: context only, <strong>never ranked with
ours</strong>. Sources on the <a href="index.html#published">leaderboard page</a>.</p>
<div class="table-wrap"><table class="published-task"><thead><tr><th>model</th><th>reducer</th>{head}<th>table</th></tr></thead>
<tbody>{body}</tbody></table></div>"""


def _alpha_html(page: dict[str, Any]) -> str:
    if not page["sweeps"]:
        return f"""<p class="empty" id="alpha-none">No alpha sweep stored for this task. <code>{esc(page["sweep_hint"])}</code>
stores the test PCC of every gene at 29 alphas from 1e-6 to 1e8 and at HEST's, per fold, from one decomposition per
fold (<code>--alpha sweep:LO:HI:N</code> for another grid); the site then draws PCC against alpha here.</p>"""
    items = "".join(f'<li data-run="{esc(c["run_id"])}" class="{"on" if c["on_plateau"] else "off"}">{esc(c["sentence"])}</li>'
                    for c in page["sweeps"])
    return f"""<p class="hint">Mean test PCC (pooled, over folds and genes) at each ridge α of the sweep, for every encoder ×
reducer with <code>--alpha sweep</code> runs. ◆ HEST's α = 100 / (n_features × n_genes); ★ the α each fold's inner
cross-validation chose. HEST's α is <em>on the plateau</em> when its PCC is within {PLATEAU:g} of the curve's peak.</p>
<div class="chart" id="alpha-chart"></div>
<ul class="sentences" id="alpha-sentences">{items}</ul>"""


def task_page(board: Leaderboard, task: str, *, files: dict[str, Any], built_at: str, store_name: str) -> str:
    page = board.tasks[task]
    runs = [board.run(rid) for rid in page["runs"]]
    synthetic = page["synthetic"]
    spatial = files["spatial"].get(task, {})
    views = []
    if spatial:
        views.append("<li>Spatial maps (measured and predicted expression at the spot coordinates): " + ", ".join(
            f'<a href="{esc(f)}">{esc(enc)}</a>' for enc, f in spatial.items()) + "</li>")
    else:
        views.append(f"<li>Spatial maps: {esc(files['spatial_reason'])}</li>")
    emb = files["embeddings"].get(task)
    views.append(f'<li><a href="{esc(emb)}">Embedding view</a> (raw, PCA and BP-Booster embeddings in 2-D)</li>' if emb
                 else f"<li>Embedding view: {esc(files['embeddings_reason'].get(task, 'not built'))}</li>")
    enc_select = '<label>Encoder <select id="encoder"></select></label>'
    body = f"""{_controls(board, page["protocols"], extra=enc_select)}
<section class="card"><h2>Views</h2><ul>{"".join(views)}</ul></section>
<section class="card" id="ranking"><h2>Ranking, and which steps of it are real</h2>
<p class="hint">Under the chosen protocol and PCC. Each entry is compared with the next one down, paired over
(fold, gene): Wilcoxon signed-rank on the per-gene PCC differences and a 95% bootstrap interval of their mean,
Holm-corrected over every neighbour pair of this protocol and PCC on the page. Two neighbours count as told apart
only when the adjusted p is below {SIGNIFICANCE:g}, the interval excludes 0, there are at least {MIN_FOLDS} folds and
every fold's mean difference has the same sign; otherwise they share a rank range (e.g. 1–2) and the row says why.
The genes of one fold are not independent: the test says a difference holds across genes, the folds say whether it
holds across tissue sections.</p>
{_taus_html(page)}
<h3>Encoders, within each reducer</h3><div id="rank-encoders"></div>
<h3>Reducers, for the encoder chosen above</h3><div id="rank-reducers"></div>
{_published_rows_html(task)}
</section>
<section class="card" id="alpha"><h2>Alpha sensitivity</h2>
{_alpha_html(page)}
</section>
<section class="card" id="genes"><h2>Per-gene PCC</h2>
<p class="hint">Mean PCC over folds per gene, for each reducer (its default options), with the encoder chosen above.</p>
<div class="chart" id="gene-chart"></div>
<label>Search genes <input type="search" id="gene-search" placeholder="gene name" autocomplete="off"></label>
<span id="gene-count" class="hint"></span> <span id="gene-note" class="note" aria-live="polite"></span>
<div class="table-wrap"><table class="sortable" id="gene-table"></table></div>
</section>
<section class="card" id="runs"><h2>All result sets of this task</h2>
<p class="hint">Every complete run, including reducer variants (options other than the defaults); the ones marked
"main" are in the leaderboard's views. Per-fold values in fold order.</p>
<div class="table-wrap"><table class="sortable" id="runs-table"></table></div>
</section>
<section class="card"><h2>Downloads (CSV)</h2><ul>
<li><a href="data/{esc(files["task_csv"][task])}" download>{esc(files["task_csv"][task])}</a>: per-gene PCC and MSE of this task's result sets</li>
<li><a href="data/results.csv" download>results.csv</a>, <a href="data/folds.csv" download>folds.csv</a>,
<a href="data/sample_genes.csv" download>sample_genes.csv</a>: all tasks</li></ul></section>
{protocol_card(board, runs, built_at=built_at)}"""
    data = {"page": "task", "task": task, "synthetic": synthetic, "protocols": _protocol_list(board),
            "default_protocol": page["protocols"][0] if page["protocols"] else board.default_protocol,
            "encoders": page["encoders"], "reducers": page["reducers"], "genes": page["genes"],
            "rankings": page["rankings"], "taus": page["taus"], "sweeps": page["sweeps"], "modes": list(PCC_MODES),
            "runs": [_run_public(r) for r in runs]}
    return _page(title=f"Task {task}", page="task", body=body, data=data, synthetic=synthetic,
                 nav=[("index.html", "Leaderboard"), ("#ranking", "Ranking"), ("#alpha", "Alpha"), ("#genes", "Genes"),
                      ("#runs", "Result sets"), ("#protocol-card", "Protocol")], built_at=built_at, store_name=store_name)
