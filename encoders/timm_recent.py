"""timm-built encoders beyond the nine of HEST-Benchmark's 2024 table: UNI2-h, H-optimus-1, H0-mini,
Kaiko ViT-B/8, Lunit ViT-S/8, and CLS-only modes of Virchow and Virchow2.

They are built and loaded exactly as `stbench.encoders.timm_models` builds the nine (timm architecture +
model-card kwargs, a repo's ``config.json`` over them, meta-device build, strict load, fp32 weights under
autocast). Where a fact comes from is written beside it; "recollection" marks a fact taken from memory of a
public model card or loader that could not be checked here (no network): a wrong one shows up as a strict-load
error naming the keys or shapes that differ, or as an embedding length that is refused, never as silently
wrong embeddings, except for mean/std and precision, which are marked with their confidence.
"""

from __future__ import annotations

from stbench.encoders._base import Encoder, EncoderSpec, register_encoder
from stbench.encoders.timm_models import SWIGLU, TimmArch, _hub, _loader

__all__ = ["ARCHS", "SPECS", "ENCODERS", "HOPTIMUS_MEAN", "HOPTIMUS_STD"]

# Bioptimus' normalisation, from the H-optimus-0 / H-optimus-1 / H0-mini model cards' transforms.
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)
HALF = (0.5, 0.5, 0.5)

_VIRCHOW = {"mlp_ratio": 5.3375, "init_values": 1e-5, "global_pool": "", "num_classes": 0, "dynamic_img_size": True,
            **SWIGLU}

ARCHS: dict[str, TimmArch] = {
    # hf.co/MahmoodLab/UNI2-h model card: timm_kwargs img_size 224, patch_size 14, depth 24, num_heads 24,
    # init_values 1e-5, embed_dim 1536, mlp_ratio 2.66667*2, num_classes 0, no_embed_class True, SwiGLUPacked,
    # SiLU, reg_tokens 8, dynamic_img_size True; architecture vit_giant_patch14_224 in its config.json.
    "uni2-h": TimmArch("vit_giant_patch14_224", {
        "img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5, "embed_dim": 1536,
        "mlp_ratio": 2.66667 * 2, "num_classes": 0, "no_embed_class": True, "reg_tokens": 8,
        "dynamic_img_size": True, **SWIGLU}, "cls"),
    # hf.co/bioptimus/H-optimus-1 model card: the H-optimus-0 architecture (ViT-g/14, 4 registers),
    # timm.create_model("hf-hub:bioptimus/H-optimus-1", init_values=1e-5, dynamic_img_size=False).
    "hoptimus1": TimmArch("vit_giant_patch14_reg4_dinov2", {"img_size": 224, "init_values": 1e-5, "num_classes": 0,
                                                            "global_pool": "token", "dynamic_img_size": False}, "cls"),
    # hf.co/bioptimus/H0-mini model card: ViT-B/14 with 4 registers distilled from H-optimus-0, created with
    # mlp_layer=SwiGLUPacked, act_layer=SiLU; model(x) returns all 261 tokens and the card concatenates the
    # class token with the mean of the patch tokens (output[:, model.num_prefix_tokens:]). The MLP width
    # (mlp_ratio 2.66667*2, the DINOv2 SwiGLU rule: 86 M parameters in all) is recollection: the repo's
    # config.json, when present, overrides it.
    "h0-mini": TimmArch("vit_base_patch14_reg4_dinov2", {"img_size": 224, "init_values": 1e-5, "num_classes": 0,
                                                         "global_pool": "", "mlp_ratio": 2.66667 * 2, **SWIGLU},
                        "cls+mean"),
    # Kaiko.ai "Towards large-scale training of pathology foundation models" (arXiv:2404.15217), ViT-B/8
    # published in timm format (hub id: recollection of TRIDENT's loader); the class token, as timm's
    # num_classes=0 output.
    "kaiko-vitb8": TimmArch("vit_base_patch8_224", {"img_size": 224, "num_classes": 0, "dynamic_img_size": True},
                            "cls"),
    # Lunit "Benchmarking self-supervised learning on diverse pathology datasets" (CVPR 2023), DINO ViT-S/8 in
    # timm format; the class token.
    "lunit-s8": TimmArch("vit_small_patch8_224", {"img_size": 224, "num_classes": 0}, "cls"),
    # CLS-only Virchow / Virchow2 (1280-d): the class token their cards compute before concatenating the
    # patch-token mean; TRIDENT offers the same as an option (return_cls).
    "virchow-cls": TimmArch("vit_huge_patch14_224", _VIRCHOW, "cls"),
    "virchow2-cls": TimmArch("vit_huge_patch14_224", {**_VIRCHOW, "reg_tokens": 4}, "cls"),
}

