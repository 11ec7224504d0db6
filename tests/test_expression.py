"""Expression: count and gene-list readers, barcode and gene checks, log1p and HEST's gene rule."""

import math
import warnings

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
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


def test_log1p_of_dense_counts_in_memory_and_backed_hand_computed(tmp_path):
    a = ad.AnnData(np.array([[0, 3], [1, 7]], dtype=np.int32))
    a.var_names = ["A", "B"]
    a.write_h5ad(tmp_path / "dense.h5ad")
    backed = ad.read_h5ad(tmp_path / "dense.h5ad", backed="r")  # its .X slices are plain ndarrays
    try:
        for adata in (a, backed):
            out = ex.log1p_dense(adata, ["B", "A"])
            np.testing.assert_allclose(out, [[math.log(4), 0.0], [math.log(8), math.log(2)]], rtol=1e-6)
            assert out.dtype == np.float32
    finally:
        backed.file.close()


def test_read_counts_round_trips_an_h5ad(tmp_path):
    path = tmp_path / "s.h5ad"
    _adata([[1, 0], [0, 5]], ["A", "B"], prefix="bc").write_h5ad(path)
    a = ex.read_counts(path)
    assert list(a.obs_names) == ["bc0", "bc1"] and list(a.var_names) == ["A", "B"]
    np.testing.assert_array_equal(a.X.toarray(), [[1, 0], [0, 5]])


@pytest.mark.filterwarnings("ignore:(Observation|Variable) names are not unique")  # anndata, on purpose
def test_read_counts_makes_duplicate_gene_names_unique(tmp_path):
    path = tmp_path / "s.h5ad"
    _adata([[1, 2, 3]], ["GENE", "GENE", "B"]).write_h5ad(path)
    assert list(ex.read_counts(path).var_names) == ["GENE", "GENE-1", "B"]


@pytest.mark.filterwarnings("ignore:(Observation|Variable) names are not unique")  # anndata, on purpose
def test_read_counts_rejects_a_duplicate_barcode_naming_it(tmp_path):
    path = tmp_path / "s.h5ad"
    a = _adata([[1], [2], [3]], ["A"])
    a.obs_names = ["AAAC-1", "GGTT-1", "AAAC-1"]
    a.write_h5ad(path)
    with pytest.raises(DataError, match=r"s\.h5ad: duplicate barcode 'AAAC-1' in obs_names$") as err:
        ex.read_counts(path)
    assert err.value.path == path


def test_read_counts_of_a_missing_file_says_so(tmp_path):
    path = tmp_path / "absent.h5ad"
    with pytest.raises(DataError, match=r"absent\.h5ad: count file does not exist$") as err:
        ex.read_counts(path)
    assert err.value.path == path


def test_read_counts_of_a_corrupt_file_names_the_underlying_error(tmp_path):
    path = tmp_path / "broken.h5ad"
    path.write_bytes(b"not an HDF5 file" * 8)
    msg = r"broken\.h5ad: cannot read as h5ad, truncated or corrupt\? \("
    with pytest.raises(DataError, match=msg) as err:
        ex.read_counts(path)
    cause = err.value.__cause__
    assert f"({type(cause).__name__}: {cause})" in str(err.value)
    assert err.value.path == path


def test_counts_for_barcodes_returns_rows_in_patch_order():
    a = _adata([[1, 0], [2, 0], [3, 0]], ["A", "B"], prefix="bc")
    out = ex.counts_for_barcodes(a, ["bc2", "bc0"])  # row 0 included: index 0 is found, not missing
    assert list(out.obs_names) == ["bc2", "bc0"]
    np.testing.assert_array_equal(out.X.toarray(), [[3, 0], [1, 0]])
    assert not out.is_view


def test_counts_for_barcodes_names_the_first_missing_barcode(tmp_path):
    a = _adata([[1], [2]], ["A"], prefix="bc")
    path = tmp_path / "s.h5ad"
    msg = (r"s\.h5ad: 2 of 3 patch barcodes have no count row \(first: 'x1'\); "
           r"the h5ad obs_names must be the patch file's barcodes$")
    with pytest.raises(DataError, match=msg) as err:
        ex.counts_for_barcodes(a, ["x1", "bc0", "x2"], path=path)
    assert err.value.path == path


