"""The leaderboard site of one store: build time (cold, warm, warm after one new run), site size, first-load weight.

    python benchmarks/bench_leaderboard.py --store S [--out DIR] [--no-embeddings] [--no-spatial-csv] [--browser]
        [--add-run "--task T --encoder E --reducer R ... --data-root D"] [--grid-spots 170000 --grid-runs 72
         --grid-genes 50 --grid-tasks 10 --grid-encoders 9]

Builds, each in a fresh `bench leaderboard build --include-synthetic` process measured for wall time, CPU time
(its whole process tree) and peak resident memory:

1. cold: an empty output folder and an empty layout cache (``S/cache/layouts`` is moved aside for it and
   dropped afterwards: the cold build stores the same layouts again);
2. warm: the same build again (every layout cached, every spatial folder unchanged);
3. after one new run (``--add-run``: the arguments of one `bench run`, run first and timed apart): the layouts
   and spatial folders the run touches are recomputed, the rest reused.

Then the site: its size by kind of file, its file count, and the heaviest page's first load (the page plus the
files its HTML names: stylesheet, scripts, the slices shown first; plotly.js excluded, one copy per site), from
`stbench.leaderboard.site.first_load`; ``--browser`` also opens that page in headless Chromium (Playwright)
from disk and sums what it really reads until it is drawn. The ``--grid-*`` counts scale the measured bytes and
seconds per spot value to a grid of that shape (an extrapolation, labelled so). Appends a JSON line to
benchmarks/out/leaderboard.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _results import (  # benchmarks/_results.py (run as python benchmarks/<file>.py)
    append_result,
    measure_tree,
)

BENCH = [sys.executable, "-m", "stbench.cli"]


def measure(cmd: list[str]) -> dict:
    return measure_tree(cmd, env={**os.environ, "COLUMNS": "250"})  # rich wraps at the terminal's width


def build(store: Path, out: Path, args: argparse.Namespace) -> dict:
    cmd = [*BENCH, "leaderboard", "build", "--store", str(store), "--out", str(out), "--include-synthetic",
           *(["--no-embeddings"] if args.no_embeddings else []),
           *(["--no-spatial-csv"] if args.no_spatial_csv else [])]
    m = measure(cmd)
    m["said"] = [line.strip() for line in m.pop("output").splitlines() if "layouts" in line or "spatial maps" in line]
    return m


def sizes(site: Path) -> dict:
    """Bytes by kind: slices (data/spatial/**/*.js), CSVs, pages, assets; and counts."""
    kinds = {"slices": 0, "csv": 0, "pages": 0, "assets": 0, "other": 0}
    n = 0
    for p in site.rglob("*"):
        if not p.is_file():
            continue
        n += 1
        rel = p.relative_to(site).as_posix()
        kind = ("slices" if rel.startswith("data/spatial/") and rel.endswith(".js") else "csv" if rel.endswith(".csv")
                else "pages" if rel.endswith(".html") else "assets" if rel.startswith("assets/") else "other")
        kinds[kind] += p.stat().st_size
    return {"total_mb": round(sum(kinds.values()) / 2**20, 1), **{f"{k}_mb": round(v / 2**20, 1) for k, v in kinds.items()},
            "files": n}


def heaviest(site: Path) -> dict:
    from stbench.leaderboard.site import first_load

    loads = {p.name: first_load(site, p.name) for p in site.glob("*.html")}
    page = max(loads, key=lambda k: loads[k][0])
    return {"page": page, "first_load_kb": round(loads[page][0] / 1024, 1), "files": loads[page][1],
            "median_first_load_kb": round(sorted(v[0] for v in loads.values())[len(loads) // 2] / 1024, 1),
            "pages": len(loads)}


def browser_load(site: Path, page: str) -> dict:
    """Open ``page`` from disk in headless Chromium and sum the bytes of every file it reads, plotly.js excluded."""
    from playwright.sync_api import sync_playwright

    urls: list[str] = []
    errors: list[str] = []
    chromium = os.environ.get("STBENCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        tab = b.new_page()
        tab.on("request", lambda r: urls.append(r.url))
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        start = time.perf_counter()
        tab.goto((site / page).as_uri())
        tab.wait_for_selector("body[data-ready='1']", timeout=120_000)
        tab.wait_for_load_state("networkidle")
        seconds = time.perf_counter() - start
        b.close()
    from urllib.parse import unquote, urlparse

    files = [Path(unquote(urlparse(u).path)) for u in dict.fromkeys(urls) if u.startswith("file:")]
    kept = [f for f in files if f.name != "plotly.min.js"]
    return {"read_kb": round(sum(f.stat().st_size for f in kept) / 1024, 1), "files": len(kept),
            "open_s": round(seconds, 2), "console_errors": errors}


def counts(store: Path) -> dict:
    """What the spatial pages show: values = spots x genes x (runs + measured), summed over (task, encoder)."""
    from stbench.leaderboard.data import load_leaderboard

    board = load_leaderboard(store, include_synthetic=True)
    shown = [r for r in board.included if r["shown"]]
    pages: dict[tuple[str, str], list] = {}
    for r in shown:
        pages.setdefault((r["task"], r["encoder"]), []).append(r)
    values = 0
    for runs in pages.values():
        n_test = sum(runs[0]["n_test"])  # every spot of the task is a test spot once
        values += n_test * max(runs[0]["n_genes"]) * (len(runs) + 1)
    return {"runs": len(board.included), "tasks": len(board.tasks), "spatial_pages": len(pages), "spot_values": values}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--out", type=Path, help="site folder (default: a temporary one, removed)")
    ap.add_argument("--add-run", help="arguments of one `bench run` for the third build, e.g. '--task T --encoder E "
                                      "--reducer bpbooster-random --data-root D'")
    ap.add_argument("--no-embeddings", action="store_true")
    ap.add_argument("--no-spatial-csv", action="store_true",
                    help="leave out the per-sample spatial CSV downloads (most of a big site's bytes)")
    ap.add_argument("--browser", action="store_true", help="also measure the heaviest page's first load in Chromium")
    ap.add_argument("--grid-spots", type=int, default=170_000, help="the HEST grid's spots, over all tasks")
    ap.add_argument("--grid-genes", type=int, default=50)
    ap.add_argument("--grid-runs", type=int, default=8, help="shown runs per (task, encoder): reducers x protocols")
    ap.add_argument("--grid-encoders", type=int, default=9)
    ap.add_argument("--grid-tasks", type=int, default=10)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stbench-bench-leaderboard-"))
    site = args.out or work / "site"
    row: dict = {"store": str(args.store), "embeddings": not args.no_embeddings, "spatial_csv": not args.no_spatial_csv,
                 **counts(args.store)}
    cache = args.store / "cache" / "layouts"
    aside = cache.with_name(f"layouts.bench-aside-{os.getpid()}")
    try:
        if site.exists():
            shutil.rmtree(site)
        if cache.exists():
            cache.rename(aside)
        try:
            row["cold"] = build(args.store, site, args)
        except BaseException:
            if aside.exists() and not cache.exists():
                aside.rename(cache)
            raise
        shutil.rmtree(aside, ignore_errors=True)
        row["warm"] = build(args.store, site, args)
        if args.add_run:
            run = measure([*BENCH, "run", *shlex.split(args.add_run), "--store", str(args.store), "--no-progress"])
            run.pop("output")
            row["added_run"] = {"args": args.add_run, **run}
            row["after_one_run"] = build(args.store, site, args)
        row["site"] = sizes(site)
        row["heaviest"] = heaviest(site)
        if args.browser:
            row["heaviest"]["browser"] = browser_load(site, row["heaviest"]["page"])
        per_value = row["site"]["slices_mb"] * 2**20 / max(row["spot_values"], 1)
        csv_per_value = row["site"]["csv_mb"] * 2**20 / max(row["spot_values"], 1)
        grid_values = args.grid_spots * args.grid_genes * args.grid_encoders * (args.grid_runs + 1)
        row["extrapolated_to_grid"] = {
            "note": "EXTRAPOLATED: bytes per spot value measured here x the grid's spot values",
            "spot_values": grid_values, "slices_gb": round(per_value * grid_values / 2**30, 2),
            "csv_gb": round(csv_per_value * grid_values / 2**30, 2),
        }
    finally:
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)
    row.update({"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()], "machine": platform.machine(),
                "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")})
    path = append_result("leaderboard", row)
    print(json.dumps(row, indent=1))
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
