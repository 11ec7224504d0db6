"""Expression: counts for the spots of a patch file, log1p, and gene-list rules.

Expression travels as AnnData (obs = spots in patch-file order, var = genes, X = counts or log1p).
Gene selection is pure: AnnData objects in, a list of gene symbols out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
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
]

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
    return [str(g) for g in genes]
