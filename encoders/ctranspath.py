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

``ctranspath-chief`` is the same network with CHIEF's weights (Wang et al. 2024, ``CHIEF_CTransPath.pth``),
which TRIDENT downloads by default as "ctranspath" (from the hest-bench dataset, ``fm_v1/ctranspath``). The two
files have the same keys and different values, so nothing in a file tells them apart but its bytes: each
encoder's embeddings are keyed by the file's sha256, and a published file given to the other name (the
sha256 STAMP checks for each, ``known_sha256``) is warned about.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from stbench.encoders._base import EncoderSpec, register_encoder
from stbench.encoders.weights import ResolvedWeights, WeightsSource

if TYPE_CHECKING:
    import torch

__all__ = ["SPEC", "CHIEF_SPEC", "build_ctranspath", "old_swin_to_timm"]

REPO_URL = "https://github.com/Xiyue-Wang/TransPath"
CHIEF_URL = "https://github.com/hms-dbmi/CHIEF"
HEST_BENCH_CTRANSPATH = "https://huggingface.co/datasets/MahmoodLab/hest-bench/tree/main/fm_v1/ctranspath"

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
    known_sha256=("7c998680060c8743551a412583fac689db43cec07053b72dfec6dcd810113539",),  # the authors' file
)

CHIEF_SPEC = replace(
    SPEC,
    name="ctranspath-chief",
    aliases=("chief-ctranspath",),
    weights="CHIEF_CTransPath.pth from the CHIEF authors (TRIDENT's default 'ctranspath'; no model hub repository)",
    license="GPL-3.0, non-commercial academic use (CHIEF README)",
    paper="Wang et al. 2024, A pathology foundation model for cancer diagnosis and prognosis prediction (Nature); "
          "CHIEF's tile encoder, CTransPath's architecture",
    random_init=False,  # the architecture is ctranspath's: its random-weight control is --encoder ctranspath
    source=WeightsSource(
        files=("CHIEF_CTransPath.pth",), config=False, page=CHIEF_URL,
        hint=f"download CHIEF_CTransPath.pth from the README of {CHIEF_URL} or from {HEST_BENCH_CTRANSPATH} (gated)",
    ),
    known_sha256=("1646f23001214f74cf432ef0e80b808ee6605143802ae6ed53a87564ddc4924a",),  # CHIEF's Google Drive file
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


def _loader(spec: EncoderSpec):  # noqa: ANN202
    def load(weights: ResolvedWeights) -> torch.nn.Module:
        from stbench.encoders._statedict import load_strict, read_checkpoint, strip_prefix, unwrap

        if weights.random_seed is not None:  # the random-weight control
            return build_ctranspath(init=True)
        net = build_ctranspath()
        state = strip_prefix(unwrap(read_checkpoint(weights.path, spec.name), "model"), "module.")
        load_strict(net, old_swin_to_timm(state), name=spec.name, path=weights.path)
        return net

    load.__qualname__ = f"load_{spec.name.replace('-', '_')}"
    return load


load_ctranspath = register_encoder(SPEC)(_loader(SPEC))
load_ctranspath_chief = register_encoder(CHIEF_SPEC)(_loader(CHIEF_SPEC))

ENCODER = load_ctranspath
