"""Expression: log1p of raw counts and HEST's gene rule, checked against hand-computed values."""

import math

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from stbench import expression as ex
from stbench.errors import DataError


def _adata(counts, genes, prefix="s"):
    a = ad.AnnData(sp.csr_matrix(np.asarray(counts, dtype=np.float32)))
    a.obs_names = [f"{prefix}{i}" for i in range(a.n_obs)]
    a.var_names = list(genes)
    return a


def test_log1p_of_raw_counts_hand_computed_in_the_requested_gene_order():
    a = _adata([[0, 1, 3], [7, 0, 15]], ["A", "B", "C"])
    out = ex.log1p_dense(a, ["C", "A"])
    expected = [[math.log(4), 0.0], [math.log(16), math.log(8)]]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.dtype == np.float32


def _sample(rng, n_spots, rare_frac, prefix):
    """50 genes expressed in every spot, RARE in ``rare_frac`` of the spots with large counts."""
    dense = rng.poisson(rng.uniform(2, 30, size=50), size=(n_spots, 50)).astype(np.float32) + 1
    rare = np.zeros((n_spots, 1), np.float32)
    rare[: int(round(rare_frac * n_spots)), 0] = 200
    genes = [f"G{i:02d}" for i in range(50)] + ["RARE"]
    return _adata(np.hstack([dense, rare]), genes, prefix)


def test_gene_rule_drops_a_gene_expressed_in_5_percent_of_spots():
    rng = np.random.default_rng(0)
    a, b = _sample(rng, 100, 0.05, "a"), _sample(rng, 100, 0.05, "b")
    genes = ex.hest_gene_rule([a, b], n_top=50)
    assert "RARE" not in genes and sorted(genes) == [f"G{i:02d}" for i in range(50)]


def test_gene_rule_needs_10_percent_in_every_sample():
    rng = np.random.default_rng(1)
    # RARE in half the spots of one sample but 5% of the other: dropped, so only 50 genes pass
    a, b = _sample(rng, 100, 0.5, "a"), _sample(rng, 100, 0.05, "b")
    assert "RARE" not in ex.hest_gene_rule([a, b], n_top=50)
    with pytest.raises(DataError, match=r"only 50 genes pass HEST's filter \(in >= 10% of spots"):
        ex.hest_gene_rule([a, b], n_top=51)


def test_gene_rule_keeps_a_gene_expressed_in_exactly_10_percent_of_spots():
    rng = np.random.default_rng(2)
    a, b = _sample(rng, 100, 0.10, "a"), _sample(rng, 100, 0.10, "b")
    assert "RARE" in ex.hest_gene_rule([a, b], n_top=51)  # all 51 pass; exactly 10% counts as expressed


def test_gene_rule_drops_blank_and_control_probes():
    rng = np.random.default_rng(3)
    a = _sample(rng, 60, 1.0, "a")
    a.var_names = [f"G{i:02d}" for i in range(48)] + ["BLANK_0001", "NegControlProbe_1", "RARE"]
    genes = ex.hest_gene_rule([a], n_top=49)
    assert "BLANK_0001" not in genes and "NegControlProbe_1" not in genes and len(genes) == 49
