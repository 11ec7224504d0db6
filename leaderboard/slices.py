"""A spatial page's data as small files, one per slice, loaded by the page only when it shows that slice.

A spatial page (one task, one encoder) would otherwise carry every run x test sample x gene x spot; at the
HEST grid's size that is tens of megabytes per page, all parsed at open. Instead its folder holds::

    data/spatial/<task>/<encoder>/manifest.json              what the folder holds and the key it was built from
    data/spatial/<task>/<encoder>/<sample>/spots.js           the sample's shown spots: x, y (float32)
    data/spatial/<task>/<encoder>/<sample>/<gene>.js          measured and every run's predicted values of one gene
    data/spatial/<task>/<encoder>/spatial-<task>-<encoder>-<sample>.csv   the values shown, for download
                                                              (left out by ``--no-spatial-csv``)

(each ``<name>`` is `stbench.leaderboard.site.slug` of the untrusted name). A ``.js`` file is one call,
``stbenchSlice("<key>", {...});``, where ``key`` is its path under ``data/`` without ``.js``: pages opened
from disk cannot ``fetch()`` (Chromium blocks file:// requests), but they can add a ``<script>`` tag, and
the call hands the data to the page (``assets/slices.js``). The slices a page shows first are plain
``<script>`` tags in it, so what a page loads at open is exactly what its HTML names.

Values are quantised to 16 bits per (run, sample, gene): ``[lo, hi, "<base64>"]``, where the base64 string
holds little-endian uint16 codes and a value is ``lo + code * (hi - lo) / 65534``; code 65535 marks a spot
with no value, and ``null`` replaces an array with none. The error is at most (hi - lo) / 131068, below
the 0.0005 of the three decimals the CSV gives for any range under 65. Coordinates are float32, exact for
the integer pixel coordinates of HEST.

A rebuild reuses a folder of the previous site whose manifest carries the same key (`spatial_key`: the runs,
their prediction files' paths, sizes and modification times, the CSV columns and whether CSVs are written,
the subsample and this format's version): prediction files are never rewritten in place (a recomputed fold gets a new file), so
the same key means the same content, and a rebuild after one new run rewrites only the pages it touches.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from stbench.leaderboard.maps import SpatialMaps
    from stbench.stores import Store

__all__ = ["SLICE_FORMAT", "NO_VALUE", "pack_u16", "unpack_u16", "pack_f32", "slice_script", "spatial_key",
           "spatial_folder", "write_spatial", "reuse_spatial"]

SLICE_FORMAT = 1  # bump when the files' layout or encoding changes: old folders are then rebuilt
NO_VALUE = 65535
_LEVELS = 65534


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def pack_u16(values: np.ndarray) -> list | None:
    """``[lo, hi, base64 codes]`` of a float array (see the module doc), None when no value is finite."""
    return _pack_rows(np.asarray(values, dtype=np.float32)[None, :])[0]


def _pack_rows(a: np.ndarray) -> list[list | None]:
    """`pack_u16` of each row of a 2-D float32 array, vectorised."""
    a = np.asarray(a, dtype=np.float32)
    finite = np.isfinite(a)
    has = finite.any(axis=1)
    lo = np.where(has, np.where(finite, a, np.inf).min(axis=1), 0).astype(np.float32)
    hi = np.where(has, np.where(finite, a, -np.inf).max(axis=1), 0).astype(np.float32)
    lo64, span = lo.astype(np.float64)[:, None], (hi.astype(np.float64) - lo)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(span > 0, (a - lo64) / span * _LEVELS, 0.0)
    codes = np.where(finite, np.clip(np.rint(scaled), 0, _LEVELS), NO_VALUE).astype("<u2")
    return [[float(lo[i]), float(hi[i]), _b64(codes[i])] if has[i] else None for i in range(len(a))]


def unpack_u16(packed: list | None, n: int) -> np.ndarray:
    """The values `pack_u16` encodes (NaN for no value): what the page decodes, for tests."""
    if packed is None:
        return np.full(n, np.nan)
    lo, hi, text = packed
    codes = np.frombuffer(base64.b64decode(text), dtype="<u2")
    out = lo + codes.astype(np.float64) * (hi - lo) / _LEVELS
    out[codes == NO_VALUE] = np.nan
    return out


def pack_f32(values: np.ndarray) -> str:
    return _b64(np.asarray(values, dtype="<f4"))


def slice_script(key: str, payload: Any) -> str:
    """The file's text: one call handing ``payload`` to the page (JSON is valid JavaScript)."""
    return f"stbenchSlice({json.dumps(key)},{json.dumps(payload, separators=(',', ':'), allow_nan=False)});\n"


def spatial_folder(task_slug: str, encoder_slug: str) -> str:
    """The page's folder under ``data/``."""
    return f"spatial/{task_slug}/{encoder_slug}"


# -- the key of a folder ------------------------------------------------------------------------------------

