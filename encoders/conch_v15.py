"""CONCH v1.5 (Mahmood Lab): the patch encoder of TITAN, a CoCa-style image tower with a ViT-L/16 trunk at 448 px.

A timm ViT trunk whose normed tokens feed one attentional-pooler query (``attn_pool_contrast``), then
``ln_contrast``; the 768-d output is what TITAN's ``return_conch()`` model and TRIDENT's ``conch_v15`` encoder give
for a patch. Facts and their source (issue 14): mahmoodlab/TRIDENT ``trident/patch_encoder_models/load.py``
(Conchv15InferenceEncoder) and ``model_zoo/conchv1_5/conchv1_5.py`` (its CONCHVisionTower, which loads the
published ``pytorch_model_vision.bin`` strictly), TITAN's ``ConchConfig`` defaults (patch_size 16, context_dim
1024, embed_dim 768, depth 24, num_heads 16, mlp_ratio 4, qkv_bias, init_values 1e-6, one contrastive query) as
the TITAN repository's configuration_titan.py and conch_v1_5.py appear in third-party copies (e.g.
lingxitong/MIL_BASELINE ``build_conch_v1_5.py``), and mahmoodlab/CLAM ``models/builder.py`` / ``utils/constants.py``:

* trunk: ViT-L/16 (1024 wide, 24 blocks, 16 heads, mlp_ratio 4, qkv bias, LayerNorm eps 1e-6) with LayerScale
  (init_values 1e-6 in TITAN's config, 1.0 in TRIDENT's: the published file holds ``ls1.gamma`` / ``ls2.gamma``,
  which are loaded); its final norm feeds the pooler (``forward_features``);
* position embeddings: the references build the trunk at timm's default 224 px, so the file holds a 14 x 14 grid
  (197 tokens), and resample it on every forward at 448 px with DINO's ``interpolate_pos_encoding`` (bicubic,
  ``align_corners=False``, scale factor (28 + 0.1) / 14). That exact resampling is done here once, at load time,
  into a trunk built at 448 px; a file that already holds a 28 x 28 grid is taken as it is;
* pooler: 768 wide over 1024-wide tokens, 8 heads, one query, bias-free ``to_q`` / ``to_kv`` / ``to_out`` with
  ``ln_q`` and ``ln_k`` (`stbench.encoders._conch_vision.BiasFreeAttentionalPooler`) -- not CONCH v1's
  ``nn.MultiheadAttention`` layout; then ``ln_contrast`` (LayerNorm 768);
* weights: hf.co/MahmoodLab/conchv1_5, file ``pytorch_model_vision.bin`` (with ``config.json`` and ``meta.yaml``),
  the tower's keys bare (``trunk.``, ``attn_pool_contrast.``, ``ln_contrast.``); gated (TRIDENT's message asks for
  granted access; the TITAN README: "Request access to the model weights (CONCHv1.5 ...)");
* transform: Resize(448, bilinear) + CenterCrop(448), ImageNet mean/std (TRIDENT create_model_from_pretrained;
  CLAM: Resize(448) with torchvision's default bilinear, ImageNet constants, "TITAN is used with 448x448 CONCH
  v1.5 features"); precision fp16 (TRIDENT Conchv15InferenceEncoder).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stbench.encoders._base import EncoderSpec, register_encoder
from stbench.encoders.weights import ResolvedWeights, WeightsSource
from stbench.errors import WeightsError

if TYPE_CHECKING:
    import torch

__all__ = ["CONCH_V15_CONFIG", "SPEC", "build_conch_v15", "dino_positions", "tower_state"]

CONCH_V15_CONFIG: dict[str, Any] = {
    "embed_dim": 768,
    "vision_cfg": {"image_size": 448, "patch_size": 16, "layers": 24, "width": 1024, "num_heads": 16,
                   "mlp_ratio": 4, "attn_pooler_heads": 8, "n_queries_contrast": 1, "ls_init_value": 1e-6},
}
_UNUSED = ("attn_pool_caption.", "ln_caption.", "proj_contrast", "head.")

SPEC = EncoderSpec(
    name="conch-v1.5", aliases=("conchv1_5", "conch-v15", "conch15"), embed_dim=768, input_size=448,
    interpolation="bilinear", resample="pil", precision="fp16",
    pooling="attentional pooler (1 query) over the ViT-L trunk's tokens, then ln_contrast (TITAN's CONCH v1.5)",
    weights="hf.co/MahmoodLab/conchv1_5 (gated)", license="CC-BY-NC-ND-4.0",
    paper="Ding et al. 2024, Multimodal whole slide foundation model for pathology (TITAN; arXiv:2411.19666)",
    code="stbench.encoders._conch_vision (timm ViT + bias-free attentional pooler)", gated=True, random_init=True,
    source=WeightsSource(hub="MahmoodLab/conchv1_5", files=("pytorch_model_vision.bin", "pytorch_model.bin"),
                         page="https://huggingface.co/MahmoodLab/conchv1_5"),
)


def build_conch_v15(config: dict[str, Any] | None = None) -> torch.nn.Module:
    """CONCH v1.5's image tower (weights not loaded)."""
    from stbench.encoders._conch_vision import ConchV15Visual
    from stbench.encoders.conch import conch_config

    return ConchV15Visual(conch_config(config or {}, CONCH_V15_CONFIG, SPEC.name))


