"""``bench embeddings import``: embeddings computed elsewhere, into the store."""

from __future__ import annotations

from pathlib import Path

import click

from stbench.cli._console import console, data_root_option, err_console, store_option

__all__ = ["embeddings_group"]


@click.group("embeddings")
def embeddings_group() -> None:
    """Embeddings in the store: bring in those computed elsewhere."""


@embeddings_group.command("import")
@click.option("--task", required=True, metavar="NAME",
              help="The task the embeddings are of (a folder under the data root).")
@click.option("--encoder", "encoder_name", required=True, metavar="NAME",
              help="A registered encoder (its embed_dim is checked; run with --weights imported) or a new name.")
@click.option("--from", "source", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder with one file per sample: <sample>.h5 (HEST-Benchmark), <sample>.parquet, <sample>.npy "
                   "with <sample>.barcodes.txt, or <sample>.npz.")
@click.option("--format", "fmt", type=click.Choice(["auto", "hest", "table"]), default="auto", show_default=True,
              help="hest: only <sample>.h5 files; table: only .parquet/.npy/.npz; auto: whichever is there.")
@data_root_option
@store_option
def import_command(task: str, encoder_name: str, source: str, fmt: str, data_root: str | None,
                   store: str | None) -> None:
    """Import per-sample embeddings computed elsewhere, matched to the task's barcodes.

    Every task sample needs one file whose barcodes are exactly its patch file's (rows may be in any order),
    with the same dimension throughout and finite values; anything else is refused, naming the file, and
    nothing is written. Imported embeddings are keyed by the digest of the files (imported:sha256:...), so
    they never mix with embeddings computed here, and results from them are labelled "(imported)".

    \b
    Examples:
      bench embeddings import --task idc --encoder my-vit --from hest-embeds/IDC/my-vit
      bench run --task idc --encoder my-vit
      bench embeddings import --task idc --encoder uni --from hest-embeds/IDC/uni --format hest
      bench run --task idc --encoder uni --weights imported
    """
    from stbench.embeddings_import import plan_import, write_import
    from stbench.settings import data_root as resolve_root
    from stbench.settings import store_root
    from stbench.stores import Store
    from stbench.tasks import open_task

    task_obj = open_task(task, resolve_root(data_root))
    plan = plan_import(task_obj, encoder_name, Path(source), fmt=fmt)  # every check, before the store is opened
    with Store(store_root(store)) as st:
        write_import(plan, st)
    n = sum(plan.spots.values())
    console().print(f"imported {len(plan.spots)} samples ({n} spots, {plan.dim}-d) of task {task_obj.name} as "
                    f"{plan.encoder} (imported): {plan.fingerprint}")
    weights = " --weights imported" if plan.registered else ""
    err_console().print(f"run them: bench run --task {task_obj.name.lower()} --encoder {plan.encoder}{weights}")
