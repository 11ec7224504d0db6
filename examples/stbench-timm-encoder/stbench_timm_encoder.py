"""An stbench encoder plugin: timm image models by name. Copy this file to start your own.

Each entry of ``MODELS`` becomes the encoder ``timm-<arch>``. Its weights are timm's checkpoint on the
Hugging Face hub, ``timm/<arch>.<tag>``, found by stbench: ``--weights PATH``, then ``[weights]`` in the
stbench config file, then the hub (only its local cache when ``HF_HUB_OFFLINE=1``). Add models with
``STBENCH_TIMM_MODELS="convnext_atto.d2_in1k=320,resnet50.a1_in1k=2048"`` (timm name with its tag = the
length of the pooled features, timm's ``head_hidden_size``; stbench checks it on the first batch).

Nothing here imports torch or timm until a model is built, so ``bench list`` stays fast.
"""

from __future__ import annotations

import os

from stbench.encoders import EncoderSpec, register_encoder
from stbench.encoders.weights import ResolvedWeights, WeightsSource

# timm name "arch.tag" -> embedding length. Both checkpoints are ImageNet-1k, Apache-2.0, 224 px.
MODELS = {"resnet18.a1_in1k": 512, "mobilenetv3_small_050.lamb_in1k": 1024}


def configured_models() -> dict[str, int]:
    """``MODELS`` plus the ``name=dim`` pairs in ``$STBENCH_TIMM_MODELS``."""
    extra = [item.split("=") for item in os.environ.get("STBENCH_TIMM_MODELS", "").split(",") if item.strip()]
    return MODELS | {name.strip(): int(dim) for name, dim in extra}


def timm_loader(timm_name: str):  # noqa: ANN201
    """The loader stbench calls with the resolved weights; returns images (B, 3, 224, 224) -> (B, dim)."""

    def load(weights: ResolvedWeights):  # noqa: ANN202
        import timm  # only when a model is built

        # num_classes=0: timm drops the classifier and forward() returns the pooled features. The file
        # overlay makes timm read the weights stbench resolved instead of downloading its own copy.
        return timm.create_model(timm_name, pretrained=True, num_classes=0,
                                 pretrained_cfg_overlay={"file": str(weights.path)})

    load.__qualname__ = f"timm_loader({timm_name!r})"  # the origin `bench list encoders --json` shows
    return load


for _name, _dim in configured_models().items():
    _arch, _dot, _tag = _name.partition(".")
    if not _tag:
        raise ValueError(f"timm model {_name!r}: give the name with its weights tag, e.g. resnet18.a1_in1k")
    register_encoder(EncoderSpec(
        name="timm-" + _arch.replace("_", "-"),
        embed_dim=_dim,
        weights=f"hf.co/timm/{_name}",
        license=f"see hf.co/timm/{_name}",
        source=WeightsSource(hub=f"timm/{_name}"),  # "timm/<name>@<commit>" pins a revision
        pooling="timm forward with num_classes=0 (the model's own global pooling)",
        code=f"timm ({_arch})",
    ))(timm_loader(_name))
