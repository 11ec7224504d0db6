"""The three encoders whose code is not a plain timm model: phikon, conch, ctranspath.

Each is loaded through the registry, offline, from random weights in the checkpoint layout its authors
publish, and checked against a computation that does not use stbench's model code:

* phikon: equals ``transformers.ViTModel(...).last_hidden_state[:, 0]`` on real HER2+ patches;
* conch: equals CoCa's attentional pooling computed by hand from the checkpoint tensors over the tokens
  of a separately built timm trunk; text-tower and captioning keys are ignored;
* ctranspath: a timm-0.5.4-layout ``{"model": ...}`` file (downsample at stage ends, ``attn_mask`` and
  ``relative_position_index`` saved) gives the same output as the network it came from.

Widths are the real ones; phikon and conch use 2 blocks to stay fast, ctranspath is full Swin-T.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stbench.encoders import get_encoder
from stbench.errors import WeightsError
from stbench.extract import _preprocess, embed_batch
from stbench.tasks import PatchFile, open_task
from stbench.testing import COMMIT, write_hub_repo

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def patches(her2st_task_root: Path) -> np.ndarray:
    """Four real HER2+ patches (224 px, uint8)."""
    task = open_task("HER2ST", her2st_task_root)
    with PatchFile(task.samples[sorted(task.samples)[0]].patches) as pf:
        _, block = next(pf.iter_chunks(4))
    return np.ascontiguousarray(block)


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Noise on every tensor, so that swapped norms or biases (1 and 0 at init) cannot go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def _torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _check_embeddings(loaded, patches: np.ndarray, dim: int) -> np.ndarray:  # noqa: ANN001
    a = embed_batch(loaded, patches)
    assert a.shape == (len(patches), dim) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, embed_batch(loaded, patches))  # deterministic
    np.testing.assert_allclose(embed_batch(loaded, patches[1:2])[0], a[1], rtol=1e-4, atol=1e-5)  # batch-free
    assert np.abs(a[0] - a[1]).max() > 1e-3  # different patches, different embeddings
    return a


# ---------------------------------------------------------------------------------------------- phikon


def _vit_model():  # noqa: ANN202
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    # ViT-B/16 widths and defaults, as owkin/phikon's ViTConfig, with 2 blocks
    model = transformers.ViTModel(transformers.ViTConfig(num_hidden_layers=2), add_pooling_layer=False)
    _randomise(model, 1)
    return model.eval()


def _phikon_repo(cache: Path, model, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "vit"
    model.save_pretrained(out)  # model.safetensors + config.json, as on hf.co/owkin/phikon
    files = {f: (out / f).read_bytes() for f in ("model.safetensors", "config.json")}
    write_hub_repo(cache, "owkin/phikon", files)


@pytest.mark.realdata
def test_phikon_equals_transformers_vitmodel(offline_hub: Path, tmp_path: Path, patches: np.ndarray) -> None:
    vit = _vit_model()
    _phikon_repo(offline_hub, vit, tmp_path)
    loaded = get_encoder("phikon").load()
    assert loaded.origin == "hub owkin/phikon" and loaded.fingerprint == f"hub:owkin/phikon@{COMMIT}"
    ours = _check_embeddings(loaded, patches, 768)
    x = _preprocess(torch.from_numpy(patches), loaded)  # the pipeline's resize + normalisation
    with torch.inference_mode():
        ref = vit(pixel_values=x).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_phikon_key_variants_and_strictness(tmp_path: Path) -> None:
    """A ``vit.``-prefixed checkpoint with a pooler loads (pooler dropped); a missing tensor is named."""
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file, save_file

    cfg = transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=128, qkv_bias=False, layer_norm_eps=1e-6)
    torch.manual_seed(0)
    vit = transformers.ViTModel(cfg, add_pooling_layer=True).eval()
    _randomise(vit, 2)
    folder = tmp_path / "ckpt"
    vit.save_pretrained(folder)  # the published key names (transformers 5 renames its modules in memory)
    state = load_file(folder / "model.safetensors")
    assert "pooler.dense.weight" in state
    state = {f"vit.{k}": v for k, v in state.items()} | {"classifier.weight": torch.ones(2, 64)}  # a task model
    save_file(state, folder / "model.safetensors")
    loaded = get_encoder("phikon").load(folder)  # --weights DIR: weight file + its config.json
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        ref = vit(pixel_values=x).last_hidden_state[:, 0]
        np.testing.assert_allclose(loaded.model(x), ref, atol=1e-4, rtol=0)

    del state["vit.encoder.layer.1.output.dense.weight"]
    save_file(state, folder / "model.safetensors")
    with pytest.raises(WeightsError, match=r"missing blocks\.1\.mlp\.fc2\.weight"):
        get_encoder("phikon").load(folder)


def test_phikon_size_matches_transformers_on_meta() -> None:
    transformers = pytest.importorskip("transformers")
    from stbench.encoders.phikon import build_phikon

    with torch.device("meta"):
        ours = sum(p.numel() for p in build_phikon().parameters())
        vit = transformers.ViTModel(transformers.ViTConfig(), add_pooling_layer=False)
        ref = sum(p.numel() for p in vit.parameters())
    assert ours == ref == 85_798_656  # ViT-B/16, 86 M


# ----------------------------------------------------------------------------------------------- conch

CONCH_DEPTH = 2


def _conch_checkpoint(seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
    """A whole-CoCa state dict in CONCH's key layout, and the trunk it was made from.

    The trunk is built as CONCH's ``_build_vision_tower`` does (timm ViT, 448 px, ``num_classes=0``); the
    pooler tensors are written by name, as ``nn.MultiheadAttention(512, 8, kdim=768, vdim=768)`` and the
    LayerNorms of CONCH's ``AttentionalPooler`` store them.
    """
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    trunk = VisionTransformer(embed_dim=768, depth=CONCH_DEPTH, num_heads=12, mlp_ratio=4, img_size=448,
                              patch_size=16, num_classes=0, dynamic_img_size=True).eval()
    _randomise(trunk, seed + 1)
    g = torch.Generator().manual_seed(seed + 2)

    def r(*shape: int, scale: float = 0.05, centre: float = 0.0) -> torch.Tensor:
        return centre + scale * torch.randn(shape, generator=g)

    state = {f"visual.trunk.{k}": v for k, v in trunk.state_dict().items()}
    pool = {"query": r(1, 512, scale=1.0), "attn.q_proj_weight": r(512, 512),
            "attn.k_proj_weight": r(512, 768), "attn.v_proj_weight": r(512, 768), "attn.in_proj_bias": r(1536),
            "attn.out_proj.weight": r(512, 512), "attn.out_proj.bias": r(512),
            "ln_q.weight": r(512, centre=1), "ln_q.bias": r(512),
            "ln_k.weight": r(768, centre=1), "ln_k.bias": r(768)}
    state |= {f"visual.attn_pool_contrast.{k}": v for k, v in pool.items()}
    state |= {"visual.ln_contrast.weight": r(512, centre=1), "visual.ln_contrast.bias": r(512),
              "visual.proj_contrast": r(512, 512)}
    # not on the encode_image(proj_contrast=False) path: must be ignored
    caption = {"query": (256, 768), "attn.in_proj_weight": (2304, 768), "attn.in_proj_bias": (2304,),
               "attn.out_proj.weight": (768, 768), "attn.out_proj.bias": (768,), "ln_q.weight": (768,),
               "ln_q.bias": (768,), "ln_k.weight": (768,), "ln_k.bias": (768,)}
    state |= {f"visual.attn_pool_caption.{k}": r(*shape) for k, shape in caption.items()}
    state |= {"visual.ln_caption.weight": r(768), "visual.ln_caption.bias": r(768)}
    text = {"text.token_embedding.weight": (32, 768), "text.positional_embedding": (128, 768),
            "text.cls_emb": (768,), "text.text_projection": (768, 512),
            "text.transformer.resblocks.0.attn.in_proj_weight": (2304, 768), "text.ln_final.weight": (768,),
            "text_decoder.resblocks.0.ln_1.weight": (768,),
            "text_decoder.text_projection": (768, 32), "logit_scale": ()}
    state |= {k: r(*shape) for k, shape in text.items()}
    return state, trunk


def _conch_config() -> bytes:  # conch_ViT-B-16.json's layout, fewer blocks
    vision = {"image_size": 448, "patch_size": 16, "layers": CONCH_DEPTH}
    return json.dumps({"embed_dim": 512, "vision_cfg": vision, "custom_text": True}).encode()


def _attentional_pool(tokens: torch.Tensor, s: dict[str, torch.Tensor]) -> torch.Tensor:
    """CoCa's contrastive pooling, by hand: 1 query, 8 heads over layer-normed tokens, then ln_contrast."""
    F = torch.nn.functional
    p = "visual.attn_pool_contrast."
    kv = F.layer_norm(tokens, (768,), s[p + "ln_k.weight"], s[p + "ln_k.bias"], eps=1e-5)
    q = F.layer_norm(s[p + "query"], (512,), s[p + "ln_q.weight"], s[p + "ln_q.bias"], eps=1e-5)
    bq, bk, bv = s[p + "attn.in_proj_bias"].split(512)
    b, n = tokens.shape[:2]
    qh = (q @ s[p + "attn.q_proj_weight"].T + bq).view(8, 64)
    kh = (kv @ s[p + "attn.k_proj_weight"].T + bk).view(b, n, 8, 64)
    vh = (kv @ s[p + "attn.v_proj_weight"].T + bv).view(b, n, 8, 64)
    weights = torch.einsum("hd,bnhd->bhn", qh, kh).div(64**0.5).softmax(dim=-1)
    pooled = torch.einsum("bhn,bnhd->bhd", weights, vh).reshape(b, 512)
    pooled = pooled @ s[p + "attn.out_proj.weight"].T + s[p + "attn.out_proj.bias"]
    ln = "visual.ln_contrast."
    return F.layer_norm(pooled, (512,), s[ln + "weight"], s[ln + "bias"], eps=1e-5)


