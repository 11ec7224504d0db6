"""CTransPath (Wang et al.): Swin-Tiny with a convolutional stem, trained by semantically-relevant
contrastive learning on TCGA and PAIP.

No hub serves the weights: the authors share ``ctranspath.pth`` (GPL-3.0) from their repository's README,
so the user points stbench at the file (``--weights PATH`` or the config). The file is
``{"model": state_dict}`` written with the authors' patched timm 0.5.4. Its layout differs from timm
1.0's ``SwinTransformer`` in two ways, both undone here before a strict load:

* 0.5.4 merges patches at the end of each stage (``layers.i.downsample``, i = 0..2), timm 1.0 at the
  start of the next one (``layers.i+1.downsample``); the merge itself (2x2 gather order, norm, linear) is
  the same, so only the stage index moves;
* ``attn_mask`` and ``relative_position_index`` were saved as buffers; timm 1.0 computes them (same values).

The embedding is timm's pooled output with no classifier: the mean over positions of the final
layer-normed stage-4 tokens (768), as the authors' ``model.head = nn.Identity()`` gives.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from stbench.encoders._base import EncoderSpec, register_encoder
from stbench.encoders.weights import ResolvedWeights, WeightsSource

if TYPE_CHECKING:
    import torch

__all__ = ["SPEC", "build_ctranspath", "old_swin_to_timm"]

REPO_URL = "https://github.com/Xiyue-Wang/TransPath"

SPEC = EncoderSpec(
    name="ctranspath",
    aliases=("ctrans",),
    embed_dim=768,
    input_size=224,
    precision="fp32",
    pooling="global average of the final normed Swin tokens (head = identity)",
    weights="ctranspath.pth from the TransPath authors (no hub repository)",
    license="GPL-3.0",
    paper="Wang et al. 2022, Transformer-based unsupervised contrastive learning for histopathological image "
          "classification (Medical Image Analysis)",
    random_init=True,
    code="timm swin_tiny_patch4_window7_224 with stbench's ConvStem patch embedding",
    source=WeightsSource(
        files=("ctranspath.pth",), config=False, page=REPO_URL,
        hint=f"download ctranspath.pth from the Google Drive link in the README of {REPO_URL}",
    ),
)

_OLD_DOWNSAMPLE = re.compile(r"layers\.(\d+)\.downsample\.(.+)")
_COMPUTED_BUFFERS = ("attn_mask", "relative_position_index")


def build_ctranspath(*, init: bool = False) -> torch.nn.Module:
    """Swin-T with the ConvStem and no classifier (weights not loaded; ``init``: timm's random init)."""
    import timm

    from stbench.encoders._convstem import ConvStem

    return timm.create_model(
        "swin_tiny_patch4_window7_224", pretrained=False, embed_layer=ConvStem, num_classes=0,
        weight_init="" if init else "skip",  # skipped: every tensor is then loaded
    )


def old_swin_to_timm(state: dict[str, Any]) -> dict[str, Any]:
    """A timm-0.5.4 Swin state dict in timm 1.0 keys (an already-converted one passes unchanged but for
    the computed buffers, which are dropped)."""
    old = "layers.0.downsample.reduction.weight" in state  # 1.0 has no downsample in stage 0
    out = {}
    for key, value in state.items():
        if key.rsplit(".", 1)[-1] in _COMPUTED_BUFFERS:
            continue
        m = _OLD_DOWNSAMPLE.fullmatch(key) if old else None
        out[f"layers.{int(m[1]) + 1}.downsample.{m[2]}" if m else key] = value
    return out


@register_encoder(SPEC)
def load_ctranspath(weights: ResolvedWeights) -> torch.nn.Module:
    from stbench.encoders._statedict import load_strict, read_checkpoint, strip_prefix, unwrap

    if weights.random_seed is not None:  # the random-weight control
        return build_ctranspath(init=True)
    net = build_ctranspath()
    state = strip_prefix(unwrap(read_checkpoint(weights.path, SPEC.name), "model"), "module.")
    load_strict(net, old_swin_to_timm(state), name=SPEC.name, path=weights.path)
    return net


ENCODER = load_ctranspath
