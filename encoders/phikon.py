"""Phikon (Owkin): an iBOT ViT-B/16 published in Hugging Face ``transformers`` ``ViTModel`` format.

The embedding is the class token of the last hidden state (after the final layer norm) of ``ViTModel``
built with ``add_pooling_layer=False``, as Owkin's model card does. ``transformers`` is not needed at run
time: the same network is a timm ``VisionTransformer`` built from the repo's ``config.json`` (a
``ViTConfig``), and the checkpoint's keys are renamed onto it (q, k and v are concatenated into timm's
fused ``qkv``), then loaded strictly. tests/test_encoders_hard.py checks the result against ``ViTModel``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from stbench.encoders._base import EncoderSpec, register_encoder
from stbench.encoders.weights import ResolvedWeights, WeightsSource
from stbench.errors import WeightsError

if TYPE_CHECKING:
    import torch

__all__ = ["SPEC", "vit_config", "build_phikon", "hf_vit_to_timm"]

SPEC = EncoderSpec(
    name="phikon",
    aliases=("owkin-phikon",),
    embed_dim=768,
    input_size=224,
    precision="fp32",
    pooling="class token of the last hidden state (ViTModel, add_pooling_layer=False)",
    weights="hf.co/owkin/phikon (model.safetensors + config.json, transformers ViTModel)",
    license="Owkin non-commercial licence (see the model page)",
    paper="Filiot et al. 2023, Scaling self-supervised learning for histopathology with masked image "
          "modeling",
    code="timm VisionTransformer built from the repo's ViTConfig; transformers keys renamed by stbench",
    source=WeightsSource(hub="owkin/phikon", files=("model.safetensors",),
                         page="https://huggingface.co/owkin/phikon"),
)

# ViT-B/16 as transformers' ViTConfig defaults describe it (owkin/phikon's config.json): the architecture
# when a weight file comes without a config.json.
PHIKON_CONFIG: dict[str, Any] = {
    "model_type": "vit", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "layer_norm_eps": 1e-12, "qkv_bias": True, "image_size": 224, "patch_size": 16,
    "num_channels": 3, "hidden_act": "gelu",
}


def vit_config(config: dict[str, Any]) -> dict[str, Any]:
    """The ViTConfig fields the architecture needs: ``config`` over Phikon's own values; refuses what
    timm's plain ViT cannot reproduce."""
    cfg = {**PHIKON_CONFIG, **{k: v for k, v in config.items() if k in PHIKON_CONFIG}}
    if cfg["model_type"] != "vit":
        raise WeightsError(f"phikon: config.json has model_type {cfg['model_type']!r}; expected 'vit' "
                           "(a ViTModel)")
    if cfg["hidden_act"] != "gelu":  # transformers' "gelu" is the exact (erf) GELU, timm's default
        raise WeightsError(f"phikon: config.json hidden_act {cfg['hidden_act']!r} is not supported "
                           "(only 'gelu')")
    if cfg["intermediate_size"] % cfg["hidden_size"]:
        raise WeightsError("phikon: config.json intermediate_size must be a multiple of hidden_size")
    return cfg


def build_phikon(config: dict[str, Any] | None = None) -> torch.nn.Module:
    """The timm ViT equal to ``ViTModel(ViTConfig(**config))`` without its pooler (weights not loaded)."""
    from functools import partial

    import torch
    from timm.models.vision_transformer import VisionTransformer

    cfg = vit_config(config or {})
    return VisionTransformer(
        img_size=cfg["image_size"], patch_size=cfg["patch_size"], in_chans=cfg["num_channels"],
        embed_dim=cfg["hidden_size"], depth=cfg["num_hidden_layers"], num_heads=cfg["num_attention_heads"],
        mlp_ratio=cfg["intermediate_size"] // cfg["hidden_size"], qkv_bias=cfg["qkv_bias"],
        norm_layer=partial(torch.nn.LayerNorm, eps=cfg["layer_norm_eps"]), act_layer=torch.nn.GELU,
        num_classes=0, global_pool="token", weight_init="skip",  # every tensor is then loaded
    )


_BLOCK = re.compile(r"encoder\.layer\.(\d+)\.(.+)")
_IN_BLOCK = {
    "attention.output.dense": "attn.proj",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}


def hf_vit_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers ``ViTModel`` state dict in timm ``VisionTransformer`` keys.

    A ``vit.`` prefix (a checkpoint saved from a task model) is removed and what lies outside it dropped;
    the unused ``pooler.*`` is dropped. Any other key is kept as is, so strict loading reports it.
    """
    import torch

    if any(k.startswith("vit.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("vit.")}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}  # (block, weight|bias) -> {query, key, value}
    for key, value in state.items():
        if key.startswith("pooler."):
            continue
        if key in _TOP:
            out[_TOP[key]] = value
            continue
        m = _BLOCK.fullmatch(key)
        if m is None:
            out[key] = value
            continue
        block, rest = m.groups()
        part = re.fullmatch(r"attention\.attention\.(query|key|value)\.(weight|bias)", rest)
        if part:
            qkv.setdefault((block, part[2]), {})[part[1]] = value
            continue
        module, _, leaf = rest.rpartition(".")
        out[f"blocks.{block}.{_IN_BLOCK.get(module, module)}.{leaf}"] = value
    for (block, leaf), parts in qkv.items():
        if len(parts) != 3:
            raise WeightsError(f"phikon: encoder.layer.{block} has attention {leaf}s for {sorted(parts)} "
                               "only; is the weight file complete?")
        out[f"blocks.{block}.attn.qkv.{leaf}"] = torch.cat([parts[n] for n in ("query", "key", "value")])
    return out


def _class_token(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.forward_features(x)[:, 0]


@register_encoder(SPEC)
def load_phikon(weights: ResolvedWeights) -> torch.nn.Module:
    from stbench.encoders._statedict import load_strict, read_checkpoint
    from stbench.encoders._torch import Embedder

    net = build_phikon(weights.config)
    state = hf_vit_to_timm(read_checkpoint(weights.path, SPEC.name))
    load_strict(net, state, name=SPEC.name, path=weights.path)
    return Embedder(net, _class_token)


ENCODER = load_phikon
