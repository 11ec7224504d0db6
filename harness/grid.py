"""Grids: tasks x encoders x reducers x protocol variants in one command, every cell its own result set.

A grid is a `GridSpec` (from `bench run` options, a TOML file, or both). `plan_grid` checks everything that
could make the grid meaningless before any work (names, options, protocols, task files, gene panels);
`run_grid` then runs the cells encoder-major, so one encoder's weights are loaded at a time (and once for
all its tasks), each (encoder, sample) embedded once, and each reducer fitted once per fold and seed for all
protocol variants. A cell already in the store for the same protocol fingerprint is read back (``force``
recomputes); a cell that fails is recorded with its error and the grid goes on.

The grid file (``bench run --config grid.toml``); every key is optional and takes the values of the
command-line option of the same name (a list, or a comma-separated string; ``all`` for every one)::

    task = ["her2st"]                       # task folders under the data root, or "all"
    encoder = ["efficientnet-lite0", "resnet50"]
    reducer = ["identity", "pca", { name = "pca", n_components = 64 }, { name = "bpbooster-gp", lr = 1e-4 }]
    alpha = ["hest", "cv"]                  # one result set per protocol variant
    genes = ["task", "pam50"]               # task | train-hvg | pam50 | gene file (relative to this file)
    seed = [1, 2]
    solver = "exact"                        # one value; default lsqr (exact with alpha cv)
    intercept = false
    pcc = "both"                            # the summary's PCC: pooled | per-sample | both

    [weights]                               # per encoder: a weight file (relative to this file) or random[:SEED]
    resnet50 = "random"
"""

from __future__ import annotations

import itertools
import logging
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stbench.errors import DataError, ProtocolError, StbenchError, suggest

if TYPE_CHECKING:
    from rich.progress import Progress

    from stbench.embeddings_import import ImportedEmbeddings
    from stbench.encoders import Encoder
    from stbench.protocol import Protocol
    from stbench.reducers import Reducer
    from stbench.runner import CellFailure, ReducerChoice, RunResult
    from stbench.stores import Store
    from stbench.tasks import Task

__all__ = [
    "ALL", "PCC_KINDS", "Cell", "CellOutcome", "CellsFailed", "GridFile", "GridPlan", "GridSpec", "cells",
    "expand_all", "make_spec", "narrow_protocol", "plan_grid", "protocol_label", "protocol_variants", "read_grid_file",
    "run_grid", "weights_by_encoder", "block_encoder",
]

log = logging.getLogger("stbench")

ALL = "all"
PCC_KINDS = ("pooled", "per-sample", "both")


class CellsFailed(StbenchError):
    """Some cells of a grid failed (each is in the summary with its error); the others are stored."""

    exit_code = 3


def expand_all(names: Iterable[str], available: Sequence[str]) -> list[str]:
    """``all`` -> every name in ``available``; duplicates dropped, first occurrence kept."""
    out: list[str] = []
    for n in names:
        out.extend(available if n.strip().lower() == ALL else [n])
    return list(dict.fromkeys(out))


# -- the grid file -------------------------------------------------------------------------------------------

# file key -> GridFile field; the command-line spelling, and a plural for the lists
_KEYS = {"task": "tasks", "tasks": "tasks", "encoder": "encoders", "encoders": "encoders", "reducer": "reducers",
         "reducers": "reducers", "alpha": "alpha", "genes": "genes", "seed": "seed", "seeds": "seed",
         "solver": "solver", "intercept": "intercept", "pcc": "pcc", "weights": "weights"}
_SHOWN = ("task", "encoder", "reducer", "alpha", "genes", "seed", "solver", "intercept", "pcc", "weights")


