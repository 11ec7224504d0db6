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

__all__ = ["AttentionalPooler", "ConchVisual"]


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
        self.attn_pool_contrast = AttentionalPooler(
            cfg["embed_dim"], vision["width"], n_head=vision["attn_pooler_heads"],
            n_queries=vision["n_queries_contrast"],
        )
        self.ln_contrast = nn.LayerNorm(cfg["embed_dim"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.trunk.forward_features(x)  # CONCH replaces trunk.forward with forward_features
        return self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])
