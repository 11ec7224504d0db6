"""``bench list encoders|reducers|tasks``: what can be run, without importing torch."""

from __future__ import annotations

import dataclasses
import json

import click

from stbench.cli._console import console, data_root_option


@click.group("list")
def list_group() -> None:
    """List encoders, reducers or tasks."""


def _emit(rows: list[dict], as_json: bool, title: str, notes: list[str] = (), *, wide: tuple[str, ...] = ()) -> None:  # type: ignore[assignment]
    """Print rows as a table (columns in ``wide`` only in --json) or as JSON."""
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    rows = [{k: v for k, v in r.items() if k not in wide} for r in rows]
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in rows[0] if rows else ["(none)"]:
        table.add_column(col)
    for row in rows:
        table.add_row(*[escape(str(v)) for v in row.values()])
    console().print(table)
    for note in notes:
        console().print(escape(note))


def _input(spec) -> str:  # noqa: ANN001 - an EncoderSpec
    """The model's input: its size, and how a patch gets there when it is resampled as the reference does."""
    if spec.resample == "torch" and not spec.resize_to:
        return str(spec.input_size)
    size = spec.resize_to or spec.input_size
    crop = f", crop {spec.input_size}" if size != spec.input_size else ""
    return f"{spec.input_size} ({spec.resample} {spec.interpolation} {size}{crop})"


@list_group.command("encoders")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_encoders_cmd(as_json: bool) -> None:
    """Registered encoders (built-in and from plugins), with whether their weights are on this machine."""
    from stbench.encoders import encoders, list_encoders

    rows = []
    for enc in list_encoders():
        s = enc.spec
        try:  # weights on this machine: what their embeddings are keyed by (no download, no network)
            fingerprint = enc.local_fingerprint() or ""
        except Exception as exc:  # noqa: BLE001 - a listing never fails on one encoder's files
            fingerprint = f"unreadable ({exc})"
        rows.append({
            "name": s.name, "aliases": ", ".join(s.aliases), "dim": s.embed_dim, "input": _input(s),
            "precision": s.precision, "gated": "yes" if s.gated else "no",
            "weights here": enc.available() or "no", "fingerprint": fingerprint, "weights": s.weights, "code": s.code,
            "licence": s.license, "needs": s.requires or "", "origin": encoders.origin(s.name),
        })
    notes = [f"plugin {f.name!r} ({f.target}) failed to load: {f.error}" for f in encoders.failures]
    hidden = ("aliases", "origin") + (() if any(r["needs"] for r in rows) else ("needs",))
    _emit(rows, as_json, "Encoders", notes, wide=hidden)


@list_group.command("reducers")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_reducers_cmd(as_json: bool) -> None:
    """Registered reducers with their options and defaults."""
    from stbench.reducers import list_reducers, reducers

    rows = []
    for cls in list_reducers():
        opts = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls.Options))
        rows.append({"name": cls.name, "aliases": ", ".join(cls.aliases), "options": opts, "description": cls.description,
                     "origin": reducers.origin(cls.name)})
    notes = [f"plugin {f.name!r} ({f.target}) failed to load: {f.error}" for f in reducers.failures]
    _emit(rows, as_json, "Reducers", notes, wide=("origin",))


@list_group.command("tasks")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@data_root_option
def list_tasks_cmd(as_json: bool, data_root: str | None) -> None:
    """Task folders under the data root, and the HEST tasks not downloaded yet."""
    from stbench.errors import StbenchError
    from stbench.settings import data_root as resolve_root
    from stbench.tasks import HEST_TASKS, list_task_dirs, open_task

    root = resolve_root(data_root)
    rows, present = [], set()
    for path in list_task_dirs(root):
        present.add(path.name.upper())
        try:
            t = open_task(path.name, root)
            rows.append({"task": t.name, "samples": len(t.samples), "folds": len(t.folds), "genes": len(t.genes),
                         "data": "SYNTHETIC" if t.synthetic else t.meta.get("source", "HEST-Benchmark"), "path": str(t.path)})
        except StbenchError as exc:
            rows.append({"task": path.name, "samples": "?", "folds": "?", "genes": "?", "data": f"unreadable: {exc}",
                         "path": str(path)})
    missing = [t for t in HEST_TASKS if t not in present]
    notes = [f"data root: {root}"]
    if missing:
        notes.append(f"HEST tasks not here ({', '.join(missing)}): fetch one with `bench data fetch --task NAME`.")
    _emit(rows, as_json, "Tasks", notes)
