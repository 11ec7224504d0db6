"""Gene programs for BP-Booster: HVG targets, SVG selection, pathway matching and prototype profiles.

Everything here sees the training fold only (spec "Genes used"). The steps, from spec
"Prototype initialisation":

1. ``select_svgs``: top spatially variable genes by Moran's I per training sample (squidpy), kept if
   found in every sample, else the best mean rank (logged).
2. ``resolve_gene_sets`` + ``read_gmt``: pathway gene sets (MSigDB Hallmark by default, any GMT file).
3. ``match_pathways``: pathways sharing >= ``min_shared`` genes with the SVGs -> membership B (K_S x J).
4. ``program_profiles``: p_j = sum_n w_j[n] G[n] with w_j = softmax-like sigmoid weights of A = G B,
   on per-gene standardised G by default (DECISION in the spec: literal log1p saturates the sigmoid).

``select_hvgs`` gives the regression head's 200 targets. Pure numpy here (no torch); scanpy, squidpy
and anndata are imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import http.client
import logging
import os
import urllib.parse
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stbench.errors import DataError, FetchError, ProtocolError
from stbench.tempfiles import clean_stale, temp_path

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = [
    "HALLMARK_URL",
    "HALLMARK_URL_ENV",
    "read_gmt",
    "resolve_gene_sets",
    "hallmark_source",
    "select_hvgs",
    "SVGSelection",
    "select_svgs",
    "Programs",
    "match_pathways",
    "program_profiles",
    "mean_pairwise_correlation",
]

log = logging.getLogger("stbench")

HALLMARK_URL = (
    "https://data.broadinstitute.org/gsea-msigdb/msigdb/release/2024.1.Hs/h.all.v2024.1.Hs.symbols.gmt"
)
HALLMARK_URL_ENV = "STBENCH_HALLMARK_URL"
_OFFLINE_ENVS = ("STBENCH_OFFLINE", "HF_HUB_OFFLINE")
_LOCAL_HINT = "pass --gene-sets PATH to a local GMT file (e.g. MSigDB h.all.*.symbols.gmt)"
_TIMEOUT_S = 30  # a server silent this long fails the download instead of hanging the run
_SAMPLE_KEY = "sample_id"
_MIN_SPOTS = 3  # a gene seen in fewer spots carries no usable variance or spatial pattern
_TARGET_SUM = 1e4  # counts per spot after normalize_total, for both gene rules (the paper's scanpy default)


# ---------------------------------------------------------------------------------------------- gene sets


def read_gmt(path: str | Path) -> dict[str, list[str]]:
    """Gene sets of a GMT file (``name<TAB>description<TAB>gene...``), in file order.

    Genes are de-duplicated within a set (first occurrence kept); blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "gene-set file not found; pass --gene-sets PATH to an existing GMT file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read as UTF-8 text ({exc}); pass a GMT gene-set file") from exc
    sets: dict[str, list[str]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        genes = [g for g in fields[2:] if g]
        if len(fields) < 3 or not fields[0] or not genes:
            raise DataError(
                path,
                f"line {lineno} is not GMT (need name<TAB>description<TAB>gene...); fix the line or use "
                "another --gene-sets file",
            )
        if fields[0] in sets:
            raise DataError(path, f"line {lineno}: gene set {fields[0]!r} appears twice; keep one of them")
        sets[fields[0]] = list(dict.fromkeys(genes))
    if not sets:
        raise DataError(path, "no gene sets in the file; pass --gene-sets PATH to a non-empty GMT file")
    return sets


def _offline() -> bool:
    return any(os.environ.get(name) == "1" for name in _OFFLINE_ENVS)


def hallmark_source(cache_dir: Path | None = None) -> tuple[str, Path]:
    """Where MSigDB Hallmark is downloaded from (``$STBENCH_HALLMARK_URL`` or `HALLMARK_URL`) and the file it is
    cached in (``$STBENCH_HOME/genesets/<name>.gmt``); nothing is read or fetched."""
    url = os.environ.get(HALLMARK_URL_ENV) or HALLMARK_URL
    if cache_dir is None:
        from stbench import settings

        cache_dir = settings.home() / "genesets"
    name = Path(urllib.parse.urlparse(url).path).name
    return url, Path(cache_dir) / (name if name.endswith(".gmt") else "hallmark.gmt")


def resolve_gene_sets(spec: str, *, cache_dir: Path | None = None) -> Path:
    """The GMT file for ``spec``: ``"hallmark"`` (cached download of MSigDB Hallmark) or a local path.

    The download goes to a temporary file in ``cache_dir`` that replaces the cached name only once it
    parses as GMT, so a failed or partial download never leaves a file a later run would trust. The
    temporary name is a `stbench.tempfiles` one: what a killed download left is removed by the next.
    """
    if spec.strip().lower() != "hallmark":
        path = Path(spec).expanduser()
        if not path.is_file():
            raise DataError(path, f"gene-set file not found; {_LOCAL_HINT} or use --gene-sets hallmark")
        return path

    url, target = hallmark_source(cache_dir)
    if target.is_file():
        return target
    if _offline():
        raise FetchError(
            f"MSigDB Hallmark gene sets are not cached at {target} and downloads are off "
            f"({'/'.join(_OFFLINE_ENVS)}=1); {_LOCAL_HINT}"
        )

    failed = f"downloading the MSigDB Hallmark gene sets from {url} failed"
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "stbench"})
    except ValueError as exc:  # not a URL at all
        raise FetchError(f"{failed} ({exc}); {_LOCAL_HINT}") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target.parent)  # what a killed download left
    tmp = temp_path(target)
    try:
        try:
            with open(tmp, "wb") as out, urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
        except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError/timeouts are OSErrors
            raise FetchError(f"{failed} ({exc}); {_LOCAL_HINT}") from exc
        try:
            read_gmt(tmp)
        except DataError as exc:
            raise FetchError(
                f"the file downloaded from {url} is not a GMT file ({exc.problem}); {_LOCAL_HINT}"
            ) from exc
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("gene sets: downloaded %s to %s", url, target)
    return target


