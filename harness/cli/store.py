"""``bench store verify``: check a store's files against its catalog, and repair what is broken."""

from __future__ import annotations

import json

import click
from stbench.cli._console import console, store_option


@click.group("store")
def store_group() -> None:
    """Look after a store: its catalog (catalog.duckdb), embedding files and fitted models."""


@store_group.command("verify")
@store_option
@click.option("--repair", is_flag=True,
              help="Fix what is found: remove broken or orphan files and temp debris, re-register intact embedding "
                   "files the catalog lost, and remove broken results so the next `bench run` recomputes them.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def verify(store: str | None, repair: bool, fmt: str) -> None:
    """Check that every catalog row has its file and every file its row, that embedding checksums match, that
    stored summaries agree with the rows beneath them, and list temp files left by killed writers.

    Reads every embedding file. Exits 1 when problems remain (none are left after --repair unless a file is
    in use by another process). Safe while other bench processes use the store: files they are writing are
    left alone.

    \b
    Examples:
      bench store verify --store /data/store
      bench store verify --store /data/store --repair
    """
    from rich.markup import escape
    from rich.table import Table
    from stbench.errors import StoreError
    from stbench.settings import store_root
    from stbench.stores import Store
    from stbench.stores.verify import verify_store

    root = store_root(store)
    if not (root / "catalog.duckdb").exists():
        raise StoreError(f"no catalog in {root}: not a store (pass --store)")
    with Store(root) as st:
        report = verify_store(st, repair=repair)
    if fmt == "json":
        click.echo(json.dumps({"store": str(report.store), "checked": report.checked,
                               "incomplete_runs": report.incomplete_runs,
                               "findings": [f.__dict__ for f in report.findings]}, indent=1))
    else:
        checked = ", ".join(f"{n} {k}" for k, n in report.checked.items())
        console().print(f"store {escape(str(report.store))}: checked {checked}")
        if report.findings:
            table = Table(show_lines=False)
            for col in ("problem", "where", "detail", "repair"):
                table.add_column(col, overflow="fold")
            for f in report.findings:
                table.add_row(f.kind, escape(f.what), escape(f.detail), escape(f.repaired or "-"))
            console().print(table)
        if report.incomplete_runs:
            console().print(f"{report.incomplete_runs} run(s) incomplete (killed, failed or running now): "
                            "`bench run` with the same options resumes them")
        left = report.problems
        if not left:
            console().print("[green]no problems[/]" if not report.findings else "[green]all repaired[/]")
        elif not repair:
            console().print(f"[yellow]{len(left)} problem(s); `bench store verify --repair` fixes them[/]")
    if report.problems:
        raise SystemExit(1)
