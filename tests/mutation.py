"""Mutation testing of the numeric and data-handling core, on demand (not in CI: it takes tens of minutes).

    python tests/mutation.py                      # every module in [tool.mutmut] only_mutate
    python tests/mutation.py metrics pca          # some of them (names match the file stem)
    python tests/mutation.py --survivors          # also print the diff of every surviving mutant
    python tests/mutation.py --fresh              # forget earlier results (after adding tests)

mutmut copies the package into ``mutants/`` and puts that folder first on ``sys.path``. stbench's
source folders are not laid out as the import package (harness/ is ``stbench``, stores/ is
``stbench.stores``: see pyproject's package-dir), so this script first stages a copy in the package layout
under ``.mutation/`` (kept between runs: mutmut reuses results of unchanged functions), then runs
``mutmut run`` there and prints each module's kill rate. Configuration: ``[tool.mutmut]`` in pyproject.toml.
Results and the surviving mutants that are equivalent are recorded in TESTING.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE = REPO / ".mutation"  # --stage: another folder, for runs side by side
# source folder -> where it sits in the import package (pyproject's [tool.setuptools] package-dir)
LAYOUT = {"harness": "stbench", "encoders": "stbench/encoders", "reducers": "stbench/reducers",
          "stores": "stbench/stores", "leaderboard": "stbench/leaderboard"}
DETECTED = ("killed", "timeout", "caught by type check", "segfault")


def _sync(src: Path, dst: Path) -> None:
    """Copy ``src`` over ``dst``, leaving unchanged files alone; a changed file gets a new mtime, which is how
    mutmut knows to mutate it again (keeping the source's older mtime would make it reuse stale mutants)."""
    for path in src.rglob("*"):
        if "__pycache__" in path.parts or path.suffix in (".pyc", ".egg-info"):
            continue
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists() or target.read_bytes() != path.read_bytes():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def stage(root: Path) -> dict:
    """Stage the package layout, the tests and the configuration under `STAGE`; returns [tool.mutmut]."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mutmut"]
    pkg = root / "stbench"
    for folder, where in LAYOUT.items():
        _sync(REPO / folder, root / where)
    _sync(REPO / "tests", root / "tests")
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    for stale in [p for p in pkg.rglob("*.py") if not _source_of(p, root).exists()]:
        stale.unlink()  # a module deleted from the repository
    return config


def _source_of(staged: Path, root: Path) -> Path:
    rel = staged.relative_to(root).as_posix()
    for folder, where in sorted(LAYOUT.items(), key=lambda kv: -len(kv[1])):
        if rel.startswith(where + "/"):
            return REPO / folder / rel[len(where) + 1:]
    return REPO / rel


def results(root: Path, modules: list[str]) -> dict[str, Counter]:
    """Status counts per mutated module, read from mutmut's per-file metadata."""
    from mutmut.stats import status_by_exit_code

    out: dict[str, Counter] = {}
    for module in modules:
        meta = root / "mutants" / f"{module}.meta"
        if not meta.exists():
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        out[module] = Counter(status_by_exit_code[c] for c in codes.values())
    return out


def table(root: Path, counts: dict[str, Counter]) -> str:
    lines = ["| module | mutants | killed | timeout | survived | no tests | kill rate |", "|---|---|---|---|---|---|---|"]
    for module, c in counts.items():
        total = sum(c.values())
        detected = sum(c[s] for s in DETECTED)
        lines.append(f"| {_source_of(root / module, root).relative_to(REPO)} | {total} | {c['killed']} | {c['timeout']} | "
                     f"{c['survived']} | {c['no tests']} | {detected / total:.1%} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help="file stems to mutate (default: all of [tool.mutmut] only_mutate)")
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--survivors", action="store_true", help="print every surviving mutant's diff")
    ap.add_argument("--stage", type=Path, default=STAGE, help=f"where to stage and keep results (default: {STAGE})")
    ap.add_argument("--fresh", action="store_true",
                    help="start from an empty stage: mutmut keeps the result of every unchanged function, so a "
                         "mutant that survived stays 'survived' after a test that kills it is added")
    args = ap.parse_args()
    stage_dir = args.stage.absolute()
    if args.fresh and stage_dir.exists():
        shutil.rmtree(stage_dir)
    config = stage(stage_dir)
    modules = config["only_mutate"]
    if args.modules:
        modules = [m for m in modules if Path(m).stem in args.modules]
        if not modules:
            sys.exit(f"none of {args.modules} is in [tool.mutmut] only_mutate: {config['only_mutate']}")
    env = {**os.environ, "STBENCH_SHARED_DATA": os.environ.get("STBENCH_SHARED_DATA", str(REPO.parent / "shared" / "data")),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    # mutmut mutates every file of only_mutate; with module names given, only their mutants are run
    patterns = [f"{m.removesuffix('.py').replace('/', '.')}.*" for m in modules] if args.modules else []
    subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children), *patterns],
                   cwd=stage_dir, env=env, check=False)
    counts = results(stage_dir, modules)
    print(table(stage_dir, counts))
    if args.survivors:
        listing = subprocess.run([sys.executable, "-m", "mutmut", "results"], cwd=stage_dir, env=env, capture_output=True,
                                 text=True).stdout
        for line in listing.splitlines():
            name, _, status = line.strip().rpartition(": ")
            if status == "survived":
                print(subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=stage_dir, env=env,
                                     capture_output=True, text=True).stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
