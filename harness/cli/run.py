"""``bench run`` and ``bench results``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click

from stbench.cli._console import (
    SYNTHETIC_NOTE,
    console,
    data_root_option,
    err_console,
    make_progress,
    quiet_library_warnings,
    show_progress,
    store_option,
)

DEFAULT_TASK = "DEMO"


def _split_names(values: tuple[str, ...]) -> list[str]:
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def _read_reducer_config(path: str | None) -> dict[str, dict[str, object]]:
    """``--reducer-config FILE``: a TOML file with one table per reducer, e.g. ``[bpbooster-gp]`` ``lr = 1e-4``."""
    if not path:
        return {}
    import tomllib

    from stbench.errors import DataError
    from stbench.reducers import reducers

    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DataError(path, f"cannot read as TOML ({exc})") from None
    out: dict[str, dict[str, object]] = {}
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise DataError(path, f"{name} = {table!r}: expected a table per reducer, e.g. [bpbooster-gp] then lr = 1e-4")
        out[reducers.resolve(name)] = dict(table)
    return out


def _reducer_choices(names: list[str], opts: tuple[str, ...], *, config: str | None = None,  # noqa: ANN202
                     gene_sets: str | None = None):
    """Options for each chosen reducer: the config file's table, then ``--gene-sets``, then
    ``--reducer-opt [REDUCER.]KEY=VALUE`` (a bare key goes to every chosen reducer that has that option)."""
    import dataclasses

    from stbench.errors import StbenchError
    from stbench.reducers import reducers
    from stbench.runner import ReducerChoice

    canonical = [reducers.resolve(n) for n in names]
    fields = {n: {f.name for f in dataclasses.fields(reducers.get(n).Options)} for n in canonical}
    per: dict[str, dict[str, object]] = {n: {} for n in canonical}
    for name, table in _read_reducer_config(config).items():
        if name in per:
            per[name].update(table)
    if gene_sets:
        takers = [n for n in canonical if "gene_sets" in fields[n]]
        if not takers:
            raise StbenchError(f"--gene-sets applies to gene-program reducers (bpbooster-gp); none among {', '.join(canonical)}")
        for n in takers:
            per[n]["gene_sets"] = gene_sets
    for item in opts:
        key, sep, value = item.partition("=")
        if not sep:
            raise StbenchError(f"--reducer-opt {item!r}: expected KEY=VALUE or REDUCER.KEY=VALUE")
        target, dot, bare = key.partition(".")
        if dot and target in reducers:
            name = reducers.resolve(target)
            if name not in per:
                raise StbenchError(f"--reducer-opt {item!r}: reducer {name} is not among --reducer {','.join(canonical)}")
            per[name][bare] = value
            continue
        takers = [n for n in canonical if key in fields[n]]
        if not takers:
            raise StbenchError(f"--reducer-opt {item!r}: none of the reducers {', '.join(canonical)} has an option {key!r}")
        for n in takers:
            per[n][key] = value
    return [ReducerChoice(n, per[n]) for n in canonical]


def _protocol(genes: str, solver: str | None, alpha: str | None, intercept: bool, seed: int):  # noqa: ANN202
    from stbench.expression import read_gene_file
    from stbench.protocol import Protocol

    if genes in ("task", "train-hvg"):
        return Protocol.from_options(genes=genes, solver=solver, alpha=alpha, intercept=intercept, seed=seed)
    path = Path(genes)
    if not path.exists():
        from stbench.errors import ProtocolError

        raise ProtocolError(f"--genes must be 'task', 'train-hvg' or an existing gene file; {genes!r} is none of these")
    return Protocol.from_options(genes="file", gene_list=tuple(read_gene_file(path)), solver=solver, alpha=alpha,
                                 intercept=intercept, seed=seed)


def _variant(r) -> str:  # noqa: ANN001
    """A result's reducer options that differ from that reducer's defaults."""
    from stbench.reducers import reducers

    opts = json.loads(r.reducer_options)
    try:
        return reducers.get(r.reducer).variant_label(opts, task=r.task, encoder=r.encoder)
    except Exception:  # noqa: BLE001 - a plugin no longer installed: show the raw options
        return json.dumps(opts, sort_keys=True)


def _describe_report(reducer: str, report_json: str) -> str:
    """One line from a fold's stored reducer report (BP-Booster: J, SVG overlaps, prototype correlation, losses)."""
    report = json.loads(report_json)
    if "n_prototypes" not in report:
        return ", ".join(f"{k}={v}" for k, v in report.items())
    from stbench.reducers.bpbooster import describe_report

    return describe_report(report)


