"""``bench doctor``: the preflight report of a run, without running it; and the check `bench run` and
`bench ablate` make before any work."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import click

from stbench.cli._console import data_root_option, err_console, store_option

__all__ = ["doctor", "check_before_run"]


def _print(report, *, stderr: bool, only_problems: bool = False) -> None:  # noqa: ANN001 - a preflight Report
    from rich.markup import escape

    from stbench.cli._console import console

    out = err_console() if stderr else console()
    for line in report.problem_lines() if only_problems else report.lines():
        style = "bold red" if line.lstrip().startswith("MISSING") else "dim" if line.lstrip().startswith("ok") else ""
        out.print(f"[{style}]{escape(line)}[/]" if style else escape(line), soft_wrap=True)  # commands stay whole


def check_before_run(tasks: Sequence[str], encoders: Sequence[str], choices, *, data_root: str | None,  # noqa: ANN001, ANN201
                     store: str | None, weights: Iterable[str] = (), device: str = "auto", executor: str = "local"):
    """The preflight of a run: every missing piece printed at once, then `PreflightFailed` (exit code 4).
    Returns how the network was found (None: not probed), for `stbench.network.offline_while`."""
    from stbench.preflight import PreflightFailed, preflight, weights_given
    from stbench.settings import data_root as resolve_root
    from stbench.settings import store_root

    report = preflight(tasks, encoders, choices, data_root=resolve_root(data_root), store=store_root(store),
                       weights=weights_given(weights, list(encoders)), device=device, executor=executor)
    if report.problems:
        line = report.one_line()
        if line is not None:  # one problem, one fix: one line, as every other error
            raise PreflightFailed(line)
        _print(report, stderr=True, only_problems=True)
        n = len(report.problems)
        raise PreflightFailed(f"{n} missing piece{'s' * (n != 1)} (listed above with the command that fixes each); "
                              "nothing was run")
    return report.reach


@click.command()
@click.option("--config", "grid_file", type=click.Path(dir_okay=False, exists=True), default=None, metavar="GRID.toml",
              help="A grid file, as bench run --config.")
@click.option("--task", "tasks", multiple=True, metavar="NAME", help="Task(s), comma-separated, or all. [default: DEMO]")
@click.option("--encoder", "encoder_names", multiple=True, metavar="NAME",
              help="Encoder(s), comma-separated, or all. [default: efficientnet-lite0]")
@click.option("--reducer", "reducer_names", multiple=True, metavar="NAME",
              help="Reducer(s), comma-separated, or all. [default: identity,pca]")
@click.option("--reducer-opt", "reducer_opts", multiple=True, metavar="[REDUCER.]KEY=VALUE", help="As bench run.")
@click.option("--reducer-config", type=click.Path(dir_okay=False, exists=True), default=None, help="As bench run.")
@click.option("--gene-sets", default=None, metavar="PATH|hallmark", help="As bench run.")
@click.option("--weights", multiple=True, metavar="[ENCODER=]PATH|random[:SEED]|imported", help="As bench run.")
@click.option("--device", default="auto", show_default=True, help="As bench run: cuda[:N] checks that torch sees it.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="As bench run: ray checks that Ray is installed.")
@data_root_option
@store_option
def doctor(grid_file, tasks, encoder_names, reducer_names, reducer_opts, reducer_config, gene_sets, weights, device,  # noqa: ANN001, ANN201, PLR0913
           executor, data_root, store):
    """Check what a `bench run` with these options needs, and print every missing piece with its fix.

    Task folders, each encoder's weights (--weights, the config file, a package, the Hugging Face cache, or
    the hub with a token that has access), gene sets, Ray and CUDA when asked for, and free disk for the
    embeddings. Nothing is downloaded or run; whether the hub is reachable is decided once, in at most ~1.5 s.
    Exit code 0 when nothing is missing, 4 otherwise.

    \b
      bench doctor --task luad --encoder uni --reducer bpbooster-gp
    """
    from stbench.cli.run import DEFAULT_TASK, _pick_reducers, _reducer_choices, _split_names
    from stbench.grid import GridFile, read_grid_file
    from stbench.preflight import PreflightFailed, preflight, weights_given
    from stbench.settings import data_root as resolve_root
    from stbench.settings import store_root

    spec_file = read_grid_file(grid_file) if grid_file else GridFile()
    task_names = _split_names(tasks) or list(spec_file.tasks or [DEFAULT_TASK])
    encoder_list = _split_names(encoder_names) or list(spec_file.encoders or ["efficientnet-lite0"])
    choices = _reducer_choices(_pick_reducers(_split_names(reducer_names), spec_file.reducers), reducer_opts,
                               config=reducer_config, gene_sets=gene_sets)
    given = [f"{k}={v}" for k, v in spec_file.weights or ()] + list(weights)
    report = preflight(task_names, encoder_list, choices, data_root=resolve_root(data_root), store=store_root(store),
                       weights=weights_given(given, encoder_list), device=device, executor=executor)
    _print(report, stderr=False)
    if report.problems:
        raise click.exceptions.Exit(PreflightFailed.exit_code)
