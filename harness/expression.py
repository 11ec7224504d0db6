"""Expression: counts for the spots of a patch file, log1p, and gene-list rules.

Expression travels as AnnData (obs = spots in patch-file order, var = genes, X = counts or log1p).
Gene selection is pure: AnnData objects in, a list of gene symbols out.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stbench.errors import DataError

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = [
    "read_counts",
    "counts_for_barcodes",
    "log1p_dense",
    "hest_gene_rule",
    "read_gene_file",
    "check_genes_present",
    "check_counts",
    "unique_genes",
]

log = logging.getLogger("stbench")

_EXCLUDED = re.compile(r"BLANK|Control")  # HEST matches these case-sensitively


def read_counts(path: Path) -> AnnData:
    """Read a sample's raw-count h5ad (the whole matrix). Reads: ``path``. Writes: nothing."""
    import anndata as ad

    try:
        adata = ad.read_h5ad(path)
    except FileNotFoundError as exc:
        raise DataError(path, "count file does not exist") from exc
    except Exception as exc:  # noqa: BLE001 - h5py/anndata raise many types for broken files
        raise DataError(path, f"cannot read as h5ad, truncated or corrupt? ({type(exc).__name__}: {exc})") from exc
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()][0]
        raise DataError(path, f"duplicate barcode {dup!r} in obs_names")
    if not adata.var_names.is_unique:
        adata.var_names_make_unique()
    check_counts(adata.X, path, obs_names=adata.obs_names, var_names=adata.var_names, warn=False)
    return adata


def counts_for_barcodes(adata: AnnData, barcodes: Sequence[str], *, path: Path | None = None) -> AnnData:
    """The rows of ``adata`` for ``barcodes``, in that order (patch-file order); missing ones raise."""
    index = adata.obs_names.get_indexer(list(barcodes))
    missing = [b for b, i in zip(barcodes, index) if i < 0]
    if missing:
        msg = (
            f"{len(missing)} of {len(barcodes)} patch barcodes have no count row "
            f"(first: {missing[0]!r}); the h5ad obs_names must be the patch file's barcodes"
        )
        raise DataError(path, msg)
    return adata[index].copy()


def log1p_dense(adata: AnnData, genes: Sequence[str]) -> np.ndarray:
    """``log1p`` of raw counts for ``genes`` (spots x genes, float32): HEST's expression, no normalisation."""
    sub = adata[:, list(genes)].X
    dense = sub.toarray() if hasattr(sub, "toarray") else np.asarray(sub)
    return np.log1p(dense.astype(np.float64)).astype(np.float32)


def check_genes_present(adata: AnnData, genes: Sequence[str], *, path: Path | None = None) -> None:
    """Raise naming the missing genes if any of ``genes`` is not a column of ``adata``."""
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise DataError(path, f"{len(missing)} of {len(genes)} genes of the gene list are absent: {shown}")


def hest_gene_rule(adatas: Sequence[AnnData], *, n_top: int = 50, min_frac: float = 0.1) -> list[str]:
    """HEST's gene list rule on the given samples (raw counts).

    Keep genes expressed (count > 0) in at least ``min_frac`` of the spots of every sample, drop names
    containing BLANK or Control, stack the spots, ``log1p``, then scanpy's ``highly_variable_genes``
    (default flavor 'seurat') with ``n_top_genes``. Returned in scanpy's ranking order (most dispersed first).
    HEST ran this on all samples of a task (test included); pass only training samples to avoid that leak.
    """
    import anndata as ad
    import scanpy as sc

    if not adatas:
        raise ValueError("hest_gene_rule needs at least one sample")
    common = set(adatas[0].var_names)
    for a in adatas[1:]:
        common &= set(a.var_names)
    keep = []
    for gene in adatas[0].var_names:  # keep the first sample's order: deterministic
        if gene not in common or _EXCLUDED.search(gene):
            continue
        keep.append(gene)
    for a in adatas:
        x = a[:, keep].X
        expressed = np.asarray((x > 0).sum(axis=0)).ravel() / max(a.n_obs, 1)
        keep = [g for g, ok in zip(keep, expressed >= min_frac) if ok]
    if len(keep) < n_top:
        raise DataError(None, f"only {len(keep)} genes pass HEST's filter (in >= {min_frac:.0%} of spots of every sample); need {n_top}")
    stacked = ad.concat([a[:, keep] for a in adatas], join="inner", index_unique="-")
    stacked.X = stacked.X.astype(np.float32)
    sc.pp.log1p(stacked)
    sc.pp.highly_variable_genes(stacked, n_top_genes=n_top)
    hv = stacked.var[stacked.var["highly_variable"]]
    return list(hv.sort_values("dispersions_norm", ascending=False, kind="stable").index)


