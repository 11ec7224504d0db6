"""The ``bench`` command. Heavy libraries (torch, scanpy, duckdb) are imported inside commands only,
so ``bench --help`` and ``bench list`` answer at once."""

from __future__ import annotations

import logging
import os

import click

from stbench import __version__

__all__ = ["cli", "main"]


class _Group(click.Group):
    """Turns stbench's own errors into one-line messages with a non-zero exit code, no traceback."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        from stbench.errors import StbenchError

        try:
            return super().invoke(ctx)
        except StbenchError as exc:
            err = click.ClickException(str(exc))
            err.exit_code = exc.exit_code
            raise err from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="stbench")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """stbench: benchmark which pathology foundation-model embeddings, and which reducers, best predict
    spatial gene expression from H&E, under the HEST-Benchmark protocol.

    \b
    Examples:
      bench run                                   # offline default: efficientnet-lite0, identity+pca, synthetic demo
      bench data import her2st --source DIR       # real HER2+ sections -> a HEST-layout task
      bench run --task her2st --reducer identity,pca --alpha cv
      bench run --encoder uni --reducer pca --task luad --data-root /data/hest-bench
      bench run --task her2st --reducer bpbooster-gp --gene-sets hallmark   # or the path of a GMT file
      bench doctor --task luad --encoder uni --reducer bpbooster-gp   # what a run needs, without running it
      bench explain --task her2st --fold 0             # pathways the fitted booster attends to
      bench ablate --task her2st --alpha cv            # the BP-Booster paper's ablation table
      bench results --task her2st --format csv
    """
    from rich.logging import RichHandler

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    log = logging.getLogger("stbench")
    log.setLevel(level)
    if not any(isinstance(h, RichHandler) for h in log.handlers):
        from stbench.cli._console import err_console

        log.addHandler(RichHandler(console=err_console(), show_time=False, show_path=False, markup=False))
    log.propagate = False
    if verbose == 0:  # the hub logs retries of unreachable URLs; our own one-line error says what to do
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")  # read by huggingface_hub when it is imported


def _register_commands() -> None:
    from stbench.cli import booster, data, doctor, embeddings, leaderboard, listing, run, store

    cli.add_command(run.run)
    cli.add_command(run.results)
    cli.add_command(doctor.doctor)
    cli.add_command(listing.list_group)
    cli.add_command(data.data_group)
    cli.add_command(booster.explain)
    cli.add_command(booster.ablate)
    cli.add_command(leaderboard.leaderboard_group)
    cli.add_command(store.store_group)
    cli.add_command(embeddings.embeddings_group)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="bench")