# ------------------------------------------------------------------------------------------ expression


def _check_unique(expression: AnnData) -> None:
    if not expression.var_names.is_unique:
        dup = expression.var_names[expression.var_names.duplicated()][0]
        raise DataError(
            None,
            f"duplicate gene name {dup!r} in the expression; make names unique (var_names_make_unique) first",
        )


def _n_spots_expressed(X: Any) -> np.ndarray:  # X: dense array or scipy sparse matrix
    """Per gene, the number of rows with a count > 0."""
    return np.asarray((X > 0).sum(axis=0)).ravel()


def _sample_ids(expression: AnnData) -> np.ndarray:
    """obs["sample_id"] as strings; one sample when the column is absent."""
    if _SAMPLE_KEY not in expression.obs:
        return np.full(expression.n_obs, "0", dtype=object)
    return expression.obs[_SAMPLE_KEY].astype(str).to_numpy()


def select_hvgs(expression: AnnData, n_top: int = 200) -> list[str]:
    """The ``n_top`` highly variable genes of the raw counts in ``expression`` (scanpy, flavor "seurat").

    Genes expressed in fewer than 3 spots are dropped first. With several samples (``obs["sample_id"]``),
    genes are ranked by the number of samples in which they are HVG, then by mean normalised dispersion, so
    genes found in all samples come first (the paper's rule). Returns min(n_top, genes left) names, in rank
    order.
    """
    import anndata as ad
    import pandas as pd
    import scanpy as sc

    if n_top < 1:
        raise ValueError(f"n_top must be >= 1, got {n_top}")
    _check_unique(expression)
    # A fresh AnnData of the counts alone: the caller's object is never modified, and stale annotations
    # (uns["log1p"], an old highly_variable column) cannot change what scanpy does.
    obs = pd.DataFrame({_SAMPLE_KEY: pd.Categorical(_sample_ids(expression))}, index=expression.obs_names)
    keep = _n_spots_expressed(expression.X) >= _MIN_SPOTS
    if not keep.any():
        raise DataError(
            None, f"no gene is expressed in >= {_MIN_SPOTS} training spots; check the expression data"
        )
    adata = ad.AnnData(
        expression.X[:, keep].astype(np.float64), obs=obs, var=pd.DataFrame(index=expression.var_names[keep])
    )
    n_batches = obs[_SAMPLE_KEY].nunique()
    sc.pp.normalize_total(adata, target_sum=_TARGET_SUM)
    sc.pp.log1p(adata)
    n_keep = min(n_top, adata.n_vars)
    with warnings.catch_warnings():
        # scanpy warns when a sample has fewer genes with a dispersion than n_top; the ranking handles it
        warnings.simplefilter("ignore", UserWarning)
        df = sc.pp.highly_variable_genes(
            adata,
            n_top_genes=n_keep,
            flavor="seurat",
            batch_key=_SAMPLE_KEY if n_batches > 1 else None,
            inplace=False,
        )
    df.index = adata.var_names
    # Our own stable ranking (pandas' default sort is not stable): samples where HVG, then dispersion.
    n_hvg = (df["highly_variable_nbatches"] if n_batches > 1 else df["highly_variable"]).to_numpy(float)
    disp = df["dispersions_norm"].to_numpy(float)
    disp = np.where(np.isnan(disp), -np.inf, disp)  # NaN last
    order = np.lexsort((np.arange(len(df)), -disp, -n_hvg))
    return [str(g) for g in df.index[order[:n_keep]]]