def test_check_genes_present_accepts_genes_that_are_all_there():
    assert ex.check_genes_present(_adata([[1, 2]], ["A", "B"]), ["B", "A"]) is None


def test_check_genes_present_names_the_missing_genes(tmp_path):
    path = tmp_path / "s.h5ad"
    with pytest.raises(DataError, match=r"s\.h5ad: 2 of 3 genes of the gene list are absent: X, Y$") as err:
        ex.check_genes_present(_adata([[1, 2]], ["A", "B"]), ["X", "A", "Y"], path=path)
    assert err.value.path == path


def test_check_genes_present_shows_at_most_8_missing_genes():
    a = _adata([[1]], ["A"])
    eight = [f"M{i}" for i in range(8)]
    shown = "M0, M1, M2, M3, M4, M5, M6, M7"
    with pytest.raises(DataError, match=rf"^8 of 9 genes of the gene list are absent: {shown}$"):
        ex.check_genes_present(a, ["A", *eight])
    with pytest.raises(DataError, match=rf"^9 of 9 genes of the gene list are absent: {shown} \.\.\.$"):
        ex.check_genes_present(a, [*eight, "M8"])


def test_read_gene_file_json_object_and_json_list(tmp_path):
    obj, lst = tmp_path / "genes.json", tmp_path / "list.json"
    obj.write_text('{"genes": ["TP53", "ERBB2"], "source": "HEST"}')
    lst.write_text('["ERBB2", 7157]')  # a numeric id comes back as text, like every gene name
    assert ex.read_gene_file(obj) == ["TP53", "ERBB2"]
    assert ex.read_gene_file(lst) == ["ERBB2", "7157"]


def test_read_gene_file_text_takes_the_first_column_and_skips_comments_and_blanks(tmp_path):
    path = tmp_path / "genes.csv"
    path.write_text("# HVGs of fold 0\nTP53, 0.9\n\n  \nERBB2,0.8,x\nGATA3\n")
    assert ex.read_gene_file(path) == ["TP53", "ERBB2", "GATA3"]


def test_read_gene_file_errors_name_the_file_and_the_problem(tmp_path):
    absent, empty, empty_json = tmp_path / "absent.txt", tmp_path / "empty.txt", tmp_path / "empty.json"
    empty.write_text("# nothing yet\n\n")
    empty_json.write_text('{"genes": []}')
    msg = r"absent\.txt: cannot read gene file \(No such file or directory\)$"
    with pytest.raises(DataError, match=msg) as err:
        ex.read_gene_file(absent)
    assert err.value.path == absent
    for path in (empty, empty_json):
        with pytest.raises(DataError, match=rf"{path.name}: gene file lists no genes$") as err:
            ex.read_gene_file(path)
        assert err.value.path == path


def test_gene_rule_needs_at_least_one_sample():
    with pytest.raises(ValueError, match=r"^hest_gene_rule needs at least one sample$"):
        ex.hest_gene_rule([])


def test_gene_rule_returns_hests_50_genes_by_default():
    a = _sample(np.random.default_rng(4), 60, 1.0, "a")  # 51 genes pass the filter
    assert len(ex.hest_gene_rule([a])) == 50


def test_gene_rule_keeps_only_genes_measured_in_every_sample():
    rng = np.random.default_rng(5)
    a, b, c = (_sample(rng, 40, 1.0, p) for p in "abc")
    a.var_names = [*a.var_names[:50], "A_AND_C"]  # expressed wherever measured, but b has no such column
    b.var_names = [*b.var_names[:50], "B_ONLY"]
    c.var_names = [*c.var_names[:50], "A_AND_C"]
    assert sorted(ex.hest_gene_rule([a, b, c], n_top=50)) == [f"G{i:02d}" for i in range(50)]


def test_gene_rule_counts_a_count_of_one_as_expressed():
    rng = np.random.default_rng(6)
    a = _sample(rng, 100, 0.0, "a")
    counts = a.X.toarray()
    counts[:50, 50] = 1  # RARE: a single read in half the spots
    a = _adata(counts, a.var_names)
    assert "RARE" in ex.hest_gene_rule([a], n_top=51)


