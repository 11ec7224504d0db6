"""``bench data fetch|import|demo``: get tasks into the HEST layout under the data root."""

from __future__ import annotations

from pathlib import Path

import click

from stbench.cli._console import data_root_option, err_console, quiet_library_warnings


@click.group("data")
def data_group() -> None:
    """Download HEST tasks, import your own data, or make the synthetic demo."""


@data_group.command("fetch")
@click.option("--task", "task", required=True, help="HEST task, e.g. skcm, luad, ccrcc (case-insensitive).")
@click.option("--token", default=None, envvar="HF_TOKEN", help="Hugging Face token [default: HF_TOKEN or `hf auth login`].")
@click.option("--revision", default=None, help="Dataset revision (commit or branch) to pin.")
@data_root_option
def fetch(task: str, token: str | None, revision: str | None, data_root: str | None) -> None:
    """Download one task (only that task) from the gated dataset MahmoodLab/hest-bench."""
    import logging

    from stbench.data.fetch import fetch_task
    from stbench.settings import data_root as resolve_root

    logging.getLogger("stbench.data.fetch").setLevel(logging.INFO)  # say what is downloaded and where
    path = fetch_task(task, resolve_root(data_root), token=token, revision=revision)
    click.echo(f"{task}: ready at {path}")


@data_group.group("import")
def import_group() -> None:
    """Convert other data into a HEST-layout task."""


@import_group.command("her2st")
@click.option("--source", required=True, type=click.Path(exists=True, file_okay=False),
              help="A her2st checkout (data/ST-imgs, data/ST-cnts, data/ST-spotfiles), e.g. ../shared/data/her2st.")
@click.option("--split", type=click.Choice(["patient", "section"]), default="patient", show_default=True,
              help="Leave one patient out (B4 vs C2-C6) or leave one section out.")
@click.option("--name", default="HER2ST", show_default=True, help="Task folder name.")
@click.option("--overwrite", is_flag=True, help="Replace an existing task folder of that name.")
@data_root_option
def import_her2st_cmd(source: str, split: str, name: str, overwrite: bool, data_root: str | None) -> None:
    """Import the real HER2+ breast-cancer sections (legacy ST, Andersson et al. 2021) as a task."""
    quiet_library_warnings()
    from stbench.data.her2st import import_her2st
    from stbench.settings import data_root as resolve_root

    path = import_her2st(Path(source), resolve_root(data_root), name=name, split=split, overwrite=overwrite,
                         progress=err_console().is_terminal)
    click.echo(f"{name}: written to {path}")


@data_group.command("demo")
@click.option("--name", default="DEMO", show_default=True, help="Task folder name.")
@click.option("--samples", default=3, show_default=True, help="Number of synthetic sections (one fold each).")
@click.option("--spots", default=160, show_default=True, help="Spots per section.")
@click.option("--seed", default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing task folder of that name.")
@data_root_option
def demo(name: str, samples: int, spots: int, seed: int, overwrite: bool, data_root: str | None) -> None:
    """Make a small SYNTHETIC task in the HEST layout (for trying the pipeline offline; not real tissue)."""
    quiet_library_warnings()
    from stbench.data.demo import make_demo
    from stbench.settings import data_root as resolve_root

    path = make_demo(resolve_root(data_root), name=name, n_samples=samples, n_spots=spots, seed=seed, overwrite=overwrite)
    click.echo(f"{name}: SYNTHETIC demo task written to {path}")
