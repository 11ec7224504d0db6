"""``bench explain`` (what a fitted BP-Booster attends to) and ``bench ablate`` (the paper's ablation table)."""

from __future__ import annotations

import json

import click

from stbench.cli._console import SYNTHETIC_NOTE, console, err_console, quiet_library_warnings, store_option
from stbench.cli.run import (
    _fmt,
    _protocol,
    _split_names,
    execute,
    execution_options,
    gene_sets_option,
    print_results,
    protocol_options,
)


@click.command()
@click.option("--task", required=True, help="Task name as stored (case-insensitive).")
@click.option("--encoder", default="efficientnet-lite0", show_default=True)
@click.option("--fold", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--reducer", default="bpbooster-gp", show_default=True, help="bpbooster-gp or bpbooster-random.")
@click.option("--run", "run_id", default=None, help="Which run, when several match (the newest by default).")
@click.option("--on", type=click.Choice(["test", "train", "all"]), default="test", show_default=True,
              help="Whose spots the attention is averaged over: the fold's test samples, its training samples, or both.")
@click.option("--spots", "spots_out", type=click.Path(dir_okay=False), default=None,
              help="Write per-spot attention (sample_id, barcode, x, y, one column per pathway) to a .csv or .parquet file.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@store_option
def explain(task, encoder, fold, reducer, run_id, on, spots_out, fmt, store):  # noqa: ANN001, ANN201, PLR0913
    """Which pathways a fitted BP-Booster uses: prototypes ranked by their gate and by mean attention.

    Reads the booster saved by `bench run` for this task, encoder and fold, and the stored embeddings of the
    fold's samples; nothing is retrained. For gene-program prototypes each prototype is a pathway of the
    GMT file that shared enough SVGs with the training fold.
    """
    quiet_library_warnings()
    from rich.markup import escape
    from rich.table import Table

    from stbench.explain import explain_fold
    from stbench.reducers import reducers
    from stbench.settings import store_root
    from stbench.stores import Store

    with Store(store_root(store), read_only=True) as st:
        ex = explain_fold(st, task=task, encoder=encoder, fold=fold, reducer=reducers.resolve(reducer), run_id=run_id, on=on)
    if spots_out:
        from pathlib import Path

        path = Path(spots_out)
        if path.suffix == ".parquet":
            ex.spots.write_parquet(path)
        elif path.suffix == ".csv":
            ex.spots.write_csv(path)
        else:
            raise click.BadParameter("use a .csv or .parquet file name", param_hint="--spots")
        err_console().print(f"wrote per-spot attention for {len(ex.spots)} spots to {path}")
    if fmt == "json":
        click.echo(json.dumps(ex.to_dict(), indent=1, default=str))
        return
    out = console()
    r = ex.report
    variant = f" {escape(ex.variant)}" if ex.variant else ""
    out.print(f"[bold]{escape(ex.task)} · {escape(ex.encoder)} · {escape(ex.reducer)}{variant} · fold {ex.fold}[/] "
              f"(run {ex.run_id}, alpha {escape(str(ex.protocol.get('alpha')))}"
              + (", [bold yellow]SYNTHETIC data[/]" if ex.synthetic else "") + ")")
    if "programs_kept" in r:
        out.print(f"J = {r['programs_kept']} pathways of {r['programs_total']} in {escape(str(r.get('gene_sets')))} "
                  f"share >= {r['min_shared']} of the {r['n_svg']} SVGs ({r['svg_rule']}); initial prototypes' mean "
                  f"pairwise correlation {r['init_prototype_corr']:.3f}" + (" (nearly collinear: attention starts almost "
                  "uniform)" if r["init_prototype_corr"] > 0.9 else ""))
    out.print(f"attention averaged over {len(ex.spots)} spots of the {on} samples {', '.join(map(escape, ex.samples))}")
    table = Table(title_justify="left", caption="#gate, #attn: rank by gate and by mean attention; SVGs: SVGs the "
                  "pathway shares", caption_justify="left")
    for col in ("#gate", "prototype", "gate", "mean attention", "#attn", "SVGs"):
        table.add_column(col, justify="left" if col == "prototype" else "right",
                         overflow="fold" if col == "prototype" else "ellipsis", min_width=len(col))
    for row in ex.pathways.iter_rows(named=True):
        table.add_row(str(row["rank_gate"]), escape(row["prototype"]), f"{row['gate']:.4f}", f"{row['mean_attention']:.4f}",
                      str(row["rank_attention"]), "" if row["svg_overlap"] is None else str(row["svg_overlap"]))
    out.print(table)
    if ex.other_runs:
        out.print(f"[dim]{len(ex.other_runs)} other matching run(s), choose with --run: {escape(', '.join(ex.other_runs))}[/]")
    if ex.synthetic:
        out.print(f"[bold yellow]{SYNTHETIC_NOTE}[/]")


@click.command()
@click.option("--task", "tasks", multiple=True, metavar="NAME", help="Task(s), comma-separated. [default: the synthetic demo]")
@click.option("--encoder", "encoder_names", multiple=True, metavar="NAME", help="Encoder(s). [default: efficientnet-lite0]")
@click.option("--rows", default=None, metavar="KEY,...", help="Only these rows (see --list).")
@click.option("--list", "list_rows", is_flag=True, help="List the rows and their reducer options, then exit.")
@click.option("--reducer-opt", "reducer_opts", multiple=True, metavar="KEY=VALUE",
              help="An option given to every BP-Booster row (e.g. epochs=20); rows keep their own ablated options.")
@gene_sets_option
@protocol_options
@execution_options
def ablate(tasks, encoder_names, rows, list_rows, reducer_opts, gene_sets, genes, solver, alpha, intercept, seed,  # noqa: ANN001, ANN201, PLR0913
           weights, batch_size, compile_, device, force, progress, data_root, store):
    """Run the BP-Booster paper's ablation table on any task and encoder.

    Rows: ridge on raw embeddings; + cross-attention (no gates); + prototype gate; + dimension gate; both
    gates (= bpbooster-random); + gene-program init (= bpbooster-gp); without the regression loss; without the
    reconstruction loss; and both inits under the literal attention. Each row is stored as its own reducer
    variant, so rerunning reads it back. The paper's published numbers (SKCM, Virchow 2) are shown beside
    ours in their own column, never mixed in. Run it under both --alpha hest and --alpha cv.
    """
    quiet_library_warnings()
    from rich.markup import escape
    from rich.table import Table

    from stbench.ablation import PUBLISHED_SOURCE, select_rows
    from stbench.errors import StbenchError
    from stbench.runner import ReducerChoice

    chosen = select_rows(_split_names((rows,)) if rows else None)
    if list_rows:
        listing = Table("key", "row", "reducer", "options", "published PCC*", title_justify="left")
        for r in chosen:
            listing.add_row(r.key, escape(r.label), r.reducer, escape(json.dumps(r.options)),
                            "" if r.published is None else f"{r.published:.4f}")
        console().print(listing)
        console().print(f"[dim]* {PUBLISHED_SOURCE}[/]")
        return
    extra: dict[str, str] = {}
    for item in reducer_opts:
        key, sep, value = item.partition("=")
        if not sep:
            raise StbenchError(f"--reducer-opt {item!r}: expected KEY=VALUE")
        extra[key] = value
    import dataclasses

    from stbench.reducers import reducers

    if gene_sets:
        extra["gene_sets"] = gene_sets
    fields = {r.reducer: {f.name for f in dataclasses.fields(reducers.get(r.reducer).Options)} for r in chosen}
    unused = [k for k in extra if not any(k in f for f in fields.values())]
    if unused:
        raise StbenchError(f"--reducer-opt {unused[0]}: no row's reducer has that option")
    choices = []
    for r in chosen:  # shared options go to the BP-Booster rows that have them; a row's own options win
        shared = {k: v for k, v in extra.items() if k in fields[r.reducer]} if r.reducer.startswith("bpbooster") else {}
        choices.append(ReducerChoice(r.reducer, {**shared, **r.options}))
    protocol = _protocol(genes, solver, alpha, intercept, seed)
    from stbench.cli.doctor import check_before_run
    from stbench.network import offline_while

    task_list, encoder_list = _split_names(tasks) or ["DEMO"], _split_names(encoder_names) or ["efficientnet-lite0"]
    reach = check_before_run(task_list, encoder_list, choices, data_root=data_root, store=store, weights=weights,
                             device=device)  # every missing piece at once, before any work
    with offline_while(reach):
        results = execute(task_list, encoder_list, choices, protocol, data_root=data_root, store=store,
                          progress=progress, weights=weights, batch_size=batch_size, device=device, compile=compile_,
                          force=force)
    print_results(results, title="Ablation runs")
    n = len(chosen)
    for start in range(0, len(results), n):
        block = results[start : start + n]
        table = Table(title=f"Ablation: {escape(block[0].task)} · {escape(block[0].encoder)} · {escape(protocol.describe())}",
                      title_justify="left")
        for col in ("row", "variant", "PCC mean ± std", "Δ vs ridge", "published*"):
            table.add_column(col, justify="left" if col in ("row", "variant") else "right", no_wrap=col != "variant")
        base = block[0].pcc[0] if chosen[0].key == "ridge" else None
        for row, res in zip(chosen, block):
            mean, std = res.pcc
            table.add_row(row.key, escape(row.label), f"{_fmt(mean)} ± {_fmt(std)}",
                          "" if base is None else f"{mean - base:+.4f}",
                          "" if row.published is None else f"{row.published:.4f}")
        console().print(table)
    console().print(f"[dim]* published: {PUBLISHED_SOURCE}; a different task and encoder, shown for reference only.[/]")