def test_gene_rule_on_a_one_spot_sample_takes_its_spot_as_all_of_its_spots():
    rng = np.random.default_rng(7)
    big = _sample(rng, 60, 1.0, "big")
    one = _sample(rng, 1, 0.0, "one")  # every gene but RARE detected in its single spot
    genes = ex.hest_gene_rule([one, big], n_top=50, min_frac=1.0)
    assert sorted(genes) == [f"G{i:02d}" for i in range(50)]


def test_gene_rule_stacks_samples_that_share_barcodes_without_a_warning():
    rng = np.random.default_rng(8)
    # the same barcodes in both samples, as Visium's fixed barcode whitelist gives
    a, b = _sample(rng, 30, 1.0, "AAAC-"), _sample(rng, 30, 1.0, "AAAC-")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ex.hest_gene_rule([a, b], n_top=51)
    assert not [w for w in caught if "not unique" in str(w.message)]


def test_gene_rule_ranks_by_normalised_dispersion_ties_in_gene_order():
    rng = np.random.default_rng(9)
    counts = rng.negative_binomial(n=rng.uniform(0.5, 20, size=12), p=0.3, size=(80, 12)) + 1.0
    counts = np.hstack([counts, counts[:, :6]])  # genes 12..17 repeat genes 0..5: tied dispersions
    names = [f"G{i:02d}" for i in rng.permutation(18)]
    a = _adata(counts, names)
    genes = ex.hest_gene_rule([a], n_top=10)
    # the expected ranking from scanpy's own dispersions, sorted here (Python's sort keeps ties in order)
    ref = a.copy()
    sc.pp.log1p(ref)
    sc.pp.highly_variable_genes(ref, n_top_genes=10)
    hv = ref.var[ref.var["highly_variable"]]
    assert genes == sorted(hv.index, key=lambda g: -hv.loc[g, "dispersions_norm"])
    assert genes != sorted(genes, key=names.index)  # precondition: the ranking is not just the input order
    assert hv["dispersions_norm"].duplicated().sum() >= 3  # precondition: there are ties to keep in order


# -- unique_genes and check_counts (issue 15), hand-computed expectations --------------------------------------

def test_unique_genes_keeps_first_occurrences_in_order_and_says_which_repeat(caplog):
    with caplog.at_level("WARNING", logger="stbench"):
        out = ex.unique_genes(["B", "A", "B", "C", "A", "B"], "genes.txt")
    assert out == ["B", "A", "C"]
    [record] = caplog.records
    assert record.getMessage() == ("genes.txt: 2 gene names repeat and are kept once (first occurrence): B, A; "
                                   "3 unique genes")


def test_unique_genes_without_repeats_says_nothing_and_without_a_source_names_none(caplog):
    with caplog.at_level("WARNING", logger="stbench"):
        assert ex.unique_genes(["A", "B"]) == ["A", "B"]
        assert caplog.records == []
        assert ex.unique_genes(["A", "A"]) == ["A"]
    assert caplog.records[0].getMessage() == "1 gene names repeat and are kept once (first occurrence): A; 1 unique genes"


def test_unique_genes_shows_at_most_8_repeated_names():
    import logging

    genes = [f"G{i}" for i in range(10)] * 2
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("stbench").addHandler(handler)
    try:
        assert ex.unique_genes(genes) == [f"G{i}" for i in range(10)]
    finally:
        logging.getLogger("stbench").removeHandler(handler)
    assert ", ".join(f"G{i}" for i in range(8)) + " ...; 10 unique genes" in records[0].getMessage()
    assert "10 gene names repeat" in records[0].getMessage()


def test_read_gene_file_keeps_each_gene_once(tmp_path):
    path = tmp_path / "genes.txt"
    path.write_text("A\nB\nA\nC\n")
    assert ex.read_gene_file(path) == ["A", "B", "C"]


_OBS, _VAR = ["s0", "s1", "s2"], ["g0", "g1", "g2", "g3"]


def _with(value: float, row: int, col: int, dtype=np.float32) -> np.ndarray:
    x = np.arange(12, dtype=dtype).reshape(3, 4)
    x[row, col] = value
    return x