@dataclass(frozen=True)
class GridFile:
    """What a grid file sets (None: not set, the command line or the default decides)."""

    path: Path | None = None
    tasks: tuple[str, ...] | None = None
    encoders: tuple[str, ...] | None = None
    reducers: tuple[tuple[str, dict[str, Any]], ...] | None = None  # (name or "all", options)
    alpha: tuple[str, ...] | None = None
    genes: tuple[str, ...] | None = None
    seed: tuple[int, ...] | None = None
    solver: str | None = None
    intercept: bool | None = None
    pcc: str | None = None
    weights: tuple[tuple[str, str], ...] | None = None  # (encoder, weight file or random[:SEED])


def _strings(path: Path, key: str, value: object, *, numbers: bool = False) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    ok = (str, int, float) if numbers else (str,)
    if not items or not all(isinstance(v, ok) and not isinstance(v, bool) for v in items):
        raise DataError(path, f"{key} = {value!r}: expected a name or a list of names")
    out = [s.strip() for v in items for s in (v.split(",") if isinstance(v, str) else [str(v)]) if s.strip()]
    if not out:
        raise DataError(path, f"{key} is empty")
    return tuple(out)


def _near(base: Path, value: str) -> str:
    """A relative path in the grid file is read next to it when it exists there."""
    p = Path(value)
    return str(base / p) if not p.is_absolute() and (base / p).exists() else value


def read_grid_file(path: str | Path) -> GridFile:
    """Parse and check a grid file (format in this module's docstring); one-line errors naming the file."""
    from stbench.panels import panel_genes

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DataError(path, f"cannot read as TOML ({exc})") from None
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = _KEYS.get(key.lower())
        if name is None:
            raise DataError(path, f"unknown key {key!r}.{suggest(key, list(_KEYS))} Keys: {', '.join(_SHOWN)}")
        if name in values:
            raise DataError(path, f"{key!r} given twice (singular and plural spellings are the same key)")
        if name in ("tasks", "encoders"):
            values[name] = _strings(path, key, value)
        elif name == "reducers":
            values[name] = _reducer_entries(path, key, value)
        elif name == "alpha":
            values[name] = _strings(path, key, value, numbers=True)
        elif name == "genes":
            values[name] = tuple(g if g in ("task", "train-hvg") or panel_genes(g) else _near(path.parent, g)
                                 for g in _strings(path, key, value))
        elif name == "seed":
            seeds = value if isinstance(value, list) else [value]
            if not seeds or not all(isinstance(v, int) and not isinstance(v, bool) for v in seeds):
                raise DataError(path, f"{key} = {value!r}: expected an integer or a list of integers")
            values[name] = tuple(seeds)
        elif name == "solver":
            if not isinstance(value, str):
                raise DataError(path, f"solver = {value!r}: expected one solver name (lsqr or exact)")
            values[name] = value
        elif name == "intercept":
            if not isinstance(value, bool):
                raise DataError(path, f"intercept = {value!r}: expected true or false")
            values[name] = value
        elif name == "pcc":
            if value not in PCC_KINDS:
                raise DataError(path, f"pcc = {value!r}: expected one of {', '.join(PCC_KINDS)}")
            values[name] = value
        elif name == "weights":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise DataError(path, '[weights] must be a table of encoder = "PATH" or "random", e.g. resnet50 = "random"')
            values[name] = tuple((k, _near(path.parent, v)) for k, v in value.items())
    return GridFile(path=path, **values)


def _reducer_entries(path: Path, key: str, value: object) -> tuple[tuple[str, dict[str, Any]], ...]:
    items = value if isinstance(value, list) else [value]
    out: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        if isinstance(item, str):
            out.extend((n.strip(), {}) for n in item.split(",") if n.strip())
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            options = {k: v for k, v in item.items() if k != "name"}
            if isinstance(options.get("gene_sets"), str):
                options["gene_sets"] = _near(path.parent, options["gene_sets"])
            out.append((item["name"], options))
        else:
            raise DataError(path, f"{key}: {item!r} is neither a reducer name nor a table with a name, "
                                  'e.g. { name = "pca", n_components = 64 }')
    if not out:
        raise DataError(path, f"{key} is empty")
    return tuple(out)


