"""The BP-Booster module's mechanism, not only its shapes: what each attention reading does to gradients and
to the map z -> latent, the gates and losses as ablations, and the training loop's determinism."""

from __future__ import annotations

import pytest
import torch

from stbench.reducers.bpbooster.model import BoosterConfig, BPBoosterModule, train_booster


def _model(attention: str, *, programs: bool = False, seed: int = 0, **kw) -> BPBoosterModule:
    torch.manual_seed(seed)
    cfg = BoosterConfig(in_dim=24, latent_dim=16, n_genes=5, n_prototypes=6, heads=4, attention=attention,
                        program_dim=10 if programs else 0, **kw)
    profiles = torch.randn(6, 10) if programs else None
    return BPBoosterModule(cfg, profiles).double()


def _prototype_params(m: BPBoosterModule) -> list[torch.nn.Parameter]:
    return list(m.prototype_projector.parameters()) if m.prototype_projector is not None else [m.prototypes_raw]


def _grad_norm_of_prototypes(m: BPBoosterModule) -> float:
    z = torch.randn(32, 24, dtype=torch.float64)
    y = torch.randn(32, 5, dtype=torch.float64)
    rec, reg = m.losses(z, y)
    (rec + reg).backward()
    return float(sum(p.grad.abs().sum() for p in _prototype_params(m) if p.grad is not None))


def _affinity_gap(m: BPBoosterModule) -> float:
    """max |f(t a + (1-t) b) - (t f(a) + (1-t) f(b))| over random a, b and several t."""
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(16, 24, generator=gen, dtype=torch.float64) * 3
    b = torch.randn(16, 24, generator=gen, dtype=torch.float64) * 3
    worst = 0.0
    with torch.no_grad():
        for t in (0.1, 0.3, 0.5, 0.9, 1.7, -0.4):
            lhs = m(t * a + (1 - t) * b)[0]
            rhs = t * m(a)[0] + (1 - t) * m(b)[0]
            worst = max(worst, float((lhs - rhs).abs().max()))
    return worst


@pytest.mark.parametrize("programs", [False, True], ids=["random", "gene-program"])
def test_literal_reading_gives_prototypes_exactly_zero_gradient(programs):
    m = _model("literal", programs=programs)
    assert _grad_norm_of_prototypes(m) == 0.0
    # and the rest of the module does learn
    assert float(m.proj.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("programs", [False, True], ids=["random", "gene-program"])
def test_default_reading_trains_the_prototypes(programs):
    m = _model("patch-to-prototype", programs=programs)
    assert _grad_norm_of_prototypes(m) > 1e-6


def test_literal_latent_is_affine_in_the_input_and_default_is_not():
    literal = _affinity_gap(_model("literal"))
    default = _affinity_gap(_model("patch-to-prototype"))
    assert literal < 1e-10, literal
    assert default > 1e-3, default


def test_literal_stays_affine_after_training_and_prototypes_do_not_move():
    m = _model("literal").float()
    before = m.prototypes_raw.detach().clone()
    X, Y = torch.randn(200, 24), torch.randn(200, 5)
    train_booster(m, X, Y, epochs=3, batch_size=32, lr=1e-2)
    assert torch.equal(m.prototypes_raw.detach(), before)
    assert _affinity_gap(m.double()) < 1e-10


def test_default_attention_is_a_distribution_over_prototypes_that_depends_on_the_patch():
    m = _model("patch-to-prototype")
    with torch.no_grad():
        _, attn = m(torch.randn(10, 24, dtype=torch.float64) * 3)
    assert attn.shape == (10, 6)
    assert torch.allclose(attn.sum(dim=1), torch.ones(10, dtype=torch.float64))
    assert float(attn.std(dim=0).max()) > 1e-3  # differs between patches


def test_gates_off_means_no_gate_parameters_and_a_different_function():
    on = _model("patch-to-prototype", seed=1)
    off = _model("patch-to-prototype", seed=1, prototype_gate=False, dim_gate=False)
    assert on.gate_prototype is not None and on.gate_dim is not None
    assert off.gate_prototype is None and off.gate_dim is None
    assert not any("gate" in n for n, _ in off.named_parameters())
    # same weights elsewhere (same seed, gates created after the layers they follow): the gates only scale
    with torch.no_grad():
        z = torch.randn(4, 24, dtype=torch.float64)
        lat_on, _ = on(z)
        lat_off, _ = off(z)
    # gates start at sigmoid(0) = 0.5 on every prototype and dimension: the latent is scaled by 0.25 plus bias terms
    assert not torch.allclose(lat_on, lat_off)


def test_prototype_gate_weights_each_prototype():
    m = _model("patch-to-prototype")
    with torch.no_grad():
        m.gate_prototype.fill_(-50.0)  # every prototype closed: only the output bias remains
        lat, _ = m(torch.randn(5, 24, dtype=torch.float64))
    bias = m.w_o.bias * torch.sigmoid(m.gate_dim)
    assert torch.allclose(lat, bias.expand_as(lat), atol=1e-12)


def test_each_loss_switch_changes_what_is_trained():
    X, Y = torch.randn(128, 24), torch.randn(128, 5)
    heads = {}
    for name, kw in {"both": {}, "no_reg": {"reg_loss": False}, "no_recon": {"recon_loss": False}}.items():
        m = _model("patch-to-prototype", seed=2).float()
        head0, dec0 = m.head.weight.detach().clone(), m.decoder.weight.detach().clone()
        train_booster(m, X, Y, epochs=2, batch_size=32, lr=1e-2, **kw)
        heads[name] = (torch.equal(m.head.weight, head0), torch.equal(m.decoder.weight, dec0))
    assert heads["both"] == (False, False)
    assert heads["no_reg"] == (True, False)  # the regression head gets no gradient without its loss
    assert heads["no_recon"] == (False, True)
    with pytest.raises(ValueError, match="at least one"):
        train_booster(_model("literal").float(), X, Y, epochs=1, batch_size=32, lr=1e-3, recon_loss=False, reg_loss=False)


def test_training_reduces_the_loss_and_is_deterministic():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(300, 24, generator=gen)
    W = torch.randn(24, 5, generator=gen)
    Y = torch.tanh(X @ W)
    runs = []
    for _ in range(2):
        m = _model("patch-to-prototype", seed=5).float()
        hist = train_booster(m, X, Y, epochs=15, batch_size=32, lr=3e-3, seed=7)
        runs.append((hist, m.state_dict()))
    hist = runs[0][0]
    assert hist.reg[-1] < 0.7 * hist.reg[0] and hist.recon[-1] < hist.recon[0]
    assert hist.steps == 15 * 10
    assert runs[0][0].reg == runs[1][0].reg
    for k, v in runs[0][1].items():
        assert torch.equal(v, runs[1][1][k]), k


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="divisible"):
        BPBoosterModule(BoosterConfig(in_dim=8, latent_dim=10, n_genes=2, n_prototypes=3, heads=4))
    with pytest.raises(ValueError, match="attention"):
        BPBoosterModule(BoosterConfig(in_dim=8, latent_dim=8, n_genes=2, n_prototypes=3, heads=4, attention="bogus"))
    with pytest.raises(ValueError, match="profiles"):
        BPBoosterModule(BoosterConfig(in_dim=8, latent_dim=8, n_genes=2, n_prototypes=3, heads=4, program_dim=5))
