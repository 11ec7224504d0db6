"""A small synthetic task in the HEST layout, for trying stbench without downloading anything.

Nothing here is real tissue. Each spot gets five latent tissue variables drawn from smooth random fields
over the spot grid; its 224 x 224 patch is drawn from them (numpy only) and its gene counts are Poisson with
a log-rate linear in the same variables. Expression therefore really depends on what the patch shows, so an
image encoder's embeddings predict it above chance, while scores say nothing about real data.

Latents (each in [0, 1]):
- ``nuclei``: density of dark purple nuclei blobs;
- ``stroma``: share of the patch covered by pink fibres (stripes);
- ``eosin``: how saturated the pink background is;
- ``orientation``: the fibres' angle (genes see ``cos(2 * angle)``, as orientation is axial);
- ``lumen``: share of white gaps (fat, lumina).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import stbench
from stbench.data.layout import TaskWriter, leave_one_group_out

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["make_demo", "LATENTS", "CONTROL_GENES"]

LATENTS = ("nuclei", "stroma", "eosin", "orientation", "lumen")
# Probe names HEST's gene rule must drop (it excludes names containing BLANK or Control): made highly
# variable on purpose, so a list that holds them shows the filter did not run.
CONTROL_GENES = ("BLANK_0001", "BLANK_0002", "NegControlProbe_0001", "NegControlCodeword_0001")
PATCH = 224
PITCH_PX = 200  # spot centres 100 um apart at 0.5 um/px
_CHUNK = 64
_YY, _XX = np.mgrid[0:PATCH, 0:PATCH].astype(np.float32)

_WHITE = np.array([0.97, 0.96, 0.97], dtype=np.float32)
_PINK_LIGHT = np.array([0.96, 0.84, 0.90], dtype=np.float32)
_PINK_DEEP = np.array([0.86, 0.46, 0.66], dtype=np.float32)
_FIBRE = np.array([0.78, 0.32, 0.55], dtype=np.float32)
_NUCLEUS = np.array([0.30, 0.18, 0.48], dtype=np.float32)


def _grid(n_spots: int) -> np.ndarray:
    """Array coordinates (col, row) of ``n_spots`` spots on a near-square grid, row by row."""
    cols = int(np.ceil(np.sqrt(n_spots)))
    idx = np.arange(n_spots)
    return np.stack([idx % cols, idx // cols], axis=1)


def _latent_fields(rng: np.random.Generator, pos: np.ndarray) -> np.ndarray:
    """(n_spots, 5) latents in [0, 1]: sums of a few plane waves 4-12 spots long, plus a little spot noise."""
    out = np.empty((len(pos), len(LATENTS)))
    for k in range(len(LATENTS)):
        field = np.zeros(len(pos))
        for _ in range(3):
            angle, wavelength = rng.uniform(0, np.pi), rng.uniform(4, 12)
            freq = np.array([np.cos(angle), np.sin(angle)]) / wavelength
            field += rng.uniform(0.5, 1.0) * np.cos(2 * np.pi * pos @ freq + rng.uniform(0, 2 * np.pi))
        field += 0.25 * rng.standard_normal(len(pos))
        field = (field - field.mean()) / (field.std() + 1e-9)
        out[:, k] = 1 / (1 + np.exp(-1.5 * field))
    return out


def _smooth_noise(rng: np.random.Generator, cells: int) -> np.ndarray:
    """A (224, 224) smooth random field: a coarse Gaussian grid, bilinearly upsampled."""
    coarse = rng.standard_normal((cells + 1, cells + 1), dtype=np.float32)
    t = np.linspace(0, cells, PATCH, endpoint=False, dtype=np.float32)
    i = t.astype(int)
    f = t - i
    rows = coarse[i] * (1 - f)[:, None] + coarse[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _area_mask(field: np.ndarray, frac: float) -> np.ndarray:
    """Where ``field`` is in its top ``frac``: a blob covering about that share of the patch.

    The threshold comes from every 4th pixel: the field is smooth, and a full quantile costs more than
    the rest of the drawing.
    """
    if frac <= 0:
        return np.zeros(field.shape, dtype=bool)
    return field >= np.quantile(field[::4, ::4], 1 - frac)


def _stamps() -> list[np.ndarray]:
    """Boolean ellipse masks, radii 3-6 px on each axis: drawing a nucleus is then one masked assignment."""
    out = []
    for ry in (3, 4, 5, 6):
        for rx in (3, 4, 5, 6):
            y, x = np.mgrid[-ry : ry + 1, -rx : rx + 1]
            out.append((y / ry) ** 2 + (x / rx) ** 2 <= 1.0)
    return out


_STAMPS = _stamps()
# One fixed grain texture; each patch takes a random window of it (cheaper than fresh noise per patch).
_GRAIN = 0.03 * np.random.default_rng(20240601).standard_normal((1, 2 * PATCH, 2 * PATCH), dtype=np.float32)


def _render(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One (224, 224, 3) uint8 H&E-like patch for latents ``z`` (see the module docstring)."""
    nuclei, stroma, eosin, orientation, lumen = (float(v) for v in z)  # floats keep arrays float32
    # Channels first while drawing: numpy broadcasts slowly over a trailing axis of length 3.
    img = np.empty((3, PATCH, PATCH), dtype=np.float32)
    img[:] = (_PINK_LIGHT + (_PINK_DEEP - _PINK_LIGHT) * eosin)[:, None, None]
    # Stroma: oriented fibres (stripes ~9 px apart) over a blob-shaped region.
    angle = orientation * math.pi
    phase = (2 * math.pi / 9.0) * (_XX * math.cos(angle) + _YY * math.sin(angle)) + rng.uniform(0, 2 * math.pi)
    fibre = np.sin(phase)
    fibre = (fibre + 1) ** 2 * 0.2 * _area_mask(_smooth_noise(rng, 4), 0.85 * stroma)  # 0..0.8
    img += (_FIBRE[:, None, None] - img) * fibre
    # Nuclei: dark ellipses, 4-70 of them, none inside the gaps.
    gaps = _area_mask(_smooth_noise(rng, 3), 0.6 * lumen)
    n = int(round(4 + 66 * nuclei))
    ys, xs = rng.integers(0, PATCH, n).tolist(), rng.integers(0, PATCH, n).tolist()
    kinds, shades = rng.integers(0, len(_STAMPS), n).tolist(), rng.uniform(0.8, 1.2, n).tolist()
    for cy, cx, k, shade in zip(ys, xs, kinds, shades):
        if gaps[cy, cx]:
            continue
        stamp = _STAMPS[k]
        ry, rx = stamp.shape[0] // 2, stamp.shape[1] // 2
        y0, y1, x0, x1 = max(cy - ry, 0), min(cy + ry + 1, PATCH), max(cx - rx, 0), min(cx + rx + 1, PATCH)
        cut = stamp[y0 - cy + ry : y1 - cy + ry, x0 - cx + rx : x1 - cx + rx]
        img[:, y0:y1, x0:x1][:, cut] = (_NUCLEUS * shade)[:, None]
    img[:, gaps] = _WHITE[:, None]
    oy, ox = rng.integers(0, PATCH, 2).tolist()
    img += _GRAIN[:, oy : oy + PATCH, ox : ox + PATCH]
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)