@pytest.mark.realdata
def test_conch_pools_like_coca_and_ignores_text_keys(offline_hub: Path, patches: np.ndarray) -> None:
    state, trunk = _conch_checkpoint()
    files = {"pytorch_model.bin": _torch_bytes(state), "config.json": _conch_config()}
    write_hub_repo(offline_hub, "MahmoodLab/conch", files)
    loaded = get_encoder("conch").load()
    assert loaded.origin == "hub MahmoodLab/conch" and len(loaded.model.trunk.blocks) == CONCH_DEPTH
    ours = _check_embeddings(loaded, patches, 512)
    x = _preprocess(torch.from_numpy(patches), loaded)
    assert x.shape[-2:] == (448, 448)
    with torch.inference_mode():
        ref = _attentional_pool(trunk.forward_features(x), state).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_conch_checkpoint_problems_are_one_line_errors(tmp_path: Path) -> None:
    state, _ = _conch_checkpoint()
    path = tmp_path / "pytorch_model.bin"
    (tmp_path / "config.json").write_text(_conch_config().decode())
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)  # wrappers CONCH accepts
    assert get_encoder("conch").load(path).model(torch.zeros(1, 3, 448, 448)).shape == (1, 512)

    del state["visual.trunk.blocks.1.mlp.fc1.bias"]
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"conch: .* missing trunk\.blocks\.1\.mlp\.fc1\.bias"):
        get_encoder("conch").load(path)
    torch.save({k: v for k, v in state.items() if not k.startswith("visual.")}, path)
    with pytest.raises(WeightsError, match="no visual.* keys"):
        get_encoder("conch").load(path)


