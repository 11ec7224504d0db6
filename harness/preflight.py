"""Preflight: everything a grid needs, checked before any work, every missing piece reported at once.

`preflight` looks at the task folders, each encoder's weights (``--weights``, the config file, a package,
the Hugging Face cache, or the hub with a token that has access), the gene sets of gene-program reducers,
optional extras (Ray, a CUDA device when one is asked for) and the free disk for the embeddings the grid
writes. It never downloads, never loads a model and never imports torch unless ``--device cuda`` asks for a
GPU. Whether the hub is reachable is decided once (`stbench.network.hub_reach`: at most ~1.5 s, never through
huggingface_hub's retries), and only when something would need it.

Every problem carries the exact command(s) that fix it. ``bench run`` / ``bench ablate`` print the report and
stop (exit code 4) when anything is missing; ``bench doctor`` prints it and runs nothing.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from stbench.errors import StbenchError

if TYPE_CHECKING:
    from stbench.encoders import Encoder
    from stbench.network import Reach
    from stbench.runner import ReducerChoice

__all__ = ["Check", "Report", "PreflightFailed", "preflight", "weights_given"]

HEST_DATASET = "https://huggingface.co/datasets/MahmoodLab/hest-bench"
DEMO = "DEMO"
_MARGIN = 64 << 20  # bytes kept free beyond the estimate (catalog, models, temp files)


class PreflightFailed(StbenchError):
    """Something the run needs is missing (the report above lists every piece with its fix)."""

    exit_code = 4


@dataclass(frozen=True)
class Check:
    what: str  # "task luad", "weights uni", "gene sets hallmark", "disk", "ray", "device cuda"
    ok: bool
    detail: str  # where it was found, or what is wrong
    fix: tuple[str, ...] = ()  # exact commands, in order


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    reach: Reach | None = None  # None: nothing needed the network, so it was not probed
    seconds: float = 0.0
    summary: str = ""

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def one_line(self) -> str | None:
        """The only problem and its fix as one line, when there is one problem with a one-command fix."""
        if len(self.problems) != 1 or len(self.problems[0].fix) > 1:
            return None
        c = self.problems[0]
        return c.detail + (f" (fix: {c.fix[0]})" if c.fix else "")

    def problem_lines(self) -> list[str]:
        """Only the missing pieces, each with its fix (what `bench run` prints; `bench doctor` shows all)."""
        return self._lines(self.problems)

    def lines(self) -> list[str]:
        """The whole report (`bench doctor`)."""
        return self._lines(self.checks)

    def _lines(self, checks: list[Check]) -> list[str]:
        """The report as plain lines: a header, one line per check, ``fix:`` lines under each problem."""
        out = [f"preflight: {self.summary} ({self.seconds:.2f} s)"]
        if self.reach is not None:
            out.append(f"network: {'online' if self.reach.online else 'OFFLINE'}, {self.reach.why}")
        width = max((len(c.what) for c in checks), default=0)
        for c in checks:
            out.append(f"  {'ok     ' if c.ok else 'MISSING'}  {c.what.ljust(width)}  {c.detail}")
            out += [f"           {'fix: ' if not f.startswith(' ') else '     '}{f}" for f in c.fix]
        n = len(self.problems)
        out.append("all set: nothing missing" if n == 0 else
                   f"{n} problem{'s' * (n != 1)}: fix {'them' if n > 1 else 'it'} as shown, then rerun "
                   "(bench doctor with the same options checks again without running anything)")
        return out


def weights_given(given: Iterable[str], encoders: Sequence[str]) -> dict[str, str]:
    """``--weights [ENCODER=]VALUE`` as encoder -> value, leniently (the run validates them fully later): a
    bare value belongs to the only encoder, names are resolved through the registry where they can be."""
    from stbench.encoders import encoders as registry

    out: dict[str, str] = {}
    for item in given:
        name, sep, value = item.partition("=")
        if not sep:
            name, value = (encoders[0] if len(encoders) == 1 else ""), item
        try:
            name = registry.resolve(name.strip())
        except StbenchError:
            name = name.strip().lower()
        if name:
            out[name] = value.strip()
    return out


class _Checker:
    def __init__(self, data_root: Path, store: Path) -> None:
        self.root, self.store = data_root, store
        self._reach: Reach | None = None

    def reach(self) -> Reach:
        from stbench.network import hub_reach

        if self._reach is None:
            self._reach = hub_reach()
        return self._reach

    # -- tasks ----------------------------------------------------------------------------------------------
    def tasks(self, names: Sequence[str]) -> tuple[list[Check], dict[str, int]]:
        """A check per task, and the patch count of each task found (for the disk estimate)."""
        from stbench.grid import expand_all
        from stbench.tasks import HEST_TASKS, canonical_task_name, find_task_dir, list_task_dirs

        checks, patches = [], {}
        wanted = expand_all(names, [p.name for p in list_task_dirs(self.root)])
        if not wanted:
            return [Check("tasks", False, f"no task folders under the data root {self.root}",
                          ("bench data fetch --task NAME    (a HEST-Benchmark task; or bench data demo)",))], {}
        for name in wanted:
            canonical = canonical_task_name(name)
            if canonical == DEMO and not (self.root / DEMO).exists():
                checks.append(Check(f"task {name}", True, "the synthetic demo: created on first run"))
                continue
            try:
                folder = find_task_dir(name, self.root)
            except StbenchError as exc:
                checks.append(self._missing_task(name, canonical, str(exc), canonical in HEST_TASKS))
                continue
            checks.append(self._task_files(name, folder, patches))
        return checks, patches

    def _missing_task(self, name: str, canonical: str, message: str, hest: bool) -> Check:
        fixes = re.findall(r"`([^`]+)`", message) or ["bench list tasks"]
        from stbench.settings import data_root as default_root

        if self.root != default_root() and fixes[0].startswith("bench data"):  # the task must land where the run looks
            fixes[0] += f" --data-root {self.root}"
        detail = message.split(". ")[0].split("; ")[0]
        if hest:
            cmd = fixes[0]
            fixes = [f"{cmd}    (needs access to {HEST_DATASET}: hf auth login)"]
            if not self.reach().online:
                fixes = [f"--data-root DIR    (a folder holding {canonical}/), or copy {canonical}/ from a machine "
                         f"that has it into {self.root}", f"or, on a machine with the network and access to {HEST_DATASET}:",
                         f"  hf auth login && {cmd} --data-root DIR", f"  then copy it here: cp -rL DIR/{canonical} {self.root}/    (-L: fetch links into the HF cache)"]
        return Check(f"task {name}", False, detail, tuple(fixes))

    def _task_files(self, name: str, folder: Path, patches: dict[str, int]) -> Check:
        from stbench.tasks import PatchFile, open_task

        try:
            task = open_task(folder.name, folder.parent)
            absent = [(p, kind) for s in task.samples.values()
                      for p, kind in ((s.patches, "patch"), (s.adata, "count")) if not p.exists()]
            if absent:
                more = f" (and {len(absent) - 1} more files)" if len(absent) > 1 else ""
                return Check(f"task {name}", False, f"{absent[0][0]}: {absent[0][1]} file does not exist{more}",
                             (f"bench data fetch --task {folder.name.lower()}    (or import the task again)",))
            n = 0
            for sample in task.samples.values():
                with PatchFile(sample.patches) as pf:
                    n += len(pf)
        except StbenchError as exc:
            return Check(f"task {name}", False, str(exc), ("bench list tasks",))
        patches[task.name] = n
        return Check(f"task {name}", True, f"{folder} ({len(task.samples)} samples, {n} patches)")

    # -- weights --------------------------------------------------------------------------------------------
    def weights(self, enc: Encoder, given: str | None) -> Check:
        from stbench.embeddings_import import is_imported_weights
        from stbench.encoders.weights import random_seed_of, user_config_path

        name, what = enc.name, f"weights {enc.name}"
        by_hand = (f"--weights {name}=PATH    (a weight file or folder; or {name} = \"PATH\" under [weights] in "
                   f"{user_config_path()})")
        if given:
            if random_seed_of(given) is not None and not enc.spec.random_init:
                return Check(what, False, f"--weights {given}: {name} cannot be built with random weights "
                                          "(its spec has no random_init)",
                             ("bench list encoders --wide    (the random init column: the encoders that can)",))
            if random_seed_of(given) is not None or is_imported_weights(given):
                return Check(what, True, f"--weights {given}")
            if Path(given).expanduser().exists():
                return Check(what, True, f"--weights {given}")
            return Check(what, False, f"--weights {given}: no such file or folder", (by_hand,))
        try:
            where = enc.available()
        except StbenchError as exc:
            return Check(what, False, str(exc), (f"fix or remove the [weights] entry in {user_config_path()}",))
        if where:
            return Check(what, True, f"on this machine ({where})")
        src = enc.spec.source
        if src is None or not src.repo_id:
            hint = src.hint if src is not None and src.hint else "no hub serves them"
            return Check(what, False, f"not on this machine; {hint}", (by_hand,))
        return self._hub_weights(enc, by_hand)

    def _hub_weights(self, enc: Encoder, by_hand: str) -> Check:
        from huggingface_hub import constants

        src, what = enc.spec.source, f"weights {enc.name}"
        page = src.page or f"https://huggingface.co/{src.repo_id}"
        login = f"request access at {page}, then: hf auth login" if enc.spec.gated else ""
        files = " ".join(src.files[:1] + (("config.json",) if src.config else ()))
        revision = f" --revision {src.revision}" if src.revision else ""
        reach = self.reach()
        if not reach.online:
            access = f" and access (request it at {page})" if enc.spec.gated else ""
            fixes = [by_hand, f"or, on a machine with the network{access}:",
                     f"  {'hf auth login && ' if enc.spec.gated else ''}hf download {src.repo_id} {files}{revision}",
                     f"  then copy that machine's Hugging Face cache ($HF_HUB_CACHE, default ~/.cache/huggingface/hub) to "
                     f"{constants.HF_HUB_CACHE}"]
            return Check(what, False, f"hf.co/{src.repo_id} is not in the Hugging Face cache and the hub is "
                                      "unreachable", tuple(fixes))
        return _hub_access(enc, what, login, by_hand)

    # -- gene sets ------------------------------------------------------------------------------------------
    def gene_sets(self, choices: Sequence[ReducerChoice]) -> list[Check]:
        from stbench.reducers import reducers

        values: dict[str, list[str]] = {}
        for choice in choices:
            try:
                cls = reducers.get(choice.name)
            except StbenchError:
                continue  # the run reports unknown reducers itself
            defaults = {f.name: f.default for f in dataclasses.fields(cls.Options)}
            if "gene_sets" in defaults:
                value = str(choice.options.get("gene_sets", defaults["gene_sets"]))
                values.setdefault(value, []).append(cls.name)
        return [self._gene_set(value, sorted(set(users))) for value, users in values.items()]

    def _gene_set(self, value: str, users: list[str]) -> Check:
        from stbench.reducers.bpbooster.programs import hallmark_source

        what = f"gene sets {value if value.lower() == 'hallmark' else Path(value).name}"
        local = "--gene-sets PATH    (a local GMT file of gene sets, such as MSigDB's h.all.*.symbols.gmt)"
        if value.strip().lower() != "hallmark":
            path = Path(value).expanduser()
            if path.is_file():
                return Check(what, True, f"{path} (for {', '.join(users)})")
            return Check(what, False, f"{path} does not exist (for {', '.join(users)})", (local,))
        url, target = hallmark_source()
        if target.is_file():
            return Check(what, True, f"MSigDB Hallmark cached at {target}")
        if self.reach().online:
            return Check(what, True, f"MSigDB Hallmark: downloaded on first use from {url} to {target}")
        return Check(what, False, f"MSigDB Hallmark is not cached at {target} and the network is unreachable "
                                  f"(for {', '.join(users)})",
                     (local, "or, on a machine with the network:", f"  curl -fLo {target.name} {url}",
                      f"  then copy {target.name} to {target}"))

    # -- extras and disk ------------------------------------------------------------------------------------
    def extras(self, executor: str, device: str) -> list[Check]:
        import importlib.util

        checks = []
        if executor == "ray":
            try:
                found = importlib.util.find_spec("ray") is not None
            except ValueError:  # in sys.modules without a spec: an import of it was blocked
                found = False
            checks.append(Check("ray", found, "installed" if found else "the Ray executor needs ray, an optional extra",
                                () if found else ('pip install "stbench[ray]"',)))
        if device.startswith("cuda"):
            checks.append(_cuda(device))
        return checks

    def disk(self, encoders: Sequence[Encoder], patches: Mapping[str, int]) -> Check | None:
        if not patches or not encoders:
            return None
        need = sum(n * (e.spec.embed_dim * 4 + 64) for e in encoders for n in patches.values())  # + barcode, coords
        where = self.store
        while not where.exists() and where != where.parent:
            where = where.parent
        free = shutil.disk_usage(where).free
        detail = f"embeddings need at most {_size(need)}, {_size(free)} free at {where}"
        if need * 1.1 + _MARGIN <= free:
            return Check("disk", True, detail)
        return Check("disk", False, detail, (f"--store DIR    (a folder on a disk with {_size(need * 1.1 + _MARGIN)} "
                                             "free; or free space there)",))


def _hub_access(enc: Encoder, what: str, login: str, by_hand: str) -> Check:
    """One metadata request per file name (3 s timeout, no retries): is it there, and may this token read it?"""
    from huggingface_hub import get_hf_file_metadata, get_token, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError

    from stbench.hub import hub_problem

    src = enc.spec.source
    token = get_token()
    if enc.spec.gated and not token:
        return Check(what, False, f"hf.co/{src.repo_id} is gated and no Hugging Face token was found",
                     (login, f"or {by_hand}"))
    for filename in src.files:
        try:
            meta = get_hf_file_metadata(hf_hub_url(src.repo_id, filename, revision=src.revision), token=token,
                                        timeout=3)
        except EntryNotFoundError:
            continue
        except Exception as exc:  # noqa: BLE001 - sorted by hub_problem; anything else is reported as is
            problem = hub_problem(exc)
            kind = problem.kind if problem else type(exc).__name__
            if kind in ("gated", "no-token", "token-refused"):
                return Check(what, False, f"hf.co/{src.repo_id}: this token has no access ({kind})",
                             (login or "hf auth login", f"or {by_hand}"))
            return Check(what, False, f"hf.co/{src.repo_id}: {problem.detail if problem else exc}", (by_hand,))
        size = f" ({_size(meta.size)})" if meta.size else ""
        return Check(what, True, f"hf.co/{src.repo_id}: downloaded on first use{size}")
    return Check(what, False, f"hf.co/{src.repo_id} has none of {', '.join(src.files)}", (by_hand,))


def _cuda(device: str) -> Check:
    import torch

    index = int(device.partition(":")[2] or 0)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index < count:
        return Check(f"device {device}", True, torch.cuda.get_device_name(index))
    build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
    return Check(f"device {device}", False, f"torch sees {count} CUDA device{'s' * (count != 1)} ({build})",
                 ("--device cpu    (or --device auto)",))


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def preflight(tasks: Sequence[str], encoders: Sequence[str], reducers: Sequence[ReducerChoice], *, data_root: Path,
              store: Path, weights: Mapping[str, str] | None = None, device: str = "auto",
              executor: str = "local") -> Report:
    """Check everything the grid needs; nothing is downloaded, loaded or written. ``weights``: encoder -> the
    ``--weights`` value given for it (`weights_given`)."""
    from stbench.encoders import encoders as registry
    from stbench.grid import expand_all

    start = time.monotonic()
    checker = _Checker(Path(data_root), Path(store))
    task_checks, patches = checker.tasks(tasks)
    exists = "" if checker.root.is_dir() else " (does not exist yet)"
    checks = [Check("data root", True, f"{checker.root}{exists}"), *task_checks]
    found: list[Encoder] = []
    for name in dict.fromkeys(expand_all(encoders, registry.names())):
        try:
            enc = registry.get(name)
        except StbenchError as exc:
            if any(n.lower() == name.strip().lower().replace("_", "-") for n in _imported_names(checker.store)):
                checks.append(Check(f"weights {name}", True, "imported embeddings in the store"))
            else:
                checks.append(Check(f"encoder {name}", False, str(exc), (
                    "bench list encoders    (or, for embeddings computed elsewhere: bench embeddings import "
                    f"--task TASK --encoder {name.strip()} --from DIR)",)))
            continue
        found.append(enc)
        checks.append(checker.weights(enc, (weights or {}).get(enc.name)))
    checks += checker.gene_sets(reducers)
    checks += checker.extras(executor, device)
    disk = checker.disk(found, patches)
    checks += [disk] if disk else []
    n_tasks = len([c for c in task_checks if c.what.startswith("task ")])
    summary = (f"{n_tasks} task{'s' * (n_tasks != 1)} x {len(found)} encoder{'s' * (len(found) != 1)} x "
               f"{len(reducers)} reducer{'s' * (len(reducers) != 1)}")
    return Report(checks, checker._reach, time.monotonic() - start, summary)


def _imported_names(store: Path) -> list[str]:
    try:
        from stbench.embeddings_import import imported_encoder_tasks

        return list(imported_encoder_tasks(store)) if (store / "catalog.duckdb").exists() else []
    except Exception:  # noqa: BLE001 - an unreadable store is reported by the run itself
        return []
