"""GPFM (Ma et al. 2024): a DINOv2 ViT-L/14 at 224 px distilled from several pathology foundation models.

The weights are one file, ``GPFM.pth``, in the original DINOv2 code's layout (its keys are timm's but for the
extras below); the embedding is the normed class token (DINOv2's ``x_norm_clstoken``), 1024-d. Facts, with
their source (issue 14):

* architecture: birkhoffkiki/GPFM ``models/dinov2/__init__.py`` build_model('GPFM'): DINOv2 ``vit_large`` with
  img_size 224, patch_size 14, init_values 1e-5, ffn_layer 'mlp', qkv_bias, block_chunks 4, the checkpoint's
  ``teacher`` entry with its ``backbone.`` keys -- timm ``vit_large_patch14_dinov2`` at ``img_size=224``,
  ``init_values=1e-5`` (TRIDENT GPFMInferenceEncoder; kaiko-ai/eva ``backbones/pathology/hkust.py``, which
  converts the GitHub release's ``teacher`` / ``backbone.`` / chunked-block layout the same way as below);
* weights: hub repo ``majiabo/GPFM``, file ``GPFM.pth`` (TRIDENT GPFMInferenceEncoder); the same name on the
  GitHub release (github.com/birkhoffkiki/GPFM/releases/download/ckpt/GPFM.pth, the GPFM README);
* transform: Resize((224, 224), bicubic) + ImageNet mean/std (GPFM ``build_transform``; TRIDENT: bicubic,
  ImageNet); precision fp32: the authors' code runs no autocast (TRIDENT uses fp16);
* licence: CC-BY-NC-ND-4.0 (birkhoffkiki/GPFM LICENSE).

A file that does not fit is a one-line error naming the keys.

Undone before the strict load, as timm's own DINOv2 conversion does and beyond it:

* wrappers: ``{"teacher": ...}`` / ``{"model": ...}`` / ``{"state_dict": ...}``, prefixes ``backbone.`` and
  ``module.``; heads outside ``backbone.`` (``dino_head``, ``ibot_head``) and ``mask_token`` are dropped;
* chunked blocks (``blocks.<chunk>.<i>.``, DINOv2's FSDP training layout) are flattened to ``blocks.<i>.``;
* SwiGLU names ``mlp.w12`` / ``mlp.w3`` become timm's ``mlp.fc1`` / ``mlp.fc2``;
* a position grid other than 16 x 16 is resampled to it (bicubic), with a warning: the reference resamples
  on every forward with its own formula, so embeddings then agree only approximately.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from stbench.encoders._base import EncoderSpec, register_encoder
from stbench.encoders.timm_models import TimmArch, build_embedder, embed_dim_of
from stbench.encoders.weights import ResolvedWeights, WeightsSource
from stbench.errors import WeightsError

if TYPE_CHECKING:
    import torch

__all__ = ["SPEC", "ARCH", "dinov2_original_to_timm"]

log = logging.getLogger("stbench")

ARCH = TimmArch("vit_large_patch14_dinov2", {"img_size": 224, "init_values": 1e-5, "num_classes": 0,
                                             "global_pool": "token"}, "cls")

SPEC = EncoderSpec(
    name="gpfm", aliases=("gpfm-l",), embed_dim=1024, precision="fp32", interpolation="bicubic",
    pooling="class token of forward_features (DINOv2 x_norm_clstoken)",
    weights="hf.co/majiabo/GPFM (GPFM.pth, DINOv2 layout)", license="CC-BY-NC-ND-4.0",
    paper="Ma et al. 2024, Towards a generalizable pathology foundation model via unified knowledge "
          "distillation (arXiv:2407.18449)",
    random_init=True, code="timm vit_large_patch14_dinov2; DINOv2 checkpoint keys renamed by stbench",
    # a config.json in timm's format is read when the repo (or a --weights folder) has one
    source=WeightsSource(hub="majiabo/GPFM", files=("GPFM.pth",), page="https://huggingface.co/majiabo/GPFM"),
)

_CHUNKED = re.compile(r"blocks\.\d+\.(\d+)\.(.+)")


def dinov2_original_to_timm(state: dict[str, Any], *, grid: int = 16) -> dict[str, Any]:
    """A DINOv2-code checkpoint (possibly wrapped, prefixed, chunked) in timm ``VisionTransformer`` keys."""
    from stbench.encoders._statedict import strip_prefix, unwrap

    state = strip_prefix(unwrap(state, "teacher", "model", "state_dict"), "module.")
    if any(k.startswith("backbone.") for k in state):  # a whole DINO teacher: keep the backbone only
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key == "mask_token":
            continue
        if m := _CHUNKED.fullmatch(key):
            key = f"blocks.{m[1]}.{m[2]}"
        out[key.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")] = value
    pos = out.get("pos_embed")
    if pos is not None and hasattr(pos, "shape") and pos.shape[1] != grid * grid + 1:
        from stbench.encoders.dinov2_hf import _positions

        log.warning("gpfm: the checkpoint's position grid (%d tokens) is not %dx%d; resampled once (bicubic)",
                    pos.shape[1] - 1, grid, grid)
        out["pos_embed"] = _positions(pos, grid)
    return out


@register_encoder(SPEC)
def load_gpfm(weights: ResolvedWeights) -> torch.nn.Module:
    import torch

    from stbench.encoders._statedict import load_strict, read_checkpoint

    if weights.random_seed is not None:
        return build_embedder(ARCH, None, where="the gpfm model card kwargs")
    where = f"the config.json beside {weights.path}" if weights.config else "the gpfm model card kwargs"
    with torch.device("meta"):  # a timm-format config.json (a re-export, the tests' reduced model) overrides kwargs
        model = build_embedder(ARCH, weights.config, where=where)
    if embed_dim_of(model.net, ARCH.pool) != SPEC.embed_dim:
        raise WeightsError(f"gpfm: {where} builds {embed_dim_of(model.net, ARCH.pool)}-d embeddings, not "
                           f"{SPEC.embed_dim}; these weights are for another model")
    grid = int(model.net.patch_embed.grid_size[0])
    state = dinov2_original_to_timm(read_checkpoint(weights.path, SPEC.name), grid=grid)
    load_strict(model.net, state, name=SPEC.name, path=weights.path, assign=True)
    return model.float()


ENCODER = load_gpfm