def test_conch_gated_and_offline_messages(offline_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """conch is not in tests/_reduced.py's hub table, so its access messages are checked here."""
    import huggingface_hub
    import httpx2
    from huggingface_hub.errors import GatedRepoError

    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE") as err:  # empty cache, offline
        get_encoder("conch").load()
    assert "--weights PATH" in str(err.value)

    def gated(*args: object, **kwargs: object) -> str:
        url = "https://huggingface.co/api/models/MahmoodLab/conch/revision/main"
        raise GatedRepoError("403 Client Error. Cannot access gated repo.",
                             response=httpx2.Response(403, request=httpx2.Request("GET", url)))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)
    with pytest.raises(WeightsError) as err:
        get_encoder("conch").load()
    msg = str(err.value)
    assert "https://huggingface.co/MahmoodLab/conch" in msg and "HF_TOKEN" in msg and "--weights PATH" in msg
    assert 'conch = "PATH"' in msg and "\n" not in msg


def test_conch_full_size_on_meta() -> None:
    from stbench.encoders.conch import build_conch

    with torch.device("meta"):
        net = build_conch()
    trunk = sum(p.numel() for p in net.trunk.parameters())
    assert tuple(net.trunk.pos_embed.shape) == (1, 1 + 28 * 28, 768) and len(net.trunk.blocks) == 12
    assert trunk == 85_798_656 + (785 - 197) * 768  # ViT-B/16, position table for 28 x 28 patches + class
    # query, q and out projections, k and v projections, their biases, ln_q, ln_k
    pooler = 512 + 2 * 512 * 512 + 2 * 768 * 512 + 3 * 512 + 512 + 2 * 512 + 2 * 768
    assert sum(p.numel() for p in net.parameters()) - trunk == pooler + 2 * 512  # + ln_contrast


# ------------------------------------------------------------------------------------------ ctranspath