@pytest.mark.parametrize("value,shown", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf"), (-2.0, "-2")])
def test_check_counts_names_the_file_spot_and_gene_of_a_bad_value(tmp_path, value, shown):
    with pytest.raises(DataError) as err:
        ex.check_counts(_with(value, 1, 2), tmp_path / "c.h5ad", obs_names=_OBS, var_names=_VAR)
    assert str(err.value) == (f"{tmp_path / 'c.h5ad'}: counts must be finite and non-negative, 1 value is not "
                              f"({shown} at spot 's1', gene 'g2'); give raw counts")


def test_check_counts_counts_every_bad_value_and_names_the_first_in_row_order():
    x = _with(np.nan, 2, 0)
    x[0, 3] = -1
    x[1, 1] = np.inf
    with pytest.raises(DataError, match=r"^counts must be finite and non-negative, 3 values are not \(first: -1 "
                                        r"at spot 's0', gene 'g3'\); give raw counts$"):
        ex.check_counts(x, None, obs_names=_OBS, var_names=_VAR)


def test_check_counts_without_names_gives_row_and_column_and_names_what_it_checks():
    with pytest.raises(DataError, match=r"^x\.csv: expression must be finite and non-negative, 1 value is not "
                                        r"\(-5 at spot row 2, gene column 1\); give raw counts$"):
        ex.check_counts(_with(-5, 2, 1, dtype=np.int64), "x.csv", what="expression")


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_check_counts_locates_a_bad_value_in_a_sparse_matrix(fmt):
    x = sp.csr_matrix(_with(np.nan, 2, 1)).asformat(fmt)
    with pytest.raises(DataError, match=r"\(nan at spot 's2', gene 'g1'\)"):
        ex.check_counts(x, None, obs_names=_OBS, var_names=_VAR)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_check_counts_reads_an_h5ad_on_disk_in_blocks(tmp_path, monkeypatch, fmt):
    import h5py

    x = _with(-3, 2, 3)
    x[0, 1] = np.nan
    path = tmp_path / "c.h5ad"
    ad.AnnData(X=sp.csr_matrix(x).asformat(fmt), obs={"i": _OBS}, var={"j": _VAR}).write_h5ad(path)
    monkeypatch.setattr(ex, "_BLOCK", 2)  # several blocks: the offsets must add up across them
    with h5py.File(path) as f, pytest.raises(DataError) as err:
        ex.check_counts(f["X"], path, obs_names=_OBS, var_names=_VAR)
    assert "2 values are not (first: nan at spot 's0', gene 'g1')" in str(err.value)  # first in csr and csc order


def test_check_counts_dense_in_blocks_finds_a_value_in_a_later_block(tmp_path, monkeypatch):
    import h5py

    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["X"] = _with(np.nan, 2, 3)
    monkeypatch.setattr(ex, "_BLOCK", 4)  # one row per block
    with h5py.File(path) as f, pytest.raises(DataError, match=r"1 value is not \(nan at spot 's2', gene 'g3'\)"):
        ex.check_counts(f["X"], path, obs_names=_OBS, var_names=_VAR)


def test_check_counts_refuses_values_that_are_not_numbers():
    with pytest.raises(DataError, match=r"^f: counts are <U1 values, not numbers$"):
        ex.check_counts(np.array([["a", "b"]]), "f")


def test_check_counts_accepts_whole_numbers_and_booleans_silently(caplog):
    with caplog.at_level("WARNING", logger="stbench"):
        ex.check_counts(np.arange(12, dtype=np.float64).reshape(3, 4), None)
        ex.check_counts(np.arange(12, dtype=np.uint16).reshape(3, 4), None)
        ex.check_counts(np.ones((2, 2), dtype=bool), None)
        ex.check_counts(sp.csr_matrix((3, 4), dtype=np.float32), None)
    assert caplog.records == []


def test_check_counts_warns_once_about_fractions_naming_the_first(caplog):
    x = _with(0.5, 1, 0)
    x[2, 2] = 1.25
    with caplog.at_level("WARNING", logger="stbench"):
        ex.check_counts(x, "c.h5ad", obs_names=_OBS, var_names=_VAR)
        ex.check_counts(x, "c.h5ad", obs_names=_OBS, var_names=_VAR, warn=False)
    [record] = caplog.records
    assert record.getMessage() == ("c.h5ad: counts are not whole numbers (e.g. 0.5 at spot 's1', gene 'g0'); raw counts "
                                   "are expected, and log1p of normalised values is another expression measure")


def test_check_counts_refusal_wins_over_the_fraction_warning(caplog):
    x = _with(0.5, 0, 0)
    x[2, 3] = -1
    with caplog.at_level("WARNING", logger="stbench"), pytest.raises(DataError, match="-1 at spot 's2', gene 'g3'"):
        ex.check_counts(x, None, obs_names=_OBS, var_names=_VAR)
    assert caplog.records == []


def test_read_counts_refuses_negative_counts_naming_spot_and_gene(tmp_path):
    path = tmp_path / "c.h5ad"
    ad.AnnData(X=_with(-1, 0, 2), obs={"i": _OBS}, var={"j": _VAR}).write_h5ad(path)
    with pytest.raises(DataError, match=r"c\.h5ad: counts must be .*\(-1 at spot '0', gene '2'\)"):
        ex.read_counts(path)


def test_unique_genes_marks_more_only_beyond_8_repeats(caplog):
    with caplog.at_level("WARNING", logger="stbench"):
        ex.unique_genes([f"G{i}" for i in range(8)] * 2)
        ex.unique_genes([f"G{i}" for i in range(9)] * 2)
    exactly_8, nine = (r.getMessage() for r in caplog.records)
    assert exactly_8.endswith("G6, G7; 8 unique genes") and "..." not in exactly_8
    assert nine.endswith("G6, G7 ...; 9 unique genes")


def test_read_gene_file_names_the_file_when_genes_repeat(tmp_path, caplog):
    path = tmp_path / "g.txt"
    path.write_text("A\nA\n")
    with caplog.at_level("WARNING", logger="stbench"):
        ex.read_gene_file(path)
    assert caplog.records[0].getMessage().startswith(f"{path}: 1 gene names repeat")


def test_read_counts_takes_normalised_values_without_a_warning(tmp_path, caplog):
    path = tmp_path / "c.h5ad"  # read_counts serves every reader; the warning is the importer's and the run's
    ad.AnnData(X=np.full((3, 4), 0.5, dtype=np.float32), obs={"i": _OBS}, var={"j": _VAR}).write_h5ad(path)
    with caplog.at_level("WARNING", logger="stbench"):
        ex.read_counts(path)
    assert [r for r in caplog.records if "whole numbers" in r.getMessage()] == []


def test_check_counts_in_memory_csc_reports_the_first_bad_value_in_its_own_order():
    x = np.zeros((3, 4), dtype=np.float32)
    x[0, 3], x[2, 0] = -1, -2  # first in row order: (0, 3); first in column order: (2, 0)
    with pytest.raises(DataError, match=r"first: -2 at spot 's2', gene 'g0'"):
        ex.check_counts(sp.csc_matrix(x), None, obs_names=_OBS, var_names=_VAR)
    with pytest.raises(DataError, match=r"first: -1 at spot 's0', gene 'g3'"):
        ex.check_counts(sp.csr_matrix(x), None, obs_names=_OBS, var_names=_VAR)


def test_check_counts_dense_on_disk_reads_every_row_block_with_its_offset(tmp_path, monkeypatch):
    import h5py

    x = np.zeros((6, 4), dtype=np.float32)  # more rows than columns, more rows than a block holds
    x[5, 2] = np.nan
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["X"] = x
    monkeypatch.setattr(ex, "_BLOCK", 4)  # one row (4 values) per block
    with h5py.File(path) as f, pytest.raises(DataError, match=r"1 value is not \(nan at spot 'r5', gene 'g2'\)"):
        ex.check_counts(f["X"], path, obs_names=[f"r{i}" for i in range(6)], var_names=_VAR)


def test_check_counts_warning_without_a_path_has_no_prefix(caplog):
    with caplog.at_level("WARNING", logger="stbench"):
        ex.check_counts(np.array([[0.5]]), None, what="values")
    assert caplog.records[0].getMessage().startswith("values are not whole numbers (e.g. 0.5 at spot row 0, gene column 0)")
