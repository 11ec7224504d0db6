"""CONCH (Mahmood Lab): the image tower of a CoCa vision-language model, ViT-B/16 at 448 px.

The ``conch`` package is not on PyPI, so the image tower is written in `stbench.encoders._conch_vision`
after the public code of mahmoodlab/CONCH; the embedding is ``encode_image(x, proj_contrast=False,
normalize=False)`` (512-d). The hub checkpoint ``pytorch_model.bin`` holds the whole CoCa model: only its
``visual.*`` keys are used (text tower, text decoder and ``logit_scale`` dropped), minus the captioning
pooler and ``proj_contrast`` (not on this path); the rest must fit exactly.

Input: CONCH's transform resizes a PIL image to 448 (bicubic) and centre-crops 448; on our 224 px square
patches the crop is a no-op. ``resample="pil"`` does the same, PIL's bicubic on the uint8 patch (a torch
bicubic upsampling of floats, stbench's earlier path, was 0.32/255 per pixel away from it on average).

The architecture is CONCH's published ``conch_ViT-B-16`` model config; a ``config.json`` next to the
weights in that format (``embed_dim``, ``vision_cfg``) overrides it, if present.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stbench.encoders._base import EncoderSpec, register_encoder
from stbench.encoders.weights import ResolvedWeights, WeightsSource
from stbench.errors import WeightsError

if TYPE_CHECKING:
    import torch

__all__ = ["SPEC", "CONCH_CONFIG", "conch_config", "build_conch", "visual_state"]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

SPEC = EncoderSpec(
    name="conch",
    aliases=("conch-v1",),
    embed_dim=512,
    input_size=448,
    mean=OPENAI_MEAN,
    std=OPENAI_STD,
    interpolation="bicubic",
    resample="pil",
    precision="fp32",
    pooling="encode_image(proj_contrast=False, normalize=False): attentional pooler (1 query) over the trunk "
            "tokens, then ln_contrast",
    weights="hf.co/MahmoodLab/conch (pytorch_model.bin, gated)",
    license="CC-BY-NC-ND-4.0",
    paper="Lu et al. 2024, A visual-language foundation model for computational pathology (Nature Medicine)",
    code="stbench.encoders._conch_vision, written after mahmoodlab/CONCH (timm ViT + attentional pooler)",
    gated=True,
    source=WeightsSource(hub="MahmoodLab/conch", files=("pytorch_model.bin",),
                         page="https://huggingface.co/MahmoodLab/conch"),
)

# mahmoodlab/CONCH conch_ViT-B-16.json, vision part, with CoCaVisionCfg's defaults filled in.
CONCH_CONFIG: dict[str, Any] = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 448, "patch_size": 16, "layers": 12, "width": 768, "num_heads": 12,
                   "mlp_ratio": 4, "attn_pooler_heads": 8, "n_queries_contrast": 1},
}
# checkpoint keys under visual.* that encode_image(proj_contrast=False) never reads
_UNUSED = ("attn_pool_caption.", "ln_caption.", "proj_contrast")


def conch_config(config: dict[str, Any], base: dict[str, Any] = CONCH_CONFIG, name: str = "conch") -> dict[str, Any]:
    """CONCH's model config (``base``: CONCH v1's, or another CoCa tower's), with ``embed_dim`` and
    ``vision_cfg`` fields of ``config`` (or of its ``model_cfg``) over it; unrelated configs (no
    ``vision_cfg``) are ignored."""
    given = config.get("model_cfg", config) if isinstance(config.get("model_cfg"), dict) else config
    if not isinstance(given.get("vision_cfg"), dict):
        return {"embed_dim": base["embed_dim"], "vision_cfg": dict(base["vision_cfg"])}
    vision = {**base["vision_cfg"], **given["vision_cfg"]}
    for key in ("image_size", "patch_size"):
        if not isinstance(vision[key], int):
            raise WeightsError(f"{name}: vision_cfg.{key} must be one integer, found {vision[key]!r}")
    return {"embed_dim": int(given.get("embed_dim", base["embed_dim"])), "vision_cfg": vision}


def build_conch(config: dict[str, Any] | None = None) -> torch.nn.Module:
    """CONCH's image tower (weights not loaded)."""
    from stbench.encoders._conch_vision import ConchVisual

    return ConchVisual(conch_config(config or {}))


def visual_state(state: dict[str, Any], *, path: Any = "") -> dict[str, Any]:
    """The image tower's part of a CoCa checkpoint, keys relative to ``visual.``."""
    from stbench.encoders._statedict import strip_prefix, unwrap

    state = strip_prefix(unwrap(state, "state_dict"), "module.")  # as CONCH's own reader accepts
    visual = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    if not visual:
        raise WeightsError(f"conch: {path} has no visual.* keys, so it is not a CONCH (CoCa) checkpoint; "
                           "pass MahmoodLab/conch's pytorch_model.bin with --weights")
    return {k: v for k, v in visual.items() if not k.startswith(_UNUSED)}


@register_encoder(SPEC)
def load_conch(weights: ResolvedWeights) -> torch.nn.Module:
    from stbench.encoders._statedict import load_strict, read_checkpoint

    net = build_conch(weights.config)
    state = visual_state(read_checkpoint(weights.path, SPEC.name), path=weights.path)
    load_strict(net, state, name=SPEC.name, path=weights.path)
    return net


ENCODER = load_conch