def tower_state(state: dict[str, Any], *, path: Any = "") -> dict[str, Any]:
    """The image tower's tensors: bare keys, or the ``visual.*`` part of a whole CoCa checkpoint."""
    from stbench.encoders._statedict import strip_prefix, unwrap

    state = strip_prefix(unwrap(state, "state_dict", "model"), "module.")
    if any(k.startswith("visual.") for k in state):
        state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    if not any(k.startswith("trunk.") for k in state):
        raise WeightsError(f"{SPEC.name}: {path} has no trunk.* keys, so it is not a CONCH v1.5 image tower; "
                           "pass MahmoodLab/conchv1_5's pytorch_model_vision.bin with --weights")
    return {k: v for k, v in state.items() if not k.startswith(_UNUSED)}


def dino_positions(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + n*n, D) class + patch positions with the patch part resampled to ``grid`` x ``grid`` as DINO's
    ``interpolate_pos_encoding`` does at each forward (bicubic, ``align_corners=False``, scale (grid + 0.1) / n),
    in float32."""
    import torch

    n = round((pos.shape[1] - 1) ** 0.5)
    if n == grid:
        return pos
    scale = (grid + 0.1) / n
    patch = pos[:, 1:].float().reshape(1, n, n, -1).permute(0, 3, 1, 2)
    patch = torch.nn.functional.interpolate(patch, scale_factor=(scale, scale), mode="bicubic", align_corners=False)
    if tuple(patch.shape[-2:]) != (grid, grid):
        raise WeightsError(f"{SPEC.name}: resampling a {n}x{n} position grid gave {tuple(patch.shape[-2:])}, "
                           f"not {grid}x{grid}")
    return torch.cat([pos[:, :1].float(), patch.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


@register_encoder(SPEC)
def load_conch_v15(weights: ResolvedWeights) -> torch.nn.Module:
    import torch

    from stbench.encoders._statedict import load_strict, read_checkpoint

    if weights.random_seed is not None:
        return _random_tower()
    state = tower_state(read_checkpoint(weights.path, SPEC.name), path=weights.path)
    config = {"embed_dim": CONCH_V15_CONFIG["embed_dim"], "vision_cfg": dict(CONCH_V15_CONFIG["vision_cfg"])}
    given = weights.config.get("model_cfg", weights.config) if weights.config else {}
    if isinstance(given.get("vision_cfg"), dict):
        config = {"embed_dim": given.get("embed_dim", config["embed_dim"]),
                  "vision_cfg": {**config["vision_cfg"], **given["vision_cfg"]}}
    if not any(k.endswith(".ls1.gamma") for k in state):  # a file without LayerScale: build none
        config["vision_cfg"]["ls_init_value"] = None
    with torch.device("meta"):  # shapes only; every tensor is then assigned from the file
        net = build_conch_v15(config)
    if net.ln_contrast.normalized_shape[0] != SPEC.embed_dim:
        raise WeightsError(f"{SPEC.name}: the config beside {weights.path} gives {net.ln_contrast.normalized_shape[0]}-d "
                           f"embeddings, not {SPEC.embed_dim}; these weights are for another model")
    pos = state.get("trunk.pos_embed")
    if pos is not None and hasattr(pos, "shape") and len(pos.shape) == 3:
        state["trunk.pos_embed"] = dino_positions(pos, int(net.trunk.patch_embed.grid_size[0]))
    load_strict(net, state, name=SPEC.name, path=weights.path, assign=True)
    return net.float()


def _random_tower() -> torch.nn.Module:
    """The random-weight control: timm's trunk init, torch's for the pooler."""
    import torch

    net = build_conch_v15()
    net.trunk.init_weights()
    with torch.no_grad():
        net.attn_pool_contrast.query.normal_()
    return net


ENCODER = load_conch_v15
