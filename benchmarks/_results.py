"""Where benchmarks write what they measured: one JSON line per run in benchmarks/out/<name>.jsonl."""

from __future__ import annotations

import json
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