SPECS: tuple[EncoderSpec, ...] = (
    EncoderSpec(
        name="uni2-h", aliases=("uni2", "uni-v2", "univ2"), embed_dim=1536,
        # bf16: TRIDENT's UNI2-h loader (recollection, moderate confidence); HEST-Benchmark did not run it
        precision="bf16", gated=True, pooling="class token of forward_features (8 register tokens skipped)",
        weights="hf.co/MahmoodLab/UNI2-h (gated)", license="CC-BY-NC-ND-4.0",
        paper="Chen et al. 2024, UNI (Nat Med); UNI2-h model card (ViT-H/14-reg8, 200M+ images)",
        random_init=True, code="timm", source=_hub("MahmoodLab/UNI2-h"),
    ),
    EncoderSpec(
        name="hoptimus1", aliases=("h-optimus-1", "hoptimus-1"), embed_dim=1536,
        mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD,
        # fp16: the card's example runs under torch.autocast(float16), as H-optimus-0's
        precision="fp16", gated=True,  # gated: recollection (access on accepting the terms)
        pooling="class token of forward_features", weights="hf.co/bioptimus/H-optimus-1 (gated)",
        license="H-optimus-1 licence (non-commercial; see the model page)",
        paper="Bioptimus 2025, H-optimus-1 (model card; github.com/bioptimus/releases)",
        random_init=True, code="timm", source=_hub("bioptimus/H-optimus-1", ("model.safetensors", "pytorch_model.bin")),
    ),
    EncoderSpec(
        name="h0-mini", aliases=("hoptimus-mini", "h0mini"), embed_dim=1536,
        mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD,
        precision="fp16", gated=True,  # fp16: card example (moderate); gated: recollection
        pooling="class token ++ mean of patch tokens 5: (768 + 768; skips 4 register tokens), as its card",
        weights="hf.co/bioptimus/H0-mini (gated)", license="CC-BY-NC-ND-4.0",
        paper="Filiot et al. 2025, Distilling foundation models for robust and efficient models in digital "
              "pathology (arXiv:2501.16239)",
        random_init=True, code="timm", source=_hub("bioptimus/H0-mini", ("model.safetensors", "pytorch_model.bin")),
    ),
    EncoderSpec(
        name="kaiko-vitb8", aliases=("kaiko-b8", "kaiko"), embed_dim=768, mean=HALF, std=HALF,  # kaiko/eva: 0.5/0.5
        precision="fp32", pooling="class token of forward_features",
        weights="hf.co/1aurent/vit_base_patch8_224.kaiko_ai_towards_large_pathology_fms",
        license="see the model page (kaiko.ai)",
        paper="Aben et al. 2024, Towards large-scale training of pathology foundation models (arXiv:2404.15217)",
        random_init=True, code="timm",
        source=_hub("1aurent/vit_base_patch8_224.kaiko_ai_towards_large_pathology_fms",
                    ("model.safetensors", "pytorch_model.bin")),
    ),
    EncoderSpec(
        name="lunit-s8", aliases=("lunit-dino-s8", "lunit"), embed_dim=384,
        # Lunit's benchmark repository (lunit-io/benchmark-ssl-pathology) normalisation
        mean=(0.70322989, 0.53606487, 0.66096631), std=(0.21716536, 0.26081574, 0.20723464),
        precision="fp32", pooling="class token of forward_features",
        weights="hf.co/1aurent/vit_small_patch8_224.lunit_dino", license="Lunit non-commercial (see the model page)",
        paper="Kang et al. 2023, Benchmarking self-supervised learning on diverse pathology datasets (CVPR)",
        random_init=True, code="timm",
        source=_hub("1aurent/vit_small_patch8_224.lunit_dino", ("model.safetensors", "pytorch_model.bin")),
    ),
    EncoderSpec(
        name="virchow-cls", aliases=("virchow-1280",), embed_dim=1280, precision="fp32", untagged_precision="fp16",
        gated=True, interpolation="bicubic", pooling="class token only (1280; the card's first half)",
        weights="hf.co/paige-ai/Virchow (gated)", license="Apache-2.0",
        paper="Vorontsov et al. 2024 (Nat Med)", random_init=True, code="timm", source=_hub("paige-ai/Virchow"),
    ),
    EncoderSpec(
        name="virchow2-cls", aliases=("virchow2-1280",), embed_dim=1280, precision="fp16", untagged_precision="fp16",
        gated=True, interpolation="bicubic", pooling="class token only (1280; the card's first half)",
        weights="hf.co/paige-ai/Virchow2 (gated)", license="CC-BY-NC-ND-4.0",
        paper="Zimmermann et al. 2024 (arXiv:2408.00738)", random_init=True, code="timm",
        source=_hub("paige-ai/Virchow2"),
    ),
)

ENCODERS: dict[str, Encoder] = {
    spec.name: register_encoder(spec)(_loader(spec, ARCHS[spec.name])) for spec in SPECS
}
