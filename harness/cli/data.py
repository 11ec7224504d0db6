"""``bench data fetch|import|demo``: get tasks into the HEST layout under the data root."""

from __future__ import annotations

from pathlib import Path

import click

from stbench.cli._console import data_root_option, err_console, quiet_library_warnings


class _Finite(click.FloatRange):
    """A float range that also refuses NaN, which passes every comparison click makes (``--spot-pitch nan``
    would skip the pitch check, ``--max-background nan`` the background one)."""

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201
        rv = super().convert(value, param, ctx)
        if rv != rv:  # noqa: PLR0124 - NaN
            self.fail(f"{value!r} is not a number", param, ctx)
        return rv


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


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    """``("S1=path", ...)`` -> ``{"S1": "path"}``; a malformed or repeated id is a usage error."""
    out: dict[str, str] = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise click.BadParameter(f"{v!r}: expected ID=VALUE", param_hint=option)
        if key.strip() in out:
            raise click.BadParameter(f"sample {key.strip()!r} given twice", param_hint=option)
        out[key.strip()] = val.strip()
    return out


def _task_options(f):  # noqa: ANN001, ANN202
    """Options every generic importer shares: task name, split, patients, genes, checks."""
    for opt in reversed([
        click.option("--name", required=True, help="Task folder name (then `bench run --task NAME`)."),
        click.option("--split", default=None,
                     help="patient (leave one patient out), sample (leave one sample out) or kfold:K. "
                          "[default: patient when patients are given, else sample]"),
        click.option("--patients", type=click.Path(exists=True, dir_okay=False),
                     help="CSV/TSV mapping sample_id,patient."),
        click.option("--genes", "genes_file", type=click.Path(exists=True, dir_okay=False),
                     help="Evaluation genes (JSON {\"genes\": [...]} or one per line) "
                          "[default: HEST's rule, 50 HVGs]."),
        click.option("--max-background", default=0.5, show_default=True, type=_Finite(0, 1),
                     help="Refuse a sample when more than this share of its patches is glass (swapped x/y?)."),
        click.option("--overwrite", is_flag=True, help="Replace an existing task folder of that name."),
        data_root_option,
    ]):
        f = opt(f)
    return f


def _task_args(split: str | None, patients: str | None, genes_file: str | None, has_patients: bool = False) -> dict:
    from stbench.data.assemble import read_patients
    from stbench.expression import read_gene_file

    mapping = read_patients(Path(patients)) if patients else None
    return {
        "split": split or ("patient" if mapping or has_patients else "sample"),
        "patients": mapping,
        "genes": read_gene_file(Path(genes_file)) if genes_file else None,
    }


def _report(path: Path, name: str) -> None:
    """Say where the task is and at which pixel size each sample's patches were cut."""
    import json

    meta = json.loads((path / "task.json").read_text())
    for sid, info in meta.get("samples", {}).items():
        factor = f" {info['upsampled']:g}x" if info.get("upsampled") else ""
        low = f" (low-resolution image: patches are upsampled{factor})" if info.get("lowres") else ""
        um = info.get("image_um_per_px", info.get("um_per_px"))
        click.echo(f"{sid}: {info.get('n_spots')} patches cut at {um:.4g} um/px{low}")
    click.echo(f"{name}: written to {path} (split {meta['split']}, {meta['n_genes_common']} genes); "
               f"run it with `bench run --task {name} --data-root {path.parent.resolve()}`")


@import_group.command("visium")
@click.option("--sample", "samples", multiple=True, required=True, metavar="ID=PATH",
              help="A sample id and its spaceranger outs/ folder; repeat for each sample.")
@click.option("--image", "images", multiple=True, metavar="ID=PATH",
              help="The full-resolution H&E given to spaceranger for that sample: TIFF (tiled, pyramidal, BigTIFF, "
                   "SVS, NDPI: read region by region), JPEG or PNG.")
@click.option("--allow-lowres", is_flag=True,
              help="Without --image, cut patches from spatial/tissue_hires_image.png (else lowres) "
                   "at its coarser pixel size.")
@_task_options
def import_visium_cmd(samples: tuple[str, ...], images: tuple[str, ...], allow_lowres: bool, name: str,
                      split: str | None, patients: str | None, genes_file: str | None, max_background: float,
                      overwrite: bool, data_root: str | None) -> None:
    """Import 10x Visium samples (spaceranger outs/ + H&E) as a task."""
    quiet_library_warnings()
    from stbench.data.visium import import_visium
    from stbench.settings import data_root as resolve_root

    path = import_visium(
        {k: Path(v) for k, v in _pairs(samples, "--sample").items()}, resolve_root(data_root), name,
        images={k: Path(v) for k, v in _pairs(images, "--image").items()}, allow_lowres=allow_lowres,
        max_background=max_background, overwrite=overwrite, progress=err_console().is_terminal,
        **_task_args(split, patients, genes_file),
    )
    _report(path, name)


