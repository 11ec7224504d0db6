"""``bench list encoders|reducers|tasks``: what can be run, without importing torch."""

from __future__ import annotations

import dataclasses
import json

import click

from stbench.cli._console import console, data_root_option


@click.group("list")
def list_group() -> None:
    """List encoders, reducers or tasks."""


def _emit(rows: list[dict], as_json: bool, title: str, notes: list[str] = (), *, wide: tuple[str, ...] = (),  # type: ignore[assignment]
          show_all: bool = False, optional: tuple[str, ...] = ()) -> None:
    """Print rows as JSON, or as a table that fits the terminal without cutting names (`stbench.cli._tables`):
    columns in ``wide`` only with ``show_all`` (--wide) or in --json; ``optional`` ones left out, in order,
    where the terminal is too narrow."""
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    from rich.markup import escape

    from stbench.cli._tables import print_table

    columns = [c for c in (rows[0] if rows else ["(none)"]) if show_all or c not in wide]
    dropped = print_table(columns, [[r[c] for c in columns] for r in rows], title=title, wide=show_all,
                          names=("name", "task"), numbers=("dim", "samples", "folds", "genes"), optional=optional)
    hidden = [c for c in (rows[0] if rows else []) if c not in columns] + dropped
    for note in notes + ([f"not shown: {', '.join(hidden)} (--wide or --json shows every column)"] if hidden else []):
        console().print(escape(note))


def _input(spec) -> str:  # noqa: ANN001 - an EncoderSpec
    """The model's input: its size, and how a patch gets there when it is resampled as the reference does."""
    if spec.resample == "torch" and not spec.resize_to:
        return str(spec.input_size)
    size = spec.resize_to or spec.input_size
    crop = f", crop {spec.input_size}" if size != spec.input_size else ""
    return f"{spec.input_size} ({spec.resample} {spec.interpolation} {size}{crop})"


def _input_short(spec) -> str:  # noqa: ANN001 - an EncoderSpec
    if spec.resample == "torch" and not spec.resize_to:
        return str(spec.input_size)
    size = spec.resize_to or spec.input_size
    resized = f"{size}>{spec.input_size}" if size != spec.input_size else str(size)
    return resized + (" PIL" if spec.resample == "pil" else "")


@list_group.command("encoders")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--wide", is_flag=True,
              help="Every column (weights source, fingerprint, code, aliases, random init), at full width.")
def list_encoders_cmd(as_json: bool, wide: bool) -> None:
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
            "licence": s.license, "needs": s.requires or "", "random init": "yes" if s.random_init else "no",
            "origin": encoders.origin(s.name),
        })
    notes = [f"plugin {f.name!r} ({f.target}) failed to load: {f.error}" for f in encoders.failures]
    if not as_json and not wide:  # the table's short form; --json and --wide say how in full
        for row, enc in zip(rows, list_encoders()):
            row["input"] = _input_short(enc.spec)
        if any("PIL" in r["input"] for r in rows):
            notes.append("input: PIL = resized with PIL as the reference code does; 256>224 = resized to 256, "
                         "centre-cropped to 224")
    hidden = ("aliases", "fingerprint", "weights", "code", "random init", "origin") + (
        () if any(r["needs"] for r in rows) else ("needs",))
    _emit(rows, as_json, "Encoders", notes, wide=hidden, show_all=wide, optional=("licence", "input"))


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
