"""The offline default encoder has real ImageNet weights, and goes through the encoder registry."""

import numpy as np
import pytest

from stbench.encoders import get_encoder, list_encoders
from stbench.extract import embed_batch


@pytest.fixture(scope="module")
def effnet():
    return get_encoder("efficientnet-lite0").load()


def test_weights_are_real_imagenet_weights_chelsea_is_a_cat(effnet):
    import torch
    from PIL import Image
    from skimage import data

    img = np.asarray(Image.fromarray(data.chelsea()).resize((224, 224), Image.BILINEAR))
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255
    x = (x - 0.5) / 0.5  # the spec's normalisation: [-1, 1]
    with torch.inference_mode():
        logits = effnet.model.net(x)  # the classifier head of the same weights
    assert int(logits.argmax()) in range(281, 286)  # ImageNet tabby/tiger/Persian/Siamese/Egyptian cat


def test_embedding_shape_dtype_and_determinism(effnet):
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 255, size=(3, 224, 224, 3), dtype=np.uint8)
    a = embed_batch(effnet, patches)
    b = embed_batch(effnet, patches)
    assert a.shape == (3, 1280) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    one = embed_batch(effnet, patches[:1])
    np.testing.assert_allclose(one[0], a[0], rtol=1e-4, atol=1e-5)  # batch composition does not matter


def test_spec_and_fingerprint(effnet):
    enc = get_encoder("EfficientNet_Lite0")
    assert enc.spec.embed_dim == 1280 and enc.spec.mean == (0.5, 0.5, 0.5)
    assert enc.available()
    assert enc.fingerprint() == effnet.fingerprint and effnet.fingerprint.startswith("sha256:5793442")
    assert [e.name for e in list_encoders()].count("efficientnet-lite0") == 1


def test_weights_override_changes_the_fingerprint(tmp_path, effnet):
    import torch

    state = effnet.model.net.state_dict()
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    path = tmp_path / "other.pth"
    torch.save(state, path)
    other = get_encoder("efficientnet-lite0").load(path)
    assert other.fingerprint != effnet.fingerprint and other.weights_path == str(path)