@import_group.command("table")
@click.option("--sample", "samples", multiple=True, required=True, metavar="ID=TABLE",
              help="A sample id and its cell/spot table (CSV, TSV or parquet); repeat for each sample.")
@click.option("--image", "images", multiple=True, required=True, metavar="ID=PATH",
              help="The H&E the coordinates refer to.")
@click.option("--counts", "counts", multiple=True, required=True, metavar="ID=PATH",
              help="Counts: h5ad (obs_names = ids) or CSV/TSV/parquet with the ids in --id-col or the first column.")
@click.option("--pixel-size", "pixel_sizes", multiple=True, required=True, metavar="UM|ID=UM",
              help="um per pixel of the images: one value for all, or ID=UM per sample.")
@click.option("--x-col", default="x", show_default=True, help="Column of x (image column), in --coords units.")
@click.option("--y-col", default="y", show_default=True, help="Column of y (image row), in --coords units.")
@click.option("--coords", type=click.Choice(["px", "um"]), default="px", show_default=True,
              help="Units of --x-col/--y-col: image pixels, or micrometres from the image's origin (Xenium "
                   "cells.parquet x_centroid/y_centroid, HEST-1k), divided by --pixel-size.")
@click.option("--id-col", default="id", show_default=True, help="Column of the cell/spot id (matches the counts).")
@click.option("--patient-col", default=None, help="Column of the table holding the patient (one per sample).")
@click.option("--spot-pitch", type=_Finite(0, float("inf"), min_open=True, max_open=True), default=None,
              help="Expected centre-to-centre spot distance in um (e.g. 100 Visium, 200 legacy ST): "
                   "checks --pixel-size.")
@_task_options
def import_table_cmd(samples: tuple[str, ...], images: tuple[str, ...], counts: tuple[str, ...],
                     pixel_sizes: tuple[str, ...], x_col: str, y_col: str, coords: str, id_col: str,
                     patient_col: str | None,
                     spot_pitch: float | None, name: str, split: str | None, patients: str | None,
                     genes_file: str | None, max_background: float, overwrite: bool, data_root: str | None) -> None:
    """Import cell or spot tables (Xenium cells, bins, any platform) with counts and H&E as a task."""
    quiet_library_warnings()
    from stbench.data.table import import_table
    from stbench.settings import data_root as resolve_root

    try:
        sizes: float | dict[str, float] = (
            float(pixel_sizes[0]) if len(pixel_sizes) == 1 and "=" not in pixel_sizes[0]
            else {k: float(v) for k, v in _pairs(pixel_sizes, "--pixel-size").items()}
        )
    except ValueError as exc:
        raise click.BadParameter(f"{exc}", param_hint="--pixel-size") from exc
    path = import_table(
        {k: Path(v) for k, v in _pairs(samples, "--sample").items()},
        {k: Path(v) for k, v in _pairs(images, "--image").items()},
        {k: Path(v) for k, v in _pairs(counts, "--counts").items()},
        resolve_root(data_root), name, pixel_size=sizes, x_col=x_col, y_col=y_col, coords=coords, id_col=id_col,
        patient_col=patient_col, spot_pitch=spot_pitch, max_background=max_background, overwrite=overwrite,
        progress=err_console().is_terminal, **_task_args(split, patients, genes_file, has_patients=bool(patient_col)),
    )
    _report(path, name)


import_group.add_command(import_table_cmd, name="xenium")


@data_group.command("demo")
@click.option("--name", default="DEMO", show_default=True, help="Task folder name.")
@click.option("--samples", default=3, show_default=True, type=click.IntRange(min=2),
              help="Number of synthetic sections (one fold each).")
@click.option("--spots", default=160, show_default=True, type=click.IntRange(min=16), help="Spots per section.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1))
@click.option("--overwrite", is_flag=True, help="Replace an existing task folder of that name.")
@data_root_option
def demo(name: str, samples: int, spots: int, seed: int, overwrite: bool, data_root: str | None) -> None:
    """Make a small SYNTHETIC task in the HEST layout (for trying the pipeline offline; not real tissue)."""
    quiet_library_warnings()
    from stbench.data.demo import make_demo
    from stbench.settings import data_root as resolve_root

    path = make_demo(resolve_root(data_root), name=name, n_samples=samples, n_spots=spots, seed=seed, overwrite=overwrite)
    click.echo(f"{name}: SYNTHETIC demo task written to {path}")
