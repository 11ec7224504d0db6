"""The BP-Booster module and its training loop (torch). Spec: shared/specs/bp-booster.md.

    z (L1) --Proj--> x (L2) --prototype-guided cross-attention--> Z'_P --(* g_d)--> Z_latent (L2)
    Z_latent --D--> z_hat (L1)   reconstruction loss
    Z_latent --R--> HVGs         regression loss

Two readings of the cross-attention (the paper's text is inconsistent, see the spec's DECISION):

- ``patch-to-prototype`` (default): the patch is the query, the M prototypes are keys and values;
  alpha[n, m] = softmax over m, per head. Z_P[n, m] is prototype m's value scaled by its head-wise
  attention, then W_O; Z'_P[n] = sum_m g_p[m] Z_P[n, m]. The attention weighting alpha[n, m] of the
  gate equation is the head-wise scaling inside Z_P (applying it a second time would square it). As W_O is
  linear, the sum over m is taken before W_O: the same number, without an N x M x L2 tensor.
- ``literal``: prototypes are the queries, the patch's single vector the only key and value. The softmax
  over one key is exactly 1, so the prototypes get zero gradient and the latent is affine in z.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ATTENTIONS", "BoosterConfig", "BPBoosterModule", "train_booster", "TrainHistory"]

ATTENTIONS = ("patch-to-prototype", "literal")


@dataclass(frozen=True)
class BoosterConfig:
    """Everything needed to rebuild the module (saved with its state)."""

    in_dim: int
    latent_dim: int
    n_genes: int
    n_prototypes: int
    heads: int = 8
    attention: str = "patch-to-prototype"
    prototype_gate: bool = True
    dim_gate: bool = True
    program_dim: int = 0  # K_S: > 0 means gene-program prototypes P = Projector(profiles)

    def to_dict(self) -> dict:
        return asdict(self)


class BPBoosterModule(nn.Module):
    def __init__(self, cfg: BoosterConfig, program_profiles: torch.Tensor | None = None) -> None:
        super().__init__()
        if cfg.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, not {cfg.attention!r}")
        if cfg.latent_dim % cfg.heads:
            raise ValueError(f"latent_dim {cfg.latent_dim} is not divisible by heads {cfg.heads}")
        self.cfg = cfg
        L2, M = cfg.latent_dim, cfg.n_prototypes
        self.proj = nn.Linear(cfg.in_dim, L2)
        if cfg.program_dim:
            if program_profiles is None or tuple(program_profiles.shape) != (M, cfg.program_dim):
                raise ValueError(f"gene-program init needs profiles of shape ({M}, {cfg.program_dim})")
            # the profiles are data, fixed; the projector K_S -> L2 is what learns
            self.register_buffer("program_profiles", program_profiles.float().clone())
            self.prototype_projector = nn.Linear(cfg.program_dim, L2)
            self.prototypes_raw = None
        else:
            self.program_profiles = None
            self.prototype_projector = None
            self.prototypes_raw = nn.Parameter(torch.randn(M, L2))  # P ~ N(0, 1)
        self.w_q, self.w_k, self.w_v = nn.Linear(L2, L2), nn.Linear(L2, L2), nn.Linear(L2, L2)
        self.w_o = nn.Linear(L2, L2)
        # sigmoid(0) = 0.5: gates start half open, free to move either way
        self.gate_prototype = nn.Parameter(torch.zeros(M)) if cfg.prototype_gate else None
        self.gate_dim = nn.Parameter(torch.zeros(L2)) if cfg.dim_gate else None
        self.decoder = nn.Linear(L2, cfg.in_dim)
        self.head = nn.Linear(L2, cfg.n_genes)

    def prototypes(self) -> torch.Tensor:
        """P (M x L2)."""
        if self.prototype_projector is not None:
            return self.prototype_projector(self.program_profiles)
        return self.prototypes_raw

    def prototype_gates(self) -> torch.Tensor:
        M = self.cfg.n_prototypes
        if self.gate_prototype is None:
            return torch.ones(M, device=self.w_o.weight.device)
        return torch.sigmoid(self.gate_prototype)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(*t.shape[:-1], self.cfg.heads, self.cfg.latent_dim // self.cfg.heads)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (N, L1) -> (Z_latent (N, L2), attention (N, M) averaged over heads)."""
        x = self.proj(z)
        P = self.prototypes()
        g_p = self.prototype_gates()
        scale = 1.0 / math.sqrt(self.cfg.latent_dim // self.cfg.heads)
        if self.cfg.attention == "patch-to-prototype":
            q = self._heads(self.w_q(x))  # (N, h, d)
            k = self._heads(self.w_k(P))  # (M, h, d)
            v = self._heads(self.w_v(P))  # (M, h, d)
            attn = torch.softmax(torch.einsum("nhd,mhd->nhm", q, k) * scale, dim=-1)  # over prototypes
            u = torch.einsum("nhm,m,mhd->nhd", attn, g_p, v)
            per_patch = attn.mean(dim=1)
        else:  # literal: MultiHead(P, x, x), one key per patch
            q = self._heads(self.w_q(P))  # (M, h, d)
            k = self._heads(self.w_k(x))  # (N, h, d): the single key
            v = self._heads(self.w_v(x))  # (N, h, d): the single value
            scores = torch.einsum("mhd,nhd->nhm", q, k).unsqueeze(-1) * scale  # (N, h, M, 1 key)
            attn = torch.softmax(scores, dim=-1)  # softmax over one key: exactly 1
            u = torch.einsum("nhmk,m,nhd->nhd", attn, g_p, v)
            per_patch = attn.squeeze(-1).mean(dim=1)
        latent = self.w_o(u.reshape(u.shape[0], -1))
        if self.gate_dim is not None:
            latent = latent * torch.sigmoid(self.gate_dim)
        return latent, per_patch

    def losses(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent, _ = self(z)
        return F.mse_loss(self.decoder(latent), z), F.mse_loss(self.head(latent), y)


@dataclass
class TrainHistory:
    recon: list[float]
    reg: list[float]
    seconds: float
    steps: int


def train_booster(model: BPBoosterModule, X: torch.Tensor, Y: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
                  recon_loss: bool = True, reg_loss: bool = True, seed: int = 1,
                  on_epoch: Callable[[int], None] | None = None) -> TrainHistory:
    """Adam on the whole training fold held as one tensor on its device; batches are index slices of a
    per-epoch permutation (no per-sample DataLoader: that loop costs more than the model on small nets).

    X (N, L1) and Y (N, G) must already be on the model's device. Deterministic for a seed on CPU.
    """
    import time

    if not (recon_loss or reg_loss):
        raise ValueError("at least one of the reconstruction and regression losses must be on")
    gen = torch.Generator().manual_seed(seed)
    params = list(model.parameters())
    # fused Adam (one kernel for every parameter, CPU and CUDA): the same update, about 2 ms less per step of ~16 ms
    # on 2 CPU cores at 1536 -> 256 (benchmarks/RESULTS.md); anything else keeps torch's default implementation
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    opt = torch.optim.Adam(params, lr=lr, fused=True if fused else None)
    n = X.shape[0]
    hist = TrainHistory([], [], 0.0, 0)
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen).to(X.device)
        tot_rec = torch.zeros((), device=X.device)
        tot_reg = torch.zeros((), device=X.device)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            l_rec, l_reg = model.losses(X[idx], Y[idx])
            loss = (l_rec if recon_loss else 0.0) + (l_reg if reg_loss else 0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            # accumulate on the device: no host sync per step on a GPU
            tot_rec += l_rec.detach() * len(idx)
            tot_reg += l_reg.detach() * len(idx)
            hist.steps += 1
        hist.recon.append(float(tot_rec) / n)
        hist.reg.append(float(tot_reg) / n)
        if on_epoch is not None:
            on_epoch(epoch)
    model.eval()
    hist.seconds = time.perf_counter() - start
    return hist