@dataclass(frozen=True)
class SVGSelection:
    """Spatially variable genes chosen on the training fold, with how they were chosen."""

    genes: list[str]
    rule: str  # "intersection" or "mean-rank"
    per_sample_top: dict[str, list[str]]
    n_intersection: int
    moran: dict[str, float]  # mean Moran's I of each selected gene over samples


def _moran_one_sample(logexpr: np.ndarray, coords: np.ndarray, genes: list[str], n_neighs: int) -> np.ndarray:
    """Moran's I of ``genes`` (columns of ``logexpr``) on one sample's kNN graph, in the order given."""
    import anndata as ad
    import squidpy as sq

    adata = ad.AnnData(logexpr)
    adata.var_names = genes
    adata.obsm["spatial"] = np.asarray(coords, dtype=np.float64)
    # squidpy's graph builder logs every call at INFO through spatialdata's logger (its own console handler)
    quiet = logging.getLogger("spatialdata._logging")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        if hasattr(sq.gr, "spatial_neighbors_knn"):  # squidpy >= 1.8; spatial_neighbors goes in 1.9
            sq.gr.spatial_neighbors_knn(adata, n_neighs=n_neighs)
        else:
            sq.gr.spatial_neighbors(adata, coord_type="generic", n_neighs=n_neighs)
    finally:
        quiet.setLevel(level)
    df = sq.gr.spatial_autocorr(
        adata, mode="moran", genes=genes, n_perms=None, n_jobs=1, show_progress_bar=False, copy=True
    )
    # squidpy returns the genes sorted by I with an unstable sort: put them back in our order.
    return df["I"].reindex(genes).to_numpy(dtype=np.float64)


def _ranks(scores: np.ndarray) -> np.ndarray:
    """0-based rank of each entry, highest score first, NaN last, ties by position (deterministic)."""
    key = np.where(np.isnan(scores), -np.inf, scores)
    order = np.lexsort((np.arange(len(scores)), -key))
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(len(scores))
    return ranks


