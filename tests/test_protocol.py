"""The protocol object: HEST defaults, validation and fingerprints."""

import pytest

from stbench.errors import ProtocolError
from stbench.protocol import Protocol


def test_defaults_are_the_hest_protocol():
    p = Protocol.from_options()
    assert (p.genes, p.solver, p.alpha, p.intercept, p.seed, p.pcc) == ("task", "lsqr", "hest", False, 1, "pooled")
    assert p.alpha_for(256, 50) == pytest.approx(100 / (256 * 50))


def test_alpha_cv_implies_exact_and_refuses_lsqr():
    assert Protocol.from_options(alpha="cv").solver == "exact"
    assert Protocol.from_options(alpha="cv").alpha_for(10, 10) is None
    with pytest.raises(ProtocolError, match="--alpha cv needs --solver exact"):
        Protocol.from_options(alpha="cv", solver="lsqr")


@pytest.mark.parametrize("bad", ["abc", "-1"])
def test_bad_alpha_is_a_clear_error(bad):
    with pytest.raises(ProtocolError, match="--alpha"):
        Protocol.from_options(alpha=bad)


def test_fingerprint_is_stable_and_changes_with_every_setting():
    base = Protocol.from_options()
    assert base.fingerprint == Protocol.from_options().fingerprint
    variants = [
        Protocol.from_options(solver="exact"),
        Protocol.from_options(dtype="float64"),
        Protocol.from_options(alpha="cv"),
        Protocol.from_options(alpha=10),
        Protocol.from_options(intercept=True),
        Protocol.from_options(seed=2),
        Protocol.from_options(genes="train-hvg"),
        Protocol.from_options(genes="file", gene_list=("A", "B")),
    ]
    prints = {v.fingerprint for v in variants} | {base.fingerprint}
    assert len(prints) == len(variants) + 1
    assert "lsqr" in base.describe() and "100/(features*genes)" in base.describe()


def test_lsqr_fits_in_float32_by_default_and_the_dtype_is_in_the_fingerprint():
    """Issue 13: HEST's reference fits lsqr in the embeddings' float32; float64 is a separate protocol."""
    from stbench.protocol import PROTOCOL_VERSION

    base = Protocol.from_options()
    assert base.dtype == "float32" and base.to_dict()["dtype"] == "float32" and PROTOCOL_VERSION >= 2
    wide = Protocol.from_options(dtype="float64")
    assert wide.dtype == "float64" and wide.fingerprint != base.fingerprint
    assert "lsqr float32" in base.describe() and "lsqr float64" in wide.describe()
    exact = Protocol.from_options(solver="exact")
    assert exact.dtype == "float64" and Protocol.from_options(alpha="cv").dtype == "float64"
    with pytest.raises(ProtocolError, match="--ridge-dtype float32 applies to --solver lsqr"):
        Protocol.from_options(solver="exact", dtype="float32")
    with pytest.raises(ProtocolError, match="--ridge-dtype must be one of float32, float64"):
        Protocol.from_options(dtype="float16")


def test_cv_fits_an_intercept_unless_told_not_to_and_hest_does_not():
    assert Protocol.from_options(alpha="cv").intercept is True
    assert Protocol.from_options(alpha="cv", intercept=False).intercept is False
    assert Protocol.from_options().intercept is False and Protocol.from_options(alpha="0.5").intercept is False
    assert Protocol.from_options(intercept=True).intercept is True
    assert "lowest held-out MSE" in Protocol.from_options(alpha="cv").describe()
    assert Protocol.from_options(alpha="cv").fingerprint != Protocol.from_options(alpha="cv", intercept=False).fingerprint


@pytest.mark.parametrize("text,canonical,n", [("sweep", "sweep:1e-06:1e+08:29", 29), ("SWEEP:1e-3:1e5:17", "sweep:1e-03:1e+05:17", 17),
                                              ("sweep:0.0025:300:5", "sweep:0.0025:300.0:5", 5)])
def test_alpha_sweep_is_parsed_to_one_canonical_form(text, canonical, n):
    p = Protocol.from_options(alpha=text)
    assert p.alpha == canonical and p.is_sweep and len(p.sweep_alphas()) == n and p.solver == "exact"
    assert p.alpha_for(10, 50) is None and not p.intercept
    assert p.sweep_alphas()[0] == pytest.approx(float(canonical.split(":")[1]))
    assert p.sweep_alphas()[-1] == pytest.approx(float(canonical.split(":")[2]))


@pytest.mark.parametrize("bad,needle", [("sweep:1:1e3", "write sweep or sweep:LO:HI:N"), ("sweep:0:10:5", "0 < LO < HI"),
                                        ("sweep:10:1:5", "0 < LO < HI"), ("sweep:1:10:1", "2 <= N <= 200"),
                                        ("sweep:a:b:c", "write sweep or")])
def test_a_bad_alpha_sweep_is_refused_saying_how_to_write_one(bad, needle):
    with pytest.raises(ProtocolError, match=needle):
        Protocol.from_options(alpha=bad)
    with pytest.raises(ProtocolError, match="needs --solver exact"):
        Protocol.from_options(alpha="sweep", solver="lsqr")