def read_gene_file(path: Path) -> list[str]:
    """Genes from a JSON ``{"genes": [...]}``, a JSON list, or a text/CSV file (first column, one per line)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise DataError(path, f"cannot read gene file ({exc.strerror})") from exc
    if path.suffix == ".json":
        data = json.loads(text)
        genes = data["genes"] if isinstance(data, dict) else data
    else:
        genes = [line.split(",")[0].strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not genes:
        raise DataError(path, "gene file lists no genes")
    return unique_genes([str(g) for g in genes], path)


def unique_genes(genes: Sequence[str], source: str | Path | None = None) -> list[str]:
    """``genes`` without repeats, the first occurrence of each kept (saying so): a repeated gene would be
    scored twice and weigh double in a fold's mean. Every gene list stbench reads passes through here."""
    out = list(dict.fromkeys(genes))
    if len(out) != len(genes):
        seen: set[str] = set()
        dups = list(dict.fromkeys(g for g in genes if g in seen or seen.add(g)))  # type: ignore[func-returns-value]
        shown = ", ".join(dups[:8]) + (" ..." if len(dups) > 8 else "")
        log.warning("%s%d gene names repeat and are kept once (first occurrence): %s; %d unique genes",
                    f"{source}: " if source is not None else "", len(dups), shown, len(out))
    return out


_BLOCK = 1 << 22  # values per read when checking a count file: bounded memory whatever its size


def _sparse_parts(x) -> tuple[object, object, object, str] | None:  # noqa: ANN001
    """(data, indices, indptr, "csr"|"csc") of a sparse matrix in memory or an h5ad sparse group; None if dense."""
    import h5py

    if isinstance(x, h5py.Group):
        return x["data"], x["indices"], x["indptr"], "csc" if "csc" in str(x.attrs.get("encoding-type", "")) else "csr"
    if hasattr(x, "indptr"):
        return x.data, x.indices, x.indptr, x.format
    return None


def _value_blocks(x) -> Iterator[tuple[int, np.ndarray]]:  # noqa: ANN001
    """``(offset, values)`` over the stored values of a count matrix: a sparse matrix's ``data``, or dense rows;
    ``x`` in memory (numpy, scipy.sparse) or on disk (an h5ad's dense dataset or sparse group)."""
    sparse = _sparse_parts(x)
    if sparse is not None:
        data = sparse[0]
        for start in range(0, data.shape[0], _BLOCK):  # type: ignore[attr-defined]
            yield start, np.asarray(data[start : start + _BLOCK])  # type: ignore[index]
        return
    width = int(np.prod(x.shape[1:]))
    rows = max(1, _BLOCK // max(1, width))
    for start in range(0, x.shape[0], rows):
        yield start * width, np.asarray(x[start : start + rows]).reshape(-1)


def _locate(x, k: int) -> tuple[int, int]:  # noqa: ANN001
    """(row, column) of the ``k``-th stored value (in `_value_blocks` order)."""
    sparse = _sparse_parts(x)
    if sparse is None:
        width = int(np.prod(x.shape[1:]))
        return k // width, k % width
    _, indices, indptr, kind = sparse
    major = int(np.searchsorted(np.asarray(indptr[()]), k, side="right") - 1)  # type: ignore[index]
    minor = int(indices[k])  # type: ignore[index]
    return (minor, major) if kind == "csc" else (major, minor)


def check_counts(x, path: Path | None, *, obs_names: Sequence[str] | None = None,  # noqa: ANN001
                 var_names: Sequence[str] | None = None, warn: bool = True, what: str = "counts") -> None:
    """Refuse counts that are NaN, infinite or negative (a `DataError` naming ``path``, the first spot and gene);
    with ``warn``, log a warning when they are not whole numbers (raw counts are expected; normalised values
    change what log1p means). ``x``: a matrix in memory or an h5ad's ``X`` on disk, read in blocks."""
    if hasattr(x, "tocsr") and getattr(x, "format", None) not in ("csr", "csc"):  # coo, lil, ...
        x = x.tocsr()
    n_bad, first, fraction = 0, None, None  # first: (flat index, value) of the first bad value
    for offset, v in _value_blocks(x):
        if v.dtype.kind not in "fiub":
            raise DataError(path, f"{what} are {v.dtype} values, not numbers")
        if v.dtype.kind not in "fi":
            continue
        bad = ~(v >= 0) | np.isinf(v) if v.dtype.kind == "f" else v < 0  # NaN fails every comparison
        if bad.any():
            n_bad += int(bad.sum())
            if first is None:
                first = (offset + int(np.argmax(bad)), float(v[np.argmax(bad)]))
        elif warn and fraction is None and v.dtype.kind == "f" and (frac := v != np.floor(v)).any():
            fraction = (offset + int(np.argmax(frac)), float(v[np.argmax(frac)]))
    if first is not None:
        some = f"{n_bad} values are not (first: " if n_bad > 1 else "1 value is not ("
        raise DataError(path, f"{what} must be finite and non-negative, {some}{first[1]:g}"
                              f"{_where(x, first[0], obs_names, var_names)}); give raw counts")
    if fraction is not None:
        log.warning("%s%s are not whole numbers (e.g. %g%s); raw counts are expected, and log1p of normalised "
                    "values is another expression measure", f"{path}: " if path else "", what, fraction[1],
                    _where(x, fraction[0], obs_names, var_names))


def _where(x, k: int, obs_names: Sequence[str] | None, var_names: Sequence[str] | None) -> str:  # noqa: ANN001
    row, col = _locate(x, k)
    spot = repr(str(obs_names[row])) if obs_names is not None else f"row {row}"
    gene = repr(str(var_names[col])) if var_names is not None else f"column {col}"
    return f" at spot {spot}, gene {gene}"
