"""Where benchmarks write what they measured (one JSON line per run in benchmarks/out/<name>.jsonl), and how
they measure a command's process tree."""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("out")


def append_result(name: str, row: dict[str, Any]) -> Path:
    """Append ``row`` to ``benchmarks/out/<name>.jsonl`` (created on first use); returns the file."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.jsonl"
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    return path


def measure_tree(cmd: list[str], *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd``: wall and CPU seconds of its whole process tree, its peak resident memory (summed over the
    tree, polled every 0.2 s) and its output; a non-zero exit stops the benchmark with that output's tail."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peak, cpu, done = [0], {}, threading.Event()

    def poll() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree))
                for p in tree:
                    t = p.cpu_times()
                    cpu[p.pid] = t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass
            done.wait(0.2)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    out, _ = proc.communicate()
    done.set()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)}: exit {proc.returncode}\n{out[-4000:]}")
    return {"wall_s": round(time.perf_counter() - start, 2), "cpu_s": round(sum(cpu.values()), 1),
            "peak_mb": round(peak[0] / 2**20), "output": out}