# -- the grid ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridSpec:
    """What to run: every task x encoder x reducer choice x protocol variant."""

    tasks: tuple[str, ...]  # task folder names
    encoders: tuple[str, ...]  # registered encoder names, or free names of imported embeddings
    reducers: tuple[ReducerChoice, ...]
    protocols: tuple[Protocol, ...]  # variants; a panel's gene list is narrowed to each task's genes
    pcc: str = "pooled"  # how the summary reports PCC; both kinds are stored for every cell
    precision: str | None = None  # --precision: every encoder's autocast precision, instead of its own default


@dataclass(frozen=True)
class Cell:
    """One result set of the grid (its protocol as specified, before a panel is narrowed to the task)."""

    encoder: str
    task: str
    reducer: ReducerChoice
    protocol: Protocol


def cells(spec: GridSpec) -> list[Cell]:
    """The cells in run order: encoder-major (one encoder loaded at a time), then task, reducer, protocol."""
    return [Cell(e, t, r, p) for e in spec.encoders for t in spec.tasks for r in spec.reducers for p in spec.protocols]


def protocol_variants(alphas: Sequence[str], genes: Sequence[str], seeds: Sequence[int], *, solver: str | None = None,
                      intercept: bool | None = None, dtype: str | None = None) -> list[Protocol]:
    """One protocol per (seed, genes, alpha), validated, duplicates dropped. ``genes``: task, train-hvg, a
    built-in panel name (pam50) or a gene file."""
    from stbench.expression import read_gene_file
    from stbench.panels import PANELS, panel_genes
    from stbench.protocol import Protocol

    out: dict[str, Protocol] = {}
    for seed, g, alpha in itertools.product(seeds, genes, alphas):
        kw: dict[str, Any] = {"genes": g}
        if g not in ("task", "train-hvg"):
            panel = panel_genes(g)
            if panel is not None:
                kw = {"genes": "file", "gene_list": panel, "panel": g.strip().lower()}
            elif Path(g).exists():
                kw = {"genes": "file", "gene_list": tuple(read_gene_file(Path(g)))}
            else:
                raise ProtocolError(f"--genes must be task, train-hvg, a panel ({', '.join(PANELS)}) or an existing "
                                    f"gene file; {g!r} is none of these")
        p = Protocol.from_options(solver=solver, alpha=alpha, intercept=intercept, seed=seed, dtype=dtype, **kw)
        out.setdefault(p.fingerprint, p)
    return list(out.values())


def make_spec(tasks: Sequence[str], encoders: Sequence[str], reducers: Sequence[ReducerChoice],
              protocols: Sequence[Protocol], root: Path, *, pcc: str = "pooled", store: Path | None = None,
              precision: str | None = None) -> GridSpec:
    """Expand ``all`` (every task folder under ``root``, every registered encoder) and resolve names to
    task folders and registered encoders, or to names with embeddings imported for every task into the store
    at ``store``; an unknown name fails here, with suggestions."""
    from stbench.encoders import encoders as registry
    from stbench.tasks import find_task_dir, list_task_dirs

    task_names = expand_all(tasks, [p.name for p in list_task_dirs(root)])
    if not task_names:
        raise StbenchError(f"no task folders under the data root {root}; see `bench list tasks`")
    if pcc not in PCC_KINDS:
        raise StbenchError(f"--pcc must be one of {', '.join(PCC_KINDS)}, not {pcc!r}")
    if not reducers or not protocols:
        raise StbenchError("a grid needs at least one reducer and one protocol")
    from stbench.encoders._base import PRECISIONS

    if precision is not None and precision not in PRECISIONS:
        raise StbenchError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    folders = tuple(dict.fromkeys(find_task_dir(t, root).name for t in task_names))
    names = expand_all(encoders, registry.names())
    return GridSpec(
        tasks=folders,
        encoders=tuple(dict.fromkeys(registry.resolve(e) if e in registry else _imported_name(e, folders, store) for e in names)),
        reducers=tuple(reducers), protocols=tuple(protocols), pcc=pcc, precision=precision,
    )