@pytest.fixture(scope="module")
def ctranspath_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """``ctranspath.pth`` as the authors' timm 0.5.4 wrote it, from a random full-size network."""
    from stbench.encoders.ctranspath import build_ctranspath

    torch.manual_seed(0)
    net = build_ctranspath()
    with torch.no_grad():
        for name, p in net.named_parameters():  # built with init skipped: give every tensor values
            norm_weight = p.dim() == 1 and not name.endswith("bias")
            scale, centre = (0.1, 1.0) if norm_weight else (0.05, 0.0)
            p.copy_(centre + scale * torch.randn(p.shape))
        for name, b in net.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                b.normal_(0, 0.1)
    net.eval()
    old = {}
    for key, value in net.state_dict().items():
        stage = key.split(".")[1] if key.startswith("layers.") and ".downsample." in key else None
        old[key.replace(f"layers.{stage}.", f"layers.{int(stage) - 1}.", 1) if stage else key] = value
    old |= {k: v for k, v in net.named_buffers() if k.endswith(("attn_mask", "relative_position_index"))}
    # the layout of the authors' file, as timm 0.5.4 writes Swin-T with a ConvStem and no head
    assert len(old) == 200 and sum(k.endswith("attn_mask") for k in old) == 5
    assert tuple(old["layers.0.downsample.reduction.weight"].shape) == (192, 384)
    path = tmp_path_factory.mktemp("ctranspath") / "ctranspath.pth"
    torch.save({"model": old}, path)
    return path, net


@pytest.mark.realdata
def test_ctranspath_from_weights_and_from_config(
    ctranspath_file: tuple[Path, torch.nn.Module], no_user_config: Path, patches: np.ndarray
) -> None:
    path, source = ctranspath_file
    loaded = get_encoder("ctranspath").load(path)  # --weights PATH
    assert loaded.origin == "--weights" and loaded.fingerprint.startswith("sha256:")
    ours = _check_embeddings(loaded, patches, 768)
    with torch.inference_mode():
        ref = source(_preprocess(torch.from_numpy(patches), loaded)).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)

    no_user_config.write_text(f'[weights]\nctranspath = "{path}"\n')
    via_config = get_encoder("CTransPath").load()
    assert via_config.origin.startswith("config ") and via_config.fingerprint == loaded.fingerprint
    np.testing.assert_array_equal(embed_batch(via_config, patches), ours)


def test_ctranspath_strict_and_missing_weights(
    ctranspath_file: tuple[Path, torch.nn.Module], tmp_path: Path
) -> None:
    path, _ = ctranspath_file
    state = torch.load(path, weights_only=True)["model"]
    del state["layers.2.blocks.3.mlp.fc1.weight"]
    broken = tmp_path / "broken.pth"
    torch.save({"model": state}, broken)
    with pytest.raises(WeightsError, match=r"ctranspath: .* missing layers\.2\.blocks\.3\.mlp\.fc1\.weight"):
        get_encoder("ctranspath").load(broken)

    with pytest.raises(WeightsError) as err:
        get_encoder("ctranspath").load()
    msg = str(err.value)
    assert "github.com/Xiyue-Wang/TransPath" in msg  # where to get the file
    assert "--weights PATH" in msg and 'ctranspath = "PATH"' in msg  # how to give it
    assert "\n" not in msg


def test_ctranspath_full_size_on_meta() -> None:
    from stbench.encoders.ctranspath import build_ctranspath

    with torch.device("meta"):
        n = sum(p.numel() for p in build_ctranspath().parameters())
    assert n == 27_520_038  # Swin-T 28 M, patchify conv replaced by the ConvStem


# ----------------------------------------------------------------------------------------------- specs


def test_specs_and_torch_free_listing() -> None:
    specs = {n: get_encoder(n).spec for n in ("phikon", "conch", "ctranspath")}
    got = [(s.embed_dim, s.input_size, s.gated) for s in specs.values()]
    assert got == [(768, 224, False), (512, 448, True), (768, 224, False)]
    assert specs["conch"].interpolation == "bicubic" and specs["conch"].mean[0] == pytest.approx(0.48145466)
    assert specs["phikon"].source.files == ("model.safetensors",)
    assert specs["conch"].source.files == ("pytorch_model.bin",)
    assert specs["ctranspath"].source.hub is None and specs["ctranspath"].license == "GPL-3.0"
    code = ("import sys; from stbench.encoders import list_encoders; "
            "names = [e.name for e in list_encoders()]; "
            "assert {'phikon', 'conch', 'ctranspath'} <= set(names), names; "
            "assert not {'torch', 'timm'} & set(sys.modules), 'listing imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
