"""``bench run`` and ``bench results``."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
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


def _reducer_choices(names: Sequence[str | tuple[str, dict]], opts: tuple[str, ...], *, config: str | None = None,  # noqa: ANN202
                     gene_sets: str | None = None):
    """Options for each chosen reducer: its ``--reducer-config`` table, then the options it came with (a grid
    file's ``{ name = "pca", n_components = 64 }``), then ``--gene-sets``, then ``--reducer-opt
    [REDUCER.]KEY=VALUE`` (a bare key goes to every chosen reducer that has that option). Identical choices
    are kept once."""
    import dataclasses

    from stbench.errors import StbenchError
    from stbench.reducers import reducers
    from stbench.runner import ReducerChoice

    entries = [(n, {}) if isinstance(n, str) else n for n in names]
    canonical = [reducers.resolve(n) for n, _ in entries]
    listed = ", ".join(dict.fromkeys(canonical))
    fields = {n: {f.name for f in dataclasses.fields(reducers.get(n).Options)} for n in canonical}
    table = _read_reducer_config(config)
    per: list[dict[str, object]] = [{**table.get(n, {}), **own} for n, (_, own) in zip(canonical, entries)]
    if gene_sets:
        takers = [i for i, n in enumerate(canonical) if "gene_sets" in fields[n]]
        if not takers:
            raise StbenchError(f"--gene-sets applies to gene-program reducers (bpbooster-gp); none among {listed}")
        for i in takers:
            per[i]["gene_sets"] = gene_sets
    for item in opts:
        key, sep, value = item.partition("=")
        if not sep:
            raise StbenchError(f"--reducer-opt {item!r}: expected KEY=VALUE or REDUCER.KEY=VALUE")
        target, dot, bare = key.partition(".")
        if dot and target in reducers:
            name = reducers.resolve(target)
            if name not in canonical:
                raise StbenchError(f"--reducer-opt {item!r}: reducer {name} is not among --reducer {listed.replace(', ', ',')}")
            for i in (i for i, n in enumerate(canonical) if n == name):
                per[i][bare] = value
            continue
        takers = [i for i, n in enumerate(canonical) if key in fields[n]]
        if not takers:
            raise StbenchError(f"--reducer-opt {item!r}: none of the reducers {listed} has an option {key!r}")
        for i in takers:
            per[i][key] = value
    unique = {json.dumps([n, o], sort_keys=True, default=str): ReducerChoice(n, o) for n, o in zip(canonical, per)}
    return list(unique.values())


def _pick_reducers(cli: list[str], from_file: Sequence[tuple[str, dict]] | None) -> list[str | tuple[str, dict]]:
    """``--reducer`` names pick the grid file's variants of those reducers (with their options), or add
    reducers with default options; without ``--reducer``, the file's list, else identity and pca. ``all``:
    every registered reducer."""
    from stbench.grid import ALL
    from stbench.reducers import reducers

    def expand(entries: Sequence[tuple[str, dict]]) -> list[tuple[str, dict]]:
        return [e for n, o in entries for e in ([(r, {}) for r in reducers.names()] if n.lower() == ALL else [(n, o)])]

    file_entries = expand(from_file or [])
    if not cli:
        return list(file_entries or [("identity", {}), ("pca", {})])
    picked: list[str | tuple[str, dict]] = []
    for name, _ in expand([(n, {}) for n in cli]):
        canonical = reducers.resolve(name)
        picked.extend([e for e in file_entries if reducers.resolve(e[0]) == canonical] or [name])
    return picked


def _seeds(value: str) -> list[int]:
    from stbench.errors import ProtocolError

    try:
        return [int(s) for s in _split_names((str(value),))]
    except ValueError:
        raise ProtocolError(f"--seed {value!r}: expected an integer, or several comma-separated") from None


def _protocol(genes: str, solver: str | None, alpha: str | None, intercept: bool, seed: int | str):  # noqa: ANN202
    """One protocol from single option values (bench ablate)."""
    from stbench.errors import ProtocolError
    from stbench.grid import protocol_variants

    seeds = _seeds(str(seed))
    if len(seeds) != 1:
        raise ProtocolError(f"--seed {seed!r}: this command takes one seed")
    (protocol,) = protocol_variants([alpha or "hest"], [genes], seeds, solver=solver, intercept=intercept)
    return protocol


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


def _reducer_text(r) -> str:  # noqa: ANN001 - a RunResult or a CellFailure
    return r.reducer + (f" {label}" if (label := _variant(r)) else "")


def _pcc_text(r, pcc: str) -> list[str]:  # noqa: ANN001
    """The PCC cells of a row: pooled, per-sample, or both."""
    kinds = ("pooled", "per-sample") if pcc == "both" else (pcc,)
    return [f"{_fmt(m)} ± {_fmt(s)}" for m, s in (r.pcc if k == "pooled" else r.pcc_per_sample for k in kinds)]


def print_results(results, *, title: str = "Results", pcc: str = "pooled") -> None:  # noqa: ANN001
    """The rich table of `bench run`: one row per result set (task, encoder, reducer, and the protocol when
    there are several), then per-fold PCC and the protocols. ``results``: RunResults (bench ablate: cached
    rows marked in the reducer column) or a grid's CellOutcomes (a status column: ok, cached, FAILED)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from stbench.grid import CellOutcome, protocol_label
    from stbench.metrics import per_sample_fold_score

    grid = any(isinstance(o, CellOutcome) for o in results)
    rows = [(o.result, o.status, o.error, o.cell.protocol) if isinstance(o, CellOutcome) else (o, None, None, o.protocol)
            for o in results]
    variants = list({p.fingerprint: p for *_, p in rows}.values())
    labels = {p.fingerprint: protocol_label(p, variants) for p in variants}
    done = [(r, labels[p.fingerprint]) for r, status, _, p in rows if status != "failed"]
    synthetic = any(r.synthetic for r, _ in done)
    table = Table(title=title + (" [bold yellow](SYNTHETIC data)[/]" if synthetic else ""), title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    pcc_cols = {"pooled": ["PCC mean ± std"], "per-sample": ["per-sample PCC mean ± std"],
                "both": ["PCC pooled", "PCC per-sample"]}[pcc]
    columns = [("task", {}), ("encoder", {"no_wrap": True}), ("reducer", {})]
    columns += [("protocol", {})] if len(variants) > 1 else []
    columns += [("folds", {"justify": "right"})] + [(c, {"justify": "right", "no_wrap": True}) for c in pcc_cols]
    columns += [("MSE", {"justify": "right"}), ("NaN", {"justify": "right"})] + ([("status", {"max_width": 70})] if grid else [])
    for col, kw in columns:
        table.add_column(col, **kw)
    for r, status, error, p in rows:
        cells = [escape(r.task), escape(r.encoder_label), escape(_reducer_text(r))]
        if status is None and r.cached:
            cells[-1] += " [dim](cached)[/]"
        cells += [escape(labels[p.fingerprint])] if len(variants) > 1 else []
        if status == "failed":
            cells += ["-"] * (1 + len(pcc_cols) + 2) + [f"[bold red]FAILED[/]: {escape(error or '')}"]
        else:
            cells += [str(len(r.folds)), *_pcc_text(r, pcc), _fmt(r.mse, 3), str(r.n_nan)]
            cells += [{"ok": "ok", "cached": "[dim]cached[/]"}[status]] if grid else []
        table.add_row(*cells)
    out = console()
    if out.is_terminal:
        out.print(table)
    else:  # a log or a pipe: the whole table, not squeezed into 80 columns
        from rich.measure import Measurement

        width = out.width
        out.width = max(width, Measurement.get(out, out.options.update(max_width=240), table).maximum)
        try:
            out.print(table)
        finally:
            out.width = width
    for fp, p in {r.protocol.fingerprint: r.protocol for r, _ in done}.items():
        label = protocol_label(p, variants) if len(variants) > 1 else ""
        out.print(f"[dim]protocol{' ' + escape(label) if label else ''}: {escape(p.describe())} · fingerprint {fp}[/]")
    for enc, fp in dict.fromkeys((r.encoder, r.weights_fingerprint) for r, _ in done):
        if fp.startswith("imported:"):  # which imported set (`bench embeddings import`) these rows come from
            out.print(f"[dim]{escape(enc)} (imported): embeddings {escape(fp)}[/]")
    several = len({(r.task, r.encoder) for r, _ in done}) > 1
    for r, label in done:
        name = " · ".join([*([r.task, r.encoder_label] if several else []), _reducer_text(r)]) + (f" [{label}]" if label else "")
        per_sample = {f: per_sample_fold_score(s) for f, s in r.sample_pcc.items()} if pcc != "pooled" else {}
        per_fold = ", ".join(
            f"fold {f['fold']}: {_fmt(f['pcc_mean'])} ("
            + (f"per-sample {_fmt(per_sample.get(f['fold']))}, " if per_sample else "")
            + f"n_test={f['n_test']}, alpha={f['alpha']:.3g})" for f in r.folds)
        out.print(f"[dim]{escape(name)}: {per_fold}[/]")
        for f in r.folds:
            if f.get("reducer_report"):
                out.print(f"[dim]  fold {f['fold']}: {escape(_describe_report(r.reducer, f['reducer_report']))}[/]")
    if synthetic:
        out.print(f"[bold yellow]{SYNTHETIC_NOTE}[/]")


def _cell_line(o, protocols) -> str:  # noqa: ANN001 - a CellOutcome, the grid's protocol variants
    """One line per finished cell while a grid runs."""
    from rich.markup import escape

    from stbench.grid import protocol_label

    c, r = o.cell, o.result
    label = protocol_label(c.protocol, protocols)
    what = escape(" · ".join([r.encoder_label, c.task, _reducer_text(r)] + ([label] if label else [])))
    if o.status == "failed":
        return f"[bold red]FAILED[/] {what}: {escape(o.error or '')}"
    mean, std = r.pcc
    return f"{'[dim]cached[/]' if o.status == 'cached' else '[green]ok[/]    '} {what}  PCC {_fmt(mean)} ± {_fmt(std)}"


def _options(*decorators: Callable) -> Callable:
    def apply(f: Callable) -> Callable:
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


def _protocol_options(*, grid: bool) -> Callable:
    """The protocol's options; in a grid (`bench run`) alpha, genes and seed take several values."""
    many = " Several, comma-separated: one result set each." if grid else ""
    return _options(
        click.option("--genes", "--eval-genes", "genes", default="task", show_default=True,
                     metavar="task|train-hvg|pam50|FILE",
                     help="Evaluation genes: the task's var_50genes.json (HEST); the top-50 HVGs of each fold's training "
                          "samples (no test-fold leakage); or a panel, pam50 (built in) or a gene file (JSON or one per "
                          "line), of which the genes measured in every sample are evaluated (the others are listed)."
                          + many),
        click.option("--solver", type=click.Choice(["lsqr", "exact"]), default=None,
                     help="Ridge solver: lsqr = scikit-learn's, as the HEST reference (default); exact = closed form in "
                          "torch (default with --alpha cv)."),
        click.option("--alpha", default=None, metavar="hest|cv|sweep[:LO:HI:N]|FLOAT",
                     help="Ridge penalty: hest = 100/(n_features*n_genes) (default); cv = chosen by cross-validation "
                          "inside the training fold, grouped by sample (lowest held-out MSE); sweep = the test PCC "
                          "of every gene stored at N alphas from LO to HI (default 1e-6..1e8, 29) and at HEST's, "
                          "all from one decomposition per fold, for sensitivity curves (the headline is the CV choice "
                          "among them); or a number." + many),
        click.option("--intercept/--no-intercept", default=None,
                     help="Fit a ridge intercept. [default: no under the HEST alpha, as HEST; yes with --alpha cv]"),
        click.option("--seed", default="1" if grid else 1, show_default=True, metavar="INT",
                     help="Seed for PCA and any stochastic reducer (HEST: 1)." + many),
    )


protocol_options = _protocol_options(grid=False)

execution_options = _options(
    click.option("--weights", multiple=True, metavar="[ENCODER=]PATH|random[:SEED]|imported",
                 help="The encoder's weight file (or a folder with config.json), instead of the configured, packaged "
                      "or hub weights; random[:SEED] builds the architecture with random weights (a control, shown "
                      "as 'random weights'); imported[:FINGERPRINT] uses embeddings brought in with `bench "
                      "embeddings import` (shown as 'imported'). In a grid of several encoders say which: --weights "
                      "resnet50=random. Repeatable."),
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


def _data_root(task_names: Sequence[str], data_root: str | None) -> Path:
    """The data root, with the synthetic demo created in it when it is asked for and absent."""
    from stbench.settings import data_root as resolve_root

    root = resolve_root(data_root)
    if any(n.upper() == DEFAULT_TASK for n in task_names) and not (root / DEFAULT_TASK).exists():
        from stbench.data.demo import make_demo

        err_console().print(f"Creating the synthetic demo task in {root / DEFAULT_TASK} (bench data demo) ...")
        make_demo(root)
    return root


def _run_plan(plan, *, store, progress, keep_going: bool, on_cell=None, **run_kw):  # noqa: ANN001, ANN202
    from rich.markup import escape

    from stbench.grid import run_grid
    from stbench.settings import store_root
    from stbench.stores import Store

    for note in plan.notes:
        err_console().print(f"[yellow]Note:[/] {escape(note)}")
    with Store(store_root(store)) as st, make_progress(enabled=show_progress(progress), log=progress is None) as bar:
        return run_grid(plan, st, progress=bar, keep_going=keep_going,
                        on_cell=None if on_cell is None else (lambda o: on_cell(bar, o)), **run_kw)


def execute(task_names: list[str], encoders_: list[str], choices, protocol, *, data_root, store, progress,  # noqa: ANN001, ANN201
            weights: Sequence[str] = (), **run_kw):
    """Run every encoder with the chosen reducers on the tasks (creating the synthetic demo if it is asked
    for and absent), as a grid of one protocol; returns the RunResults in order, raising the first failure."""
    from stbench.grid import make_spec, plan_grid, weights_by_encoder

    root = _data_root(task_names, data_root)
    plan = plan_grid(make_spec(task_names, encoders_, choices, [protocol], root), root)
    weights = weights_by_encoder(weights, plan.spec.encoders)
    return [o.result for o in _run_plan(plan, store=store, progress=progress, keep_going=False, weights=weights,
                                        **run_kw)]


def _given(name: str) -> bool:
    """Whether the user set option ``name`` on the command line (not its default)."""
    from click.core import ParameterSource

    source = click.get_current_context().get_parameter_source(name)
    return source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


GRID_HELP = """
\b
Grids: --task, --encoder, --reducer, --alpha, --genes and --seed take several values, comma-separated
(`all`: every task under the data root, every encoder, every reducer). Cells run encoder by
encoder; each (encoder, sample) is embedded once and each reducer fitted once per fold and seed for all
protocol variants; each cell is its own result set, read back from the store when it exists (--force
recomputes). A failed cell is shown with its error and the grid goes on; the exit code is then 3.
  bench run --task all --encoder efficientnet-lite0,resnet50 --reducer identity,pca --alpha hest,cv --pcc both
  bench run --task her2st --genes pam50                  # the PAM50 panel instead of the task's genes
\b
--config grid.toml takes the same from a file (options given on the command line replace the file's
value; --reducer picks among the file's reducer variants; --reducer-opt and --gene-sets apply on top):
  task = ["her2st"]                          # or "all"
  encoder = ["efficientnet-lite0", "resnet50"]
  reducer = ["identity", "pca", { name = "pca", n_components = 64 }, { name = "bpbooster-gp", lr = 1e-4 }]
  alpha = ["hest", "cv"]
  genes = ["task", "pam50"]                  # task | train-hvg | pam50 | FILE (relative to grid.toml)
  seed = [1, 2]
  solver = "exact"                           # optional; intercept = true|false
  pcc = "both"                               # pooled | per-sample | both
  [weights]                                  # per encoder: a weight file or random[:SEED]
  resnet50 = "random"
"""


@click.command(epilog=GRID_HELP)
@click.option("--config", "grid_file", type=click.Path(dir_okay=False, exists=True), default=None, metavar="GRID.toml",
              help="A grid file: tasks, encoders, reducers with options, protocol variants, seeds (see below).")
@click.option("--task", "tasks", multiple=True, metavar="NAME",
              help="Task folder name(s) under the data root, case-insensitive (luad -> LUNG), or all. "
                   "[default: the synthetic demo, created if absent]")
@click.option("--encoder", "encoder_names", multiple=True, metavar="NAME",
              help="Encoder(s), comma-separated, or all; see `bench list encoders`. [default: efficientnet-lite0]")
@click.option("--reducer", "reducer_names", multiple=True, metavar="NAME",
              help="Reducer(s), comma-separated, or all; see `bench list reducers`. [default: identity,pca]")
@click.option("--reducer-opt", "reducer_opts", multiple=True, metavar="[REDUCER.]KEY=VALUE",
              help="Reducer option, e.g. n_components=128, pca.n_components=128, lr=1e-4, attention=literal. Repeatable; "
                   "overrides --reducer-config.")
@click.option("--reducer-config", type=click.Path(dir_okay=False, exists=True), default=None,
              help="TOML file of reducer options, one table per reducer: [bpbooster-gp] lr = 1e-4.")
@gene_sets_option
@_protocol_options(grid=True)
@click.option("--pcc", type=click.Choice(["pooled", "per-sample", "both"]), default="pooled", show_default=True,
              help="PCC in the summary: over the pooled test spots of a fold (HEST), the mean over test samples of "
                   "each sample's PCC, or both (both are stored for every result).")
@execution_options
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: everything in this process. ray: extraction per (encoder, sample) and reducer fits per "
                   "(encoder, task, reducer, seed, fold) as Ray tasks, a GPU each with --device cuda (or auto where "
                   "the cluster has GPUs); only this process writes the catalog. Needs pip install \"stbench[ray]\".")
@click.option("--address", default=None, metavar="ADDR",
              help="With --executor ray: an existing Ray cluster (auto, or ray://HOST:10001); the store and data "
                   "root must be on a filesystem every node sees. [default: start a local Ray instance]")
@click.option("--gpus-per-task", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="With --executor ray on GPUs: the GPU share each extraction or BP-Booster fit declares (0.5: two "
                   "per GPU).")
@click.option("--threads", type=int, default=None, envvar="STBENCH_THREADS", show_envvar=True, metavar="N",
              help="Threads for torch and BLAS. On a machine busy with other jobs 1 is often several times faster. "
                   "[default: the CPUs this process may use (affinity and cgroup quota)]")
@click.option("--ridge-dtype", type=click.Choice(["float32", "float64"]), default=None,
              help="What the lsqr ridge fits in: float32 = HEST's reference (default; its embeddings are float32), "
                   "or float64. The exact solver fits in float64.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default=None,
              help="Autocast precision of every encoder on CUDA, instead of each one's HEST-Benchmark default (see "
                   "`bench list encoders`); embeddings are keyed by it.")
def run(grid_file, tasks, encoder_names, reducer_names, reducer_opts, reducer_config, gene_sets, genes, solver, alpha,  # noqa: ANN001, ANN201, PLR0913
        intercept, seed, pcc, weights, batch_size, compile_, device, force, progress, data_root, store, executor, address,
        gpus_per_task, threads, ridge_dtype, precision):
    """Benchmark encoders x reducers on tasks under the HEST protocol and store every number.

    Embeddings are computed once per (task, encoder weights, sample) and reused; results already in the
    store for the same protocol are shown from the store (--force recomputes). With no options, runs the
    offline default: efficientnet-lite0 with identity and pca on the synthetic demo task.

    \b
    BP-Booster (bpbooster-random, bpbooster-gp) trains on each training fold; options left at 0 take the
    paper's values for the encoder and task (see `bench list reducers`). Examples:
      bench run --task her2st --reducer pca,bpbooster-gp --gene-sets ~/genesets/h.all.v7.0.symbols.gmt
      bench run --task luad --encoder uni --reducer bpbooster-gp --reducer-opt attention=literal --alpha cv
    """
    quiet_library_warnings()
    from stbench.errors import StbenchError

    if executor != "ray" and (address or _given("gpus_per_task")):  # a missing ray: the preflight below says so
        raise StbenchError("--address and --gpus-per-task apply to --executor ray")
    from stbench.grid import (CellsFailed, GridFile, make_spec, plan_grid, protocol_variants, read_grid_file,
                              weights_by_encoder)
    from stbench.settings import store_root

    spec_file = read_grid_file(grid_file) if grid_file else GridFile()
    task_names = _split_names(tasks) or list(spec_file.tasks or [DEFAULT_TASK])
    encoder_list = _split_names(encoder_names) or list(spec_file.encoders or ["efficientnet-lite0"])
    choices = _reducer_choices(_pick_reducers(_split_names(reducer_names), spec_file.reducers), reducer_opts,
                               config=reducer_config, gene_sets=gene_sets)
    protocols = protocol_variants(
        _split_names((alpha,)) if alpha is not None else list(spec_file.alpha or ["hest"]),
        _split_genes(genes) if _given("genes") else list(spec_file.genes or ["task"]),
        _seeds(seed) if _given("seed") else list(spec_file.seed or [1]),
        solver=solver if solver is not None else spec_file.solver,
        intercept=intercept if _given("intercept") else spec_file.intercept, dtype=ridge_dtype,
    )
    pcc = pcc if _given("pcc") else spec_file.pcc or "pooled"
    from click.core import ParameterSource

    from stbench.threads import THREADS_ENV, busy_hint, resolve_threads, use_threads

    from_env = click.get_current_context().get_parameter_source("threads") == ParameterSource.ENVIRONMENT
    n_threads, why = resolve_threads(threads, source=THREADS_ENV if from_env else "--threads")
    from stbench.cli.doctor import check_before_run
    from stbench.network import offline_while

    reach = check_before_run(task_names, encoder_list, choices, data_root=data_root, store=store, device=device,
                             weights=[f"{k}={v}" for k, v in spec_file.weights or ()] + list(weights),
                             executor=executor)  # every missing piece at once, before any work
    root = _data_root(task_names, data_root)
    spec = make_spec(task_names, encoder_list, choices, protocols, root, pcc=pcc, store=store_root(store),
                     precision=precision)
    weights_map = weights_by_encoder(weights, spec.encoders, spec_file.weights or ())
    plan = plan_grid(spec, root)
    def on_cell(bar, outcome) -> None:  # noqa: ANN001
        if plan.n_cells > 1:
            bar.console.print(_cell_line(outcome, spec.protocols), soft_wrap=True)

    console().print(f"[dim]threads: {n_threads} ({why})[/]")  # a header line: the run's log records it
    if hint := busy_hint(n_threads, requested=threads is not None):
        console().print(f"[yellow]note:[/] {hint}", soft_wrap=True)
    with use_threads(n_threads), offline_while(reach):  # hub unreachable: cached weights load without retries
        outcomes = _run_plan(plan, store=store, progress=progress, keep_going=True, on_cell=on_cell, weights=weights_map,
                             batch_size=batch_size, device=device, compile=compile_, force=force, executor=executor,
                             address=address, gpus_per_task=gpus_per_task)
    print_results(outcomes, pcc=pcc)
    console().print(f"[dim]store: {store_root(store)}[/]")
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise CellsFailed(f"{len(failed)} of {len(outcomes)} cells failed (FAILED above; -vv logs tracebacks); "
                          "rerun the same command to retry them, finished cells are read from the store")


def _split_genes(value: str) -> list[str]:
    """``--genes a,b``: several rules, panels or files; an existing path is one value even with a comma."""
    return [value] if Path(value).exists() else _split_names((value,))


@click.command()
@click.option("--task", default=None, help="Only this task.")
@click.option("--encoder", default=None, help="Only this encoder.")
@click.option("--reducer", default=None, help="Only this reducer.")
@click.option("--genes", "per_gene", is_flag=True, help="Per-gene rows (PCC and MSE per fold) instead of run summaries.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--export", type=click.Path(dir_okay=False), default=None,
              help="Also write the rows to a .parquet or .csv file (polars).")
@click.option("--all", "include_incomplete", is_flag=True, help="Include runs that did not complete.")
@click.option("--wide", is_flag=True, help="Every column (fingerprints, run ids, options), at full width.")
@store_option
def results(task, encoder, reducer, per_gene, fmt, export, include_incomplete, wide, store):  # noqa: ANN001, ANN201
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
        _print_frame(df, synthetic=not per_gene and bool(df["synthetic"].any()) if len(df) else False, wide=wide)


def _print_frame(df, *, synthetic: bool, wide: bool = False) -> None:  # noqa: ANN001
    """The rows as a table that fits the terminal (`stbench.cli._tables`); ``wide``: every column."""
    from stbench.cli._tables import print_table, results_rows

    if len(df) == 0:
        console().print("no results match")
        return
    notes: list[str] = []
    if wide:
        columns, rows = df.columns, [[_fmt(v) if isinstance(v, float) else v for v in row] for row in df.iter_rows()]
    elif "pcc_mean" in df.columns:
        columns, rows, notes = results_rows(df)
    else:  # per-gene rows
        columns = [c for c in ("task", "encoder", "reducer", "fold", "gene", "pcc", "mse", "n_test") if c in df.columns]
        rows = [[_fmt(v) if isinstance(v, float) else v for v in row] for row in df.select(columns).iter_rows()]
    dropped = print_table(columns, rows, names=("task", "encoder", "reducer", "gene", "alpha", "solver", "genes"),
                          wide=wide, numbers=("folds", "PCC mean ± std", "MSE", "mean MSE", "NaN", "fold", "pcc", "mse",
                                              "n_test", "seed"),
                          optional=("NaN", "mean MSE", "n_test", "folds", "MSE", "mse"))
    notes.append(f"not shown at this width: {', '.join(dropped)}; --wide shows every column" if dropped else
                 "--wide (or --format csv) shows every column")
    for note in notes:
        console().print(f"[dim]{escape_text(note)}[/]")
    if synthetic:
        console().print(f"[bold yellow]* synthetic rows: {SYNTHETIC_NOTE}[/]")


def escape_text(text: str) -> str:
    from rich.markup import escape

    return escape(text)