def select_svgs(
    expression: AnnData,
    coords: np.ndarray,
    n_top: int = 200,
    *,
    min_intersection: int = 50,
    n_neighs: int = 6,
) -> SVGSelection:
    """Top ``n_top`` spatially variable genes by Moran's I on each training sample (``obs["sample_id"]``).

    ``expression`` holds raw counts and ``coords`` (N x 2) the spot positions, row for row. Per sample:
    normalise + log1p, kNN graph of ``n_neighs`` neighbours, Moran's I. Candidates are the genes expressed
    in >= 3 spots of every sample. Several samples: the intersection of the per-sample top lists if it
    holds >= ``min_intersection`` genes, else the ``n_top`` genes of best mean rank (logged as a warning).
    """
    if n_top < 1:
        raise ValueError(f"n_top must be >= 1, got {n_top}")
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[0] != expression.n_obs:
        raise ValueError(f"coords must be (n_spots={expression.n_obs}, 2), got {coords.shape}")
    _check_unique(expression)
    ids = _sample_ids(expression)
    samples = list(dict.fromkeys(ids))  # first-seen order: stable across calls
    rows = {s: np.flatnonzero(ids == s) for s in samples}
    for s, idx in rows.items():
        if len(idx) <= n_neighs:
            raise DataError(
                None, f"training sample {s!r} has {len(idx)} spots, too few for a {n_neighs}-neighbour graph"
            )

    X = expression.X
    keep = np.ones(expression.n_vars, dtype=bool)
    for idx in rows.values():
        keep &= _n_spots_expressed(X[idx]) >= _MIN_SPOTS
    cand = np.flatnonzero(keep)
    if len(cand) == 0:
        raise DataError(None, f"no gene is expressed in >= {_MIN_SPOTS} spots of every training sample")
    genes = [str(g) for g in expression.var_names[cand]]

    moran = np.empty((len(samples), len(cand)))
    for i, s in enumerate(samples):
        # normalize_total(target_sum=_TARGET_SUM) + log1p, with library sizes over all genes of the sample (as
        # scanpy would on the full matrix), computed on the candidate columns only to save memory.
        sample_counts = X[rows[s]]
        lib = np.asarray(sample_counts.sum(axis=1), dtype=np.float64).ravel()
        sub = sample_counts[:, cand]
        sub = sub.toarray() if hasattr(sub, "toarray") else np.asarray(sub)
        factor = _TARGET_SUM / np.where(lib > 0, lib, np.inf)  # an empty spot stays 0
        logexpr = np.log1p(sub.astype(np.float64) * factor[:, None])
        moran[i] = _moran_one_sample(logexpr, coords[rows[s]], genes, n_neighs)

    ranks = np.stack([_ranks(m) for m in moran])  # (samples, candidates)
    k = min(n_top, len(cand))
    per_sample_top = {
        s: [genes[j] for j in np.argsort(ranks[i], kind="stable")[:k]] for i, s in enumerate(samples)
    }
    mean_rank = ranks.mean(axis=0)
    by_mean = np.lexsort((np.arange(len(cand)), mean_rank))
    in_all = (ranks < k).all(axis=0)
    n_inter = int(in_all.sum())
    if len(samples) == 1 or n_inter >= min_intersection:
        chosen, rule = [j for j in by_mean if in_all[j]], "intersection"
    else:
        chosen, rule = list(by_mean[:k]), "mean-rank"
        log.warning(
            "SVG selection: the top-%d lists of the %d training samples share %d genes (< %d); "
            "using the %d genes of best mean rank instead",
            k, len(samples), n_inter, min_intersection, k,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column -> NaN, said as is
        mean_i = np.nanmean(moran, axis=0)
    return SVGSelection(
        genes=[genes[j] for j in chosen],
        rule=rule,
        per_sample_top=per_sample_top,
        n_intersection=n_inter,
        moran={genes[j]: float(mean_i[j]) for j in chosen},
    )


# ---------------------------------------------------------------------------------------------- programs


@dataclass(frozen=True)
class Programs:
    """Pathways kept as gene programs and their SVG membership."""

    names: list[str]
    membership: np.ndarray  # (K_S, J) float32 0/1, rows in SVG order, columns in ``names`` order
    overlap: dict[str, int]  # every pathway's count of shared SVGs, including rejected ones


def match_pathways(
    svgs: Sequence[str],
    gene_sets: dict[str, list[str]],
    *,
    min_shared: int = 10,
    min_programs: int = 1,
) -> Programs:
    """Pathways sharing >= ``min_shared`` genes with ``svgs`` (symbols compared case-insensitively).

    Raises ProtocolError with the counts when fewer than ``min_programs`` pathways qualify.
    """
    if min_shared < 1:
        raise ValueError(f"min_shared must be >= 1, got {min_shared}")
    svg_upper = [g.upper() for g in svgs]
    svg_set = set(svg_upper)
    uppers = {name: {g.upper() for g in genes} for name, genes in gene_sets.items()}
    overlap = {name: len(svg_set & genes) for name, genes in uppers.items()}
    names = [name for name, n in overlap.items() if n >= min_shared]
    if len(names) < min_programs:
        best = sorted(overlap.items(), key=lambda kv: -kv[1])  # stable: GMT order among ties
        shown = ", ".join(f"{n} {c}" for n, c in best[:5]) + (", ..." if len(best) > 5 else "")
        # Suggest the threshold at which min_programs pathways would qualify, when one exists.
        reach = best[min_programs - 1][1] if len(best) >= min_programs else 0
        lower = f"lower min_shared (--reducer-opt min_shared={reach}), " if reach >= 1 else ""
        raise ProtocolError(
            f"only {len(names)} of {len(gene_sets)} pathways share >= {min_shared} genes with the "
            f"{len(svgs)} SVGs, {min_programs} needed (best: {shown or 'none'}); "
            f"{lower}use another --gene-sets file, or use bpbooster-random"
        )
    membership = np.zeros((len(svg_upper), len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        membership[:, j] = [g in uppers[name] for g in svg_upper]
    return Programs(names=names, membership=membership, overlap=overlap)


def program_profiles(G_svg: np.ndarray, membership: np.ndarray, *, standardize: bool = True) -> np.ndarray:
    """Initial prototype profiles (J, K_S): p_j = sum_n w_j[n] G[n], w_j = sigmoid(A[:, j]) / sum, A = G B.

    ``standardize`` (the spec's DECISION) first z-scores each gene over the N training spots (a constant
    gene -> 0), so A is centred and the sigmoid tells spots where a program is high from spots where it is
    low; the literal version on log1p values saturates the sigmoid and gives near-uniform weights.
    """
    from scipy.special import expit

    G = np.asarray(G_svg, dtype=np.float64)
    B = np.asarray(membership, dtype=np.float64)
    if G.ndim != 2 or B.ndim != 2 or G.shape[1] != B.shape[0]:
        raise ValueError(f"G_svg (N, K_S) and membership (K_S, J) do not match: {G.shape} and {B.shape}")
    if standardize:
        # Constant genes by their range: the std of a constant float64 column can come out ~1e-17, not 0
        # (its mean is not exact), which would scale rounding noise up to +-1.
        varies = np.ptp(G, axis=0) > 0
        G = np.where(varies, (G - G.mean(axis=0)) / np.where(varies, G.std(axis=0), 1.0), 0.0)
    S = expit(G @ B)  # (N, J), stable for large |A|
    W = S / S.sum(axis=0, keepdims=True)
    return (W.T @ G).astype(np.float32)


def mean_pairwise_correlation(P: np.ndarray) -> float:
    """Mean Pearson correlation over the pairs of rows of P (J x K); NaN if J < 2.

    Pairs involving a constant row have no correlation and are left out (NaN if no pair remains).
    """
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2 or P.shape[0] < 2:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        C = np.corrcoef(P)
    upper = C[np.triu_indices(P.shape[0], k=1)]
    upper = upper[np.isfinite(upper)]
    return float(upper.mean()) if upper.size else float("nan")