def _imported_name(name: str, tasks: Sequence[str], store: Path | None) -> str:
    """An unregistered encoder name whose embeddings were imported into ``store`` for every task of the grid;
    else the registry's unknown-name error (with suggestions), or the task that lacks them."""
    from stbench.embeddings_import import free_encoder_name, imported_encoder_tasks
    from stbench.encoders import encoders as registry

    have = imported_encoder_tasks(store) if store is not None else {}
    key = name.strip().lower().replace("_", "-")
    if key not in have:
        try:
            registry.resolve(name)
        except StbenchError as exc:
            raise type(exc)(f"{exc} Embeddings computed elsewhere: import them under a name with `bench embeddings "
                            "import`, then run that name.") from None
    lacking = [t for t in tasks if t.lower() not in have[key]]
    if lacking:
        raise StbenchError(f"no imported embeddings of {key} for task {lacking[0]} in the store {store}; import them: "
                           f"bench embeddings import --task {lacking[0]} --encoder {key} --from DIR")
    return free_encoder_name(key)


def weights_by_encoder(given: Sequence[str], encoders: Sequence[str],
                       from_file: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
    """encoder -> weights (a file or ``random[:SEED]``) from ``--weights [ENCODER=]VALUE`` over the grid file's
    [weights]; a bare VALUE needs a grid of one encoder. Names are checked against the grid's encoders."""
    from stbench.embeddings_import import is_imported_weights
    from stbench.encoders import encoders as registry
    from stbench.encoders.weights import random_seed_of

    def resolve(name: str) -> str:  # a free name (imported embeddings) is in the grid as it was given
        return key if (key := name.strip().lower().replace("_", "-")) in encoders else registry.resolve(name.strip())

    out: dict[str, str] = {}
    # the file's entries for encoders that the command line left out of the grid are not used
    in_file = [(n, v) for n, v in from_file if resolve(n) in encoders]
    for name, value in [*in_file, *(g.partition("=")[::2] if "=" in g else ("", g) for g in given)]:
        if not name:
            if len(encoders) != 1:
                raise StbenchError(f"--weights {value}: say which encoder, e.g. --weights {encoders[0]}={value}; "
                                   f"the grid has {len(encoders)} encoders")
            name = encoders[0]
        key, value = resolve(name), value.strip()
        if key not in encoders:
            raise StbenchError(f"weights are given for {key}, which is not in the grid ({', '.join(encoders)})")
        if is_imported_weights(value):  # embeddings imported into the store (stbench.embeddings_import)
            out[key] = value
            continue
        if key not in registry:
            raise StbenchError(f"weights for {key}: it has imported embeddings, not a model; use imported or "
                               "imported:<fingerprint>, or no --weights")
        if random_seed_of(value) is None and not Path(value).expanduser().exists():
            raise StbenchError(f"weights for {key}: {value} does not exist (a weight file, a folder, random[:SEED], "
                               "or imported)")
        out[key] = value
    return out


def narrow_protocol(protocol: Protocol, available: set[str], task: str) -> tuple[Protocol, list[str]]:
    """A gene-list protocol (panel or file) narrowed to the genes measured in every sample of the task:
    ``(protocol, absent genes)``; an error when none is measured."""
    from stbench.panels import split_panel

    if protocol.genes != "file":
        return protocol, []
    present, absent = split_panel(protocol.gene_list, available)
    if not present:
        what = f"{protocol.panel.upper()} genes" if protocol.panel else "genes of the gene file"
        raise ProtocolError(f"none of the {len(absent)} {what} is measured in every sample of task {task}; "
                            "check the gene names (symbols, as in the count files)")
    return replace(protocol, gene_list=tuple(present)), absent


@dataclass
class Block:
    """One (encoder, task) of a grid: its embeddings are ensured once, then every reducer x protocol runs."""

    encoder: str
    task: Task
    reducers: list[Reducer]  # checked and resolved for this task and encoder
    protocols: list[Protocol]  # the spec's, narrowed to this task's genes
    cells: list[Cell]  # in run_cells' order: reducer-major, then protocol


@dataclass
class GridPlan:
    spec: GridSpec
    blocks: list[Block]
    notes: list[str] = field(default_factory=list)  # e.g. panel genes a task lacks

    @property
    def n_cells(self) -> int:
        return sum(len(b.cells) for b in self.blocks)


def plan_grid(spec: GridSpec, root: Path) -> GridPlan:
    """Open every task, narrow gene panels to it, check its files and every reducer's options for each
    (task, encoder): whatever makes the grid meaningless fails here, before anything is written."""
    from stbench.panels import genes_in_every_sample
    from stbench.runner import check_task, eval_genes, prepare_reducers
    from stbench.tasks import open_task

    notes: list[str] = []
    opened: dict[str, tuple[Task, list[Protocol]]] = {}
    for name in spec.tasks:
        task = open_task(name, root)
        available = genes_in_every_sample(task) if any(p.genes == "file" for p in spec.protocols) else set()
        protocols = []
        for p in spec.protocols:
            narrowed, absent = narrow_protocol(p, available, task.name)
            protocols.append(narrowed)
            if absent:
                what = f"{p.panel.upper()} genes" if p.panel else "genes of the gene file"
                notes.append(f"{task.name}: {len(absent)} of {len(p.gene_list)} {what} are not measured in every "
                             f"sample and are not evaluated: {', '.join(absent)}")
        check_task(task, list(dict.fromkeys(g for p in protocols for g in eval_genes(task, p))))
        opened[name] = (task, protocols)
    blocks = []
    grid_cells = cells(spec)
    for enc in spec.encoders:
        for name in spec.tasks:
            task, protocols = opened[name]
            reducers = prepare_reducers(task, enc, spec.reducers)
            block_cells = [c for c in grid_cells if c.encoder == enc and c.task == name]
            blocks.append(Block(enc, task, reducers, protocols, block_cells))
    return GridPlan(spec, blocks, list(dict.fromkeys(notes)))


@dataclass
class CellOutcome:
    """What became of one cell: its result read back from the store, or its failure."""

    cell: Cell
    result: RunResult | CellFailure

    @property
    def status(self) -> str:
        """ok (computed now), cached (read from the store) or failed."""
        from stbench.runner import CellFailure

        if isinstance(self.result, CellFailure):
            return "failed"
        return "cached" if self.result.cached else "ok"  # type: ignore[union-attr]

    @property
    def error(self) -> str | None:
        return self.result.message if self.status == "failed" else None  # type: ignore[union-attr]


class _Tracker:
    """Pairs run_cells' outcomes with the plan's cells, moves the overall bar and tells ``on_cell``."""

    def __init__(self, progress: Progress | None, total: int, on_cell: Callable[[CellOutcome], None] | None) -> None:
        self.progress, self.on_cell = progress, on_cell
        self.bar = progress.add_task("grid", total=total) if progress is not None and total > 1 else None
        self.outcomes: list[CellOutcome] = []
        self.block: Block | None = None
        self.cells: Iterator[Cell] = iter(())

    def enter(self, block: Block) -> None:
        self.block, self.cells = block, iter(block.cells)

    def started(self, reducer: Reducer) -> None:
        if self.progress is not None and self.bar is not None and self.block is not None:
            b = self.block
            self.progress.update(self.bar, description=f"{b.encoder} · {b.task.name} · {reducer.name}")

    def done(self, result: RunResult | CellFailure) -> None:
        outcome = CellOutcome(next(self.cells), result)
        self.outcomes.append(outcome)
        if self.progress is not None and self.bar is not None:
            self.progress.advance(self.bar)
        if self.on_cell is not None:
            self.on_cell(outcome)

    def close(self) -> None:
        if self.progress is not None and self.bar is not None:
            self.progress.remove_task(self.bar)


def run_grid(
    plan: GridPlan,
    store: Store,
    *,
    progress: Progress | None = None,
    on_cell: Callable[[CellOutcome], None] | None = None,
    keep_going: bool = True,
    weights: dict[str, str] | None = None,
    executor: str = "local",
    address: str | None = None,
    gpus_per_task: float = 1.0,
    **run_kw: Any,
) -> list[CellOutcome]:
    """Run the plan's cells in order (``weights``: encoder -> weight file or random[:SEED]; ``run_kw``:
    batch_size, device, compile, force); one overall progress bar counts cells. With ``keep_going`` a failed cell is recorded and the grid goes on; otherwise
    the first failure is raised.

    ``executor``: ``local`` runs everything in this process; ``ray`` runs extraction and reducer fits as Ray
    tasks (`stbench.executors`) on the cluster at ``address`` or on a local instance, with the same results."""
    if executor == "ray":
        from stbench.executors import run_grid_ray

        return run_grid_ray(plan, store, progress=progress, on_cell=on_cell, keep_going=keep_going, weights=weights,
                            address=address, gpus_per_task=gpus_per_task, **run_kw)
    if executor != "local":
        raise StbenchError(f"--executor must be local or ray, not {executor!r}")
    from stbench.extract import PipelineCache
    from stbench.runner import run_cells

    pipelines = PipelineCache()  # one encoder's weights at a time, loaded once for all its tasks
    tracker = _Tracker(progress, plan.n_cells, on_cell)
    previous = None
    try:
        for block in plan.blocks:
            if block.encoder != previous:  # free the last encoder's weights before the next one's work
                pipelines.release()
                previous = block.encoder
            tracker.enter(block)
            encoder = block_encoder(block.encoder, plan.spec.precision)
            run_cells(block.task, encoder, block.reducers, block.protocols, store,
                      progress=progress, pipelines=pipelines, keep_going=keep_going, on_start=tracker.started,
                      on_cell=tracker.done, weights=(weights or {}).get(block.encoder), **run_kw)
    finally:
        pipelines.release()
        tracker.close()
    return tracker.outcomes


def block_encoder(name: str, precision: str | None = None) -> Encoder | ImportedEmbeddings:
    """The encoder a block runs: the registered one in ``precision`` (``--precision``; None: its default), or
    the stand-in of embeddings imported under ``name`` (computed elsewhere, their precision is theirs)."""
    from stbench.embeddings_import import encoder_for
    from stbench.encoders import Encoder

    encoder = encoder_for(name)
    return encoder.with_precision(precision) if isinstance(encoder, Encoder) else encoder


def protocol_label(protocol: Protocol, among: Sequence[Protocol]) -> str:
    """The settings that tell ``protocol`` apart from the other variants, e.g. ``alpha=cv solver=exact``;
    empty when there is one variant."""
    def fields(p: Protocol) -> dict[str, str]:
        d = {k: v for k, v in p.to_dict().items() if k not in ("version", "gene_list", "panel", "pcc")}
        if p.solver == ("exact" if p.alpha == "cv" or p.is_sweep else "lsqr"):
            del d["solver"]  # the default for its alpha: alpha says it
        if p.dtype == ("float32" if p.solver == "lsqr" else "float64"):
            del d["dtype"]  # the default for its solver
        if p.intercept == (p.alpha == "cv"):
            del d["intercept"]  # the default for its alpha
        if p.genes == "file":
            d["genes"] = p.panel or f"file({len(p.gene_list)})"
        return {k: str(v).lower() for k, v in d.items()}

    mine, others = fields(protocol), [fields(p) for p in among]
    varying = [k for k in mine if any(o.get(k) != mine[k] for o in others)]
    return " ".join(f"{k}={mine[k]}" for k in varying)
