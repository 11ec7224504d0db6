"""CONCH's image tower, written for stbench after the structure of mahmoodlab/CONCH (``open_clip_custom``).

CONCH is a CoCa model: a timm ViT-B/16 trunk at 448 px whose tokens (after the trunk's final norm) feed
attentional poolers, each a set of learned queries doing cross-attention over the layer-normed tokens.
The image embedding of ``encode_image(x, proj_contrast=False, normalize=False)`` is the single contrastive
query's output after ``ln_contrast`` (512-d). Attribute names follow the checkpoint's ``visual.*`` keys,
so its weights load strictly; the captioning pooler (``attn_pool_caption``, ``ln_caption``) and the
contrastive projection ``proj_contrast`` are not on this path and are not built.

Imported only inside the loader: it needs torch and timm.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["AttentionalPooler", "BiasFreeAttentionalPooler", "ConchV15Visual", "ConchVisual"]


class AttentionalPooler(nn.Module):
    """``n_queries`` learned queries attending over the tokens (keys and values both the normed tokens)."""

    def __init__(self, d_model: int, context_dim: int, *, n_head: int = 8, n_queries: int = 1) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(n_queries, d_model))
        # kdim/vdim != d_model gives separate q/k/v projection weights, as in the checkpoint
        self.attn = nn.MultiheadAttention(d_model, n_head, kdim=context_dim, vdim=context_dim,
                                          batch_first=True)
        self.ln_q = nn.LayerNorm(d_model)
        self.ln_k = nn.LayerNorm(context_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, context_dim) -> (B, n_queries, d_model)."""
        kv = self.ln_k(tokens)
        q = self.ln_q(self.query).unsqueeze(0).expand(tokens.shape[0], -1, -1)
        return self.attn(q, kv, kv, need_weights=False)[0]


class ConchVisual(nn.Module):
    """``forward(x)`` = ``CoCa.encode_image(x, proj_contrast=False, normalize=False)``: (B, 512)."""

    pooler: type[nn.Module] = AttentionalPooler

    def __init__(self, cfg: dict[str, Any]) -> None:
        from timm.models.vision_transformer import VisionTransformer

        super().__init__()
        vision = cfg["vision_cfg"]
        # CONCH builds its trunk with timm defaults otherwise (LayerNorm eps 1e-6, qkv bias, class token)
        self.trunk = VisionTransformer(
            img_size=vision["image_size"], patch_size=vision["patch_size"], embed_dim=vision["width"],
            depth=vision["layers"], num_heads=vision["num_heads"], mlp_ratio=vision["mlp_ratio"],
            num_classes=0, dynamic_img_size=True, weight_init="skip",  # every tensor is then loaded
            init_values=vision.get("ls_init_value"),  # LayerScale: none in CONCH v1 (see conch_v15 for v1.5)
        )
        self.attn_pool_contrast = self.pooler(
            cfg["embed_dim"], vision["width"], n_head=vision["attn_pooler_heads"],
            n_queries=vision["n_queries_contrast"],
        )
        self.ln_contrast = nn.LayerNorm(cfg["embed_dim"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.trunk.forward_features(x)  # CONCH replaces trunk.forward with forward_features
        return self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])


class BiasFreeAttentionalPooler(nn.Module):
    """CONCH v1.5's pooler (the layout of mahmoodlab/TRIDENT ``model_zoo/conchv1_5/conchv1_5.py`` and TITAN's
    CONCH v1.5 tower, which load the published weights strictly): ``n_queries`` learned queries, layer-normed
    (``ln_q``), attend over the layer-normed tokens (``ln_k``) through bias-free linear maps ``to_q``,
    ``to_kv`` (keys in the first half of its output, values in the second) and ``to_out``, heads splitting the
    width as (head, channel), scale 1/sqrt(head width)."""

    def __init__(self, d_model: int, context_dim: int, *, n_head: int = 8, n_queries: int = 1) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = nn.Parameter(torch.zeros(n_queries, d_model))
        self.ln_q = nn.LayerNorm(d_model)
        self.ln_k = nn.LayerNorm(context_dim)
        self.to_q = nn.Linear(d_model, d_model, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * d_model, bias=False)
        self.to_out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, context_dim) -> (B, n_queries, d_model)."""
        b, n, _ = tokens.shape
        heads = self.n_head
        q = self.to_q(self.ln_q(self.query))  # (Q, D)
        k, v = self.to_kv(self.ln_k(tokens)).chunk(2, dim=-1)  # (B, N, D) each
        width = q.shape[-1] // heads
        q = q.reshape(1, -1, heads, width).transpose(1, 2).expand(b, -1, -1, -1)  # (B, H, Q, width)
        k = k.reshape(b, n, heads, width).transpose(1, 2)  # (B, H, N, width)
        v = v.reshape(b, n, heads, width).transpose(1, 2)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(width)) v
        return self.to_out(out.transpose(1, 2).reshape(b, -1, heads * width))


class ConchV15Visual(ConchVisual):
    """CONCH v1.5's image tower: the ViT-L trunk (with LayerScale), `BiasFreeAttentionalPooler`, ``ln_contrast``."""

    pooler = BiasFreeAttentionalPooler
