"""CONCH v1.5 (Mahmood Lab): the patch encoder of TITAN, a CoCa-style image tower with a ViT-L/16 trunk at 448 px.

Built with the same code as CONCH v1 (`stbench.encoders._conch_vision`): a timm ViT trunk whose normed tokens
feed one attentional-pooler query (``attn_pool_contrast``), then ``ln_contrast``; the 768-d output is what
TITAN's ``return_conch()`` model gives for a patch. Facts and their source (none could be checked here):

* ViT-L/16 trunk (1024 wide, 24 blocks, 16 heads), 448 px input, 768-d output: TITAN's paper (Ding et al. 2024,
  arXiv:2411.19666, "CONCH v1.5") and the hf.co/MahmoodLab/conchv1_5 card; the pooler's 8 heads are CoCa's
  default (recollection, moderate confidence);
* LayerScale: built when the checkpoint has ``ls1.gamma`` tensors (whether the published file has them is not
  known here), so either layout loads strictly;
* weight file ``pytorch_model_vision.bin`` (recollection), holding the tower's keys bare or under ``visual.``;
* transform: Resize(448, bicubic) + CenterCrop(448) of a PIL image, ImageNet mean/std (TITAN's
  ``return_conch`` eval transform, recollection, moderate confidence);
* fp16: TITAN's README runs the patch encoder under ``torch.autocast(float16)`` (recollection).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stbench.encoders._base import EncoderSpec, register_encoder
from stbench.encoders.weights import ResolvedWeights, WeightsSource
from stbench.errors import WeightsError

if TYPE_CHECKING:
    import torch

__all__ = ["SPEC", "CONCH_V15_CONFIG", "build_conch_v15", "tower_state"]

CONCH_V15_CONFIG: dict[str, Any] = {
    "embed_dim": 768,
    "vision_cfg": {"image_size": 448, "patch_size": 16, "layers": 24, "width": 1024, "num_heads": 16,
                   "mlp_ratio": 4, "attn_pooler_heads": 8, "n_queries_contrast": 1},
}
_UNUSED = ("attn_pool_caption.", "ln_caption.", "proj_contrast", "head.")

SPEC = EncoderSpec(
    name="conch-v1.5", aliases=("conchv1_5", "conch-v15", "conch15"), embed_dim=768, input_size=448,
    interpolation="bicubic", resample="pil", precision="fp16",
    pooling="attentional pooler (1 query) over the ViT-L trunk's tokens, then ln_contrast (TITAN's CONCH v1.5)",
    weights="hf.co/MahmoodLab/conchv1_5 (gated)", license="CC-BY-NC-ND-4.0",
    paper="Ding et al. 2024, Multimodal whole slide foundation model for pathology (TITAN; arXiv:2411.19666)",
    code="stbench.encoders._conch_vision (timm ViT + attentional pooler), as CONCH v1", gated=True, random_init=True,
    source=WeightsSource(hub="MahmoodLab/conchv1_5", files=("pytorch_model_vision.bin", "pytorch_model.bin"),
                         page="https://huggingface.co/MahmoodLab/conchv1_5"),
)


def build_conch_v15(config: dict[str, Any] | None = None) -> torch.nn.Module:
    """CONCH v1.5's image tower (weights not loaded)."""
    from stbench.encoders._conch_vision import ConchVisual
    from stbench.encoders.conch import conch_config

    return ConchVisual(conch_config(config or {}, CONCH_V15_CONFIG, SPEC.name))


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
    if any(k.endswith(".ls1.gamma") for k in state):  # LayerScale in the file: build it (its value is loaded)
        config["vision_cfg"].setdefault("ls_init_value", 1e-5)
    with torch.device("meta"):  # shapes only; every tensor is then assigned from the file
        net = build_conch_v15(config)
    if net.ln_contrast.normalized_shape[0] != SPEC.embed_dim:
        raise WeightsError(f"{SPEC.name}: the config beside {weights.path} gives {net.ln_contrast.normalized_shape[0]}-d "
                           f"embeddings, not {SPEC.embed_dim}; these weights are for another model")
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