def spatial_key(store: Store, runs: list[dict[str, Any]], columns: dict[str, str], *, max_spots: int,
                seed: int, csv: bool = True) -> str | None:
    """sha256 of what a page's folder is built from, or None when it cannot be told from file metadata alone
    (predictions kept in the catalog table by stbench < m004). Reads: ``fold_results.predictions_path``."""
    ids = [r["run_id"] for r in runs]
    if not ids:
        return None
    marks = ", ".join("?" * len(ids))
    rows = store.catalog.rows(f"SELECT run_id, fold, predictions_path FROM fold_results WHERE run_id IN ({marks}) "  # noqa: S608
                              "ORDER BY run_id, fold", ids)
    files: dict[str, list] = {rid: [] for rid in ids}
    for rid, fold, rel in rows:
        if rel is None:
            return None
        path = store.resolve(rel)
        try:
            st = path.stat()
        except OSError:
            return None
        files[rid].append([int(fold), str(rel), st.st_size, st.st_mtime_ns])
    spec = {"format": SLICE_FORMAT, "max_spots": max_spots, "seed": seed, "csv": csv,
            "runs": [[r["run_id"], columns.get(r["run_id"], ""), files[r["run_id"]]] for r in runs]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def reuse_spatial(previous: Path | None, out: Path, folder: str, key: str | None) -> dict[str, Any] | None:
    """Link the previous site's folder into the new one when its manifest has ``key``; returns the manifest
    (with ``files``: what was linked, relative to the site), or None when it has to be built."""
    if previous is None or key is None:
        return None
    manifest_path = previous / "data" / folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("key") != key or manifest.get("format") != SLICE_FORMAT:
        return None
    files = [*manifest.get("files", []), f"data/{folder}/manifest.json"]
    if not all(f.startswith(f"data/{folder}/") and ".." not in f and (previous / f).is_file() for f in files):
        return None
    for rel in files:
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(previous / rel, dest)
        except OSError:  # another file system, or links not allowed
            shutil.copy2(previous / rel, dest)
    manifest["files"] = files
    return manifest


# -- writing a folder ---------------------------------------------------------------------------------------

def write_spatial(write_text: Any, write_csv: Any, maps: SpatialMaps, *, folder: str, key: str | None,
                  sample_dirs: list[str], gene_files: list[str], csv_names: list[str] | None,
                  columns: dict[str, str]) -> dict[str, Any]:
    """Write one page's slices, CSVs (one per sample; none when ``csv_names`` is None) and manifest through the
    site writer's ``write_text(rel, text)`` and ``write_csv(rel, frame)``; returns the manifest."""
    import polars as pl

    files: list[str] = []

    def text(rel: str, content: str) -> None:
        write_text(f"data/{rel}", content)
        files.append(f"data/{rel}")

    samples_meta = []
    for i, s in enumerate(maps.samples):
        base = f"{folder}/{sample_dirs[i]}"
        text(f"{base}/spots.js", slice_script(f"{base}/spots", {"x": pack_f32(s.x), "y": pack_f32(s.y)}))
        stacked = np.concatenate([s.truth[None], s.pred]).reshape(-1, s.n_shown)  # (1 + runs) x genes rows
        packed = _pack_rows(stacked) if s.n_shown else [None] * len(stacked)
        n_genes = len(maps.genes)
        for g, gfile in enumerate(gene_files):
            payload = {"m": packed[g], "p": [packed[(1 + r) * n_genes + g] for r in range(len(maps.runs))]}
            text(f"{base}/{gfile}.js", slice_script(f"{base}/{gfile}", payload))
        csv = None
        if csv_names is not None:
            csv = f"data/{folder}/{csv_names[i]}"
            write_csv(csv, _sample_frame(pl, maps, s, columns))
            files.append(csv)
        samples_meta.append({"id": s.id, "dir": sample_dirs[i], "n_spots": s.n_spots, "n_shown": s.n_shown,
                             "csv": csv, "runs": [maps.has(r, i) for r in range(len(maps.runs))]})
    manifest = {"format": SLICE_FORMAT, "key": key, "task": maps.task, "encoder": maps.encoder, "genes": maps.genes,
                "gene_files": gene_files, "runs": [r["run_id"] for r in maps.runs], "samples": samples_meta,
                "max_spots": maps.max_spots, "files": files}
    write_text(f"data/{folder}/manifest.json", json.dumps(manifest, indent=0, ensure_ascii=False))
    manifest["files"] = [*files, f"data/{folder}/manifest.json"]
    return manifest


def _sample_frame(pl: Any, maps: SpatialMaps, s: Any, columns: dict[str, str]) -> Any:
    """One row per (gene, spot) of the sample, gene-major: ids, coordinates, measured and each run's values
    (rounded as shown: 3 decimals, coordinates 2)."""
    n, genes = s.n_shown, maps.genes

    def values(a: np.ndarray, digits: int) -> Any:
        return pl.Series(np.round(np.asarray(a, dtype=np.float64).ravel(), digits), nan_to_null=True)

    cols: dict[str, Any] = {
        "sample_id": pl.Series([s.id], dtype=pl.Utf8).extend_constant(s.id, n * len(genes) - 1) if n else pl.Series([], dtype=pl.Utf8),
        "barcode": pl.Series(s.barcodes * len(genes), dtype=pl.Utf8),
        "x": values(np.tile(s.x, len(genes)), 2), "y": values(np.tile(s.y, len(genes)), 2),
        "gene": pl.Series(np.repeat(np.asarray(genes, dtype=object), n).tolist(), dtype=pl.Utf8),
        "measured": values(s.truth, 3),
    }
    for r, run in enumerate(maps.runs):
        cols[columns[run["run_id"]]] = values(s.pred[r], 3)
    return pl.DataFrame(cols)