def _fmt(x: float | None, digits: int = 4) -> str:
    return "nan" if x is None or x != x else f"{x:.{digits}f}"


def print_results(results, *, title: str = "Results") -> None:  # noqa: ANN001
    """The rich table of `bench run`: one row per (task, encoder, reducer), then per-fold PCC and the protocol."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    synthetic = any(r.synthetic for r in results)
    table = Table(title=title + (" [bold yellow](SYNTHETIC data)[/]" if synthetic else ""), title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for col, kw in (("task", {}), ("encoder", {"no_wrap": True}), ("reducer", {}), ("folds", {"justify": "right"}),
                    ("PCC mean ± std", {"justify": "right", "no_wrap": True}), ("MSE", {"justify": "right"}),
                    ("NaN", {"justify": "right"})):
        table.add_column(col, **kw)
    for r in results:
        mean, std = r.pcc
        reducer = r.reducer + (f" {label}" if (label := _variant(r)) else "")
        table.add_row(
            escape(r.task), escape(r.encoder), escape(reducer) + (" [dim](cached)[/]" if r.cached else ""),
            str(len(r.folds)), f"{_fmt(mean)} ± {_fmt(std)}", _fmt(r.mse, 3), str(r.n_nan),
        )
    out = console()
    out.print(table)
    if results:
        out.print(f"[dim]protocol: {escape(results[0].protocol.describe())} · fingerprint {results[0].protocol.fingerprint}[/]")
        for r in results:
            per_fold = ", ".join(f"fold {f['fold']}: {_fmt(f['pcc_mean'])} (n_test={f['n_test']}, alpha={f['alpha']:.3g})" for f in r.folds)
            out.print(f"[dim]{escape(r.reducer)}: {per_fold}[/]")
            for f in r.folds:
                if f.get("reducer_report"):
                    out.print(f"[dim]  fold {f['fold']}: {escape(_describe_report(r.reducer, f['reducer_report']))}[/]")
    if synthetic:
        out.print(f"[bold yellow]{SYNTHETIC_NOTE}[/]")


def _options(*decorators: Callable) -> Callable:
    def apply(f: Callable) -> Callable:
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


protocol_options = _options(
    click.option("--genes", default="task", show_default=True, metavar="task|train-hvg|FILE",
                 help="Evaluation genes: the task's var_50genes.json (HEST), the top-50 HVGs of each fold's training "
                      "samples (no test-fold leakage), or a gene file (JSON or one per line)."),
    click.option("--solver", type=click.Choice(["lsqr", "exact"]), default=None,
                 help="Ridge solver: lsqr = scikit-learn's, as the HEST reference (default); exact = closed form in "
                      "torch (default with --alpha cv)."),
    click.option("--alpha", default=None, metavar="hest|cv|FLOAT",
                 help="Ridge penalty: hest = 100/(n_features*n_genes) (default); cv = chosen by cross-validation "
                      "inside the training fold, grouped by sample; or a number."),
    click.option("--intercept/--no-intercept", default=False, show_default=True, help="Fit a ridge intercept (HEST: no)."),
    click.option("--seed", default=1, show_default=True, help="Seed for PCA and any stochastic reducer (HEST: 1)."),
)

execution_options = _options(
    click.option("--weights", default=None, type=click.Path(dir_okay=False), help="Use this weight file for the encoder."),
    click.option("--batch-size", type=click.IntRange(min=1), default=None,
                 help="Patches per forward pass and per read. [default: 16 per forward and 128 per read on CPU; "
                      "on a GPU the largest power of two up to 512 that fits in memory]"),
    click.option("--compile", "compile_", is_flag=True, help="torch.compile the encoder (pays off on long GPU runs)."),
    click.option("--device", default="auto", show_default=True,
                 help="auto (CUDA when present), cpu, or cuda[:N]; used for extraction and BP-Booster training."),
    click.option("--force", is_flag=True, help="Recompute results already in the store for the same protocol."),
    click.option("--progress/--no-progress", default=None, help="Progress bars [default: on a terminal]."),
    data_root_option,
    store_option,
)

gene_sets_option = click.option(
    "--gene-sets", default=None, metavar="PATH|hallmark",
    help="Pathways for bpbooster-gp: a GMT file, or hallmark (MSigDB Hallmark, downloaded once into "
         "$STBENCH_HOME/genesets; needs the network). [default: hallmark]")


def execute(task_names: list[str], encoders_: list[str], choices, protocol, *, data_root, store, progress,  # noqa: ANN001, ANN201
            **run_kw):
    """Open the tasks (creating the synthetic demo if it is asked for and absent) and run every encoder on
    each with the chosen reducers; returns the RunResults in order."""
    from stbench.encoders import encoders as encoder_registry
    from stbench.runner import run_task
    from stbench.settings import data_root as resolve_root
    from stbench.settings import store_root
    from stbench.stores import Store
    from stbench.tasks import open_task

    root = resolve_root(data_root)
    for e in encoders_:
        encoder_registry.resolve(e)  # unknown names fail before any work
    opened = []
    for name in task_names:
        if name.upper() == DEFAULT_TASK and not (root / DEFAULT_TASK).exists():
            from stbench.data.demo import make_demo

            err_console().print(f"Creating the synthetic demo task in {root / DEFAULT_TASK} (bench data demo) ...")
            make_demo(root)
        opened.append(open_task(name, root))
    results = []
    with Store(store_root(store)) as st, make_progress(enabled=show_progress(progress)) as bar:
        for task in opened:
            for enc in encoders_:
                results += run_task(task, enc, choices, protocol, st, progress=bar, **run_kw)
    return results


@click.command()
@click.option("--task", "tasks", multiple=True, metavar="NAME",
              help="Task folder name under the data root, case-insensitive (luad -> LUNG). "
                   "[default: the synthetic demo, created if absent]")
@click.option("--encoder", "encoder_names", multiple=True, metavar="NAME",
              help="Encoder(s), comma-separated; see `bench list encoders`. [default: efficientnet-lite0]")
@click.option("--reducer", "reducer_names", multiple=True, metavar="NAME",
              help="Reducer(s), comma-separated; see `bench list reducers`. [default: identity,pca]")
@click.option("--reducer-opt", "reducer_opts", multiple=True, metavar="[REDUCER.]KEY=VALUE",
              help="Reducer option, e.g. n_components=128, pca.n_components=128, lr=1e-4, attention=literal. Repeatable; "
                   "overrides --reducer-config.")
@click.option("--reducer-config", type=click.Path(dir_okay=False, exists=True), default=None,
              help="TOML file of reducer options, one table per reducer: [bpbooster-gp] lr = 1e-4.")
@gene_sets_option
@protocol_options
@execution_options
def run(tasks, encoder_names, reducer_names, reducer_opts, reducer_config, gene_sets, genes, solver, alpha, intercept,  # noqa: ANN001, ANN201, PLR0913
        seed, weights, batch_size, compile_, device, force, progress, data_root, store):
    """Benchmark encoders x reducers on tasks under the HEST protocol and store every number.

    Embeddings are computed once per (task, encoder weights, sample) and reused; results already in the
    store for the same protocol are shown from the store (--force recomputes). With no options, runs the
    offline default: efficientnet-lite0 with identity and pca on the synthetic demo task.

    \b
    BP-Booster (bpbooster-random, bpbooster-gp) trains on each training fold; options left at 0 take the
    paper's values for the encoder and task (see `bench list reducers`). Examples:
      bench run --task her2st --reducer pca,bpbooster-random,bpbooster-gp --gene-sets h.all.v7.0.symbols.gmt
      bench run --task luad --encoder uni --reducer bpbooster-gp --reducer-opt attention=literal --alpha cv
    """
    quiet_library_warnings()
    from stbench.settings import store_root

    choices = _reducer_choices(_split_names(reducer_names) or ["identity", "pca"], reducer_opts, config=reducer_config,
                               gene_sets=gene_sets)
    protocol = _protocol(genes, solver, alpha, intercept, seed)
    results = execute(_split_names(tasks) or [DEFAULT_TASK], _split_names(encoder_names) or ["efficientnet-lite0"],
                      choices, protocol, data_root=data_root, store=store, progress=progress, weights=weights,
                      batch_size=batch_size, device=device, compile=compile_, force=force)
    print_results(results)
    console().print(f"[dim]store: {store_root(store)}[/]")


@click.command()
@click.option("--task", default=None, help="Only this task.")
@click.option("--encoder", default=None, help="Only this encoder.")
@click.option("--reducer", default=None, help="Only this reducer.")
@click.option("--genes", "per_gene", is_flag=True, help="Per-gene rows (PCC and MSE per fold) instead of run summaries.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--export", type=click.Path(dir_okay=False), default=None,
              help="Also write the rows to a .parquet or .csv file (polars).")
@click.option("--all", "include_incomplete", is_flag=True, help="Include runs that did not complete.")
@store_option
def results(task, encoder, reducer, per_gene, fmt, export, include_incomplete, store):  # noqa: ANN001, ANN201
    """Show and filter results stored in the catalog."""
    from stbench.settings import store_root
    from stbench.stores import Catalog

    with Catalog(store_root(store) / "catalog.duckdb", read_only=True) as cat:
        df = cat.summary(task=task, encoder=encoder, reducer=reducer, include_incomplete=include_incomplete)
        if per_gene:
            df = cat.gene_table(run_ids=df["run_id"].to_list())
    if export:
        path = Path(export)
        if path.suffix == ".parquet":
            df.write_parquet(path)
        elif path.suffix == ".csv":
            df.write_csv(path)
        else:
            raise click.BadParameter("use a .parquet or .csv file name", param_hint="--export")
        err_console().print(f"wrote {len(df)} rows to {path}")
    if fmt == "csv":
        click.echo(df.write_csv(), nl=False)
    elif fmt == "json":
        click.echo(df.write_json())
    else:
        _print_frame(df, synthetic=not per_gene and bool(df["synthetic"].any()) if len(df) else False)


def _print_frame(df, *, synthetic: bool) -> None:  # noqa: ANN001
    from rich.markup import escape
    from rich.table import Table

    if len(df) == 0:
        console().print("no results match")
        return
    table = Table()
    hidden = {"reducer_options", "weights_fingerprint", "protocol_fingerprint", "stbench_version", "finished_at", "run_id"}
    cols = [c for c in df.columns if c not in hidden] if "pcc_mean" in df.columns else df.columns
    for c in cols:
        table.add_column(c)
    for row in df.select(cols).iter_rows():
        table.add_row(*[_fmt(v) if isinstance(v, float) else escape(str(v)) for v in row])
    console().print(table)
    if synthetic:
        console().print(f"[bold yellow]Rows marked synthetic: {SYNTHETIC_NOTE}[/]")