def _patches(z: np.ndarray, seed: int, sample: int) -> Iterator[np.ndarray]:
    """Rendered patches in chunks; each spot has its own generator, so output does not depend on chunking."""
    for start in range(0, len(z), _CHUNK):
        stop = min(start + _CHUNK, len(z))
        yield np.stack([_render(z[i], np.random.default_rng([seed, sample, i])) for i in range(start, stop)])


def _gene_model(rng: np.random.Generator, n_genes: int) -> tuple[np.ndarray, np.ndarray]:
    """Baselines (n_genes,) and loadings (n_genes, 5): most genes follow one or two latents, some none."""
    base = rng.normal(np.log(6.0), 0.8, n_genes)
    base[rng.random(n_genes) < 0.1] = np.log(0.02)  # rarely detected: HEST's 10%-of-spots rule drops them
    weights = np.zeros((n_genes, len(LATENTS)))
    for g in range(n_genes):
        n_drivers = rng.choice([0, 1, 2], p=[0.2, 0.5, 0.3])
        drivers = rng.choice(len(LATENTS), size=n_drivers, replace=False)
        weights[g, drivers] = rng.normal(0, 0.9, n_drivers)
    return base, weights


def _counts(
    rng: np.random.Generator, z: np.ndarray, base: np.ndarray, weights: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """Poisson counts (n_spots, n_genes + controls): log-rate linear in the latents, plus spot noise."""
    feats = (z - 0.5) * 4  # latents in [-2, 2]
    feats[:, LATENTS.index("orientation")] = 2 * np.cos(2 * np.pi * z[:, LATENTS.index("orientation")])
    log_rate = base + shift + feats @ weights.T + rng.normal(0, 0.45, (len(z), len(base)))
    genes = rng.poisson(np.exp(log_rate))
    controls = rng.poisson(np.exp(np.log(4.0) + rng.normal(0, 1.5, (len(z), len(CONTROL_GENES)))))
    return np.concatenate([genes, controls], axis=1).astype(np.float32)


def _anndata(counts: np.ndarray, var_names: list[str], pos: np.ndarray, z: np.ndarray) -> AnnData:
    import anndata as ad
    import pandas as pd
    from scipy.sparse import csr_matrix

    centres = 300 + pos * PITCH_PX
    barcodes = [f"{x}x{y}" for x, y in pos]
    obs = pd.DataFrame(
        {"array_x": pos[:, 0], "array_y": pos[:, 1], "pixel_x": centres[:, 0].astype(float),
         "pixel_y": centres[:, 1].astype(float), **{f"latent_{k}": z[:, i] for i, k in enumerate(LATENTS)}},
        index=pd.Index(barcodes, dtype=str),
    )
    adata = ad.AnnData(X=csr_matrix(counts), obs=obs, var=pd.DataFrame(index=pd.Index(var_names, dtype=str)))
    adata.obsm["spatial"] = centres.astype(np.float64)
    return adata


def make_demo(
    root: Path,
    *,
    name: str = "DEMO",
    n_samples: int = 3,
    n_spots: int = 160,
    n_genes: int = 200,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic task ``<root>/<name>/`` in the HEST layout; returns the task folder.

    ``n_samples`` sections, each from its own patient (so ``n_samples`` leave-one-out folds), ``n_spots``
    spots each, ``n_genes`` genes named SYN0001... plus the four probes of `CONTROL_GENES`. The same
    ``seed`` gives the same arrays. task.json says ``"synthetic": true``. Reads: nothing. Writes:
    ``<root>/<name>/`` (atomically, via `TaskWriter`).
    """
    if n_samples < 2:
        raise ValueError("the demo needs at least 2 samples (one is held out per fold)")
    if n_spots < 16:
        raise ValueError("the demo needs at least 16 spots per sample")
    if n_genes < 64:
        raise ValueError("the demo needs at least 64 genes (50 are chosen after HEST's filter)")
    from stbench.expression import hest_gene_rule

    writer = TaskWriter(Path(root), name, overwrite=overwrite)  # fails fast if the task exists
    rng = np.random.default_rng(seed)
    base, weights = _gene_model(rng, n_genes)
    var_names = [f"SYN{g + 1:04d}" for g in range(n_genes)] + list(CONTROL_GENES)
    pos = _grid(n_spots)
    sample_ids = [f"S{i + 1}" for i in range(n_samples)]
    patients = {sid: f"P{i + 1}" for i, sid in enumerate(sample_ids)}
    adatas = []
    with writer:
        for i, sid in enumerate(sample_ids):
            z = _latent_fields(rng, pos)
            shift = rng.normal(0, 0.2, n_genes) + rng.normal(0, 0.3)  # per-sample batch and depth effect
            adata = _anndata(_counts(rng, z, base, weights, shift), var_names, pos, z)
            writer.add_sample(
                sid, patches=_patches(z, seed, i), n_patches=n_spots, barcodes=list(adata.obs_names),
                coords=(adata.obsm["spatial"] - PATCH // 2).astype(np.int64), counts=adata, patch_size=PATCH,
                attrs={"pixel_size": 0.5, "patch_size_target": PATCH, "synthetic": True},
            )
            adatas.append(adata)
        meta = {
            "synthetic": True,
            "source": "stbench synthetic demo (generated, not real tissue)",
            "importer": "stbench.data.demo",
            "split": "patient",
            "seed": seed,
            "n_samples": n_samples,
            "n_spots": n_spots,
            "n_genes": n_genes,
            "latents": list(LATENTS),
            "patients": patients,
            "gene_rule": "HEST: highly variable genes chosen on all samples (test included)",
            "stbench_version": stbench.__version__,
        }
        folds = leave_one_group_out(patients)
        return writer.commit(folds, hest_gene_rule(adatas), meta)
