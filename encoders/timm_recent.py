"""timm-built encoders beyond the nine of HEST-Benchmark's 2024 table: UNI2-h, H-optimus-1, H0-mini,
Kaiko ViT-B/8, Lunit ViT-S/8, and CLS-only modes of Virchow and Virchow2.

They are built and loaded exactly as `stbench.encoders.timm_models` builds the nine (timm architecture +
model-card kwargs, a repo's ``config.json`` over them, meta-device build, strict load, fp32 weights under
autocast). Each fact cites where it was checked (issue 14): mahmoodlab/TRIDENT
``trident/patch_encoder_models/load.py`` (its loader classes, named below), mahmoodlab/HEST
``src/hest/bench/cpath_model_zoo/inference_models.py`` and ``bench_config/bench_config.yaml`` (HEST-Benchmark),
kaiko-ai/eva ``src/eva/vision/models/networks/backbones/pathology/*.py`` and its
``docs/user-guide/advanced/replicate_evaluations.md``, kaiko-ai/towards_large_pathology_fms ``hubconf.py``, the
Hugging Face pages stored for the search corpora, and, marked "third party", other public code that calls the
models. "recollection" marks what no stored source settled: a wrong architecture fact shows up as a
strict-load error naming the keys or shapes that differ, or as a refused embedding length, never as silently
wrong embeddings.
"""

from __future__ import annotations

from stbench.encoders._base import Encoder, EncoderSpec, register_encoder
from stbench.encoders.timm_models import SWIGLU, TimmArch, _hub, _loader

__all__ = ["ARCHS", "SPECS", "ENCODERS", "HOPTIMUS_MEAN", "HOPTIMUS_STD"]

# Bioptimus' normalisation: TRIDENT HOptimus0/HOptimus1InferenceEncoder, HEST HOptimus0InferenceEncoder, the
# stored hf.co/bioptimus/H-optimus-0 config.json (pretrained_cfg mean/std); for H0-mini only third parties
# (Sbrussee/PathBench-MIL feature_extractors.py h0_mini) -- its own config.json supplies it at run time in the
# references (timm resolve_data_config), and was not seen here.
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)
HALF = (0.5, 0.5, 0.5)

# TRIDENT VirchowInferenceEncoder / Virchow2InferenceEncoder timm_kwargs (the same as stbench's virchow, virchow2).
_VIRCHOW = {"mlp_ratio": 5.3375, "init_values": 1e-5, "global_pool": "", "num_classes": 0, "dynamic_img_size": True,
            **SWIGLU}

ARCHS: dict[str, TimmArch] = {
    # TRIDENT UNIv2InferenceEncoder and kaiko-ai/eva mahmood.py mahmood_uni2_h, identical timm_kwargs:
    # vit_giant_patch14_224, img_size 224, patch_size 14, depth 24, num_heads 24, init_values 1e-5, embed_dim 1536,
    # mlp_ratio 2.66667*2, num_classes 0, no_embed_class True, SwiGLUPacked, SiLU, reg_tokens 8,
    # dynamic_img_size True; mahmoodlab/UNI README: "ViT-h/14-reg8". Pooling: model(x), the class token.
    "uni2-h": TimmArch("vit_giant_patch14_224", {
        "img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5, "embed_dim": 1536,
        "mlp_ratio": 2.66667 * 2, "num_classes": 0, "no_embed_class": True, "reg_tokens": 8,
        "dynamic_img_size": True, **SWIGLU}, "cls"),
    # TRIDENT HOptimus1InferenceEncoder: vit_giant_patch14_reg4_dinov2, num_classes 0, img_size 224,
    # global_pool "token", init_values 1e-5 (the H-optimus-0 architecture: g/14, 4 registers, 40 blocks, 24 heads,
    # 1536 wide -- bioptimus/releases models/h-optimus/v0/README.md). dynamic_img_size=False as third parties copy
    # the card (Sbrussee/PathBench-MIL h_optimus_1); TRIDENT passes True: no difference at 224 px.
    "hoptimus1": TimmArch("vit_giant_patch14_reg4_dinov2", {"img_size": 224, "init_values": 1e-5, "num_classes": 0,
                                                            "global_pool": "token", "dynamic_img_size": False}, "cls"),
    # H0-mini: hf-hub:bioptimus/H0-mini built with mlp_layer=SwiGLUPacked, act_layer=SiLU (HEST
    # H0MiniInferenceEncoder, TRIDENT H0MiniInferenceEncoder, eva bioptimus.py); 1 class + 4 register tokens
    # (HEST takes patch tokens output[:, 5:]). Pooling: the class token -- HEST-Benchmark's default
    # (return_cls=True), so its README's H0-mini row, and TRIDENT's and eva's default; the card's example also
    # shows class token ++ patch mean (1536), which none of them uses by default. Architecture name
    # vit_base_patch14_reg4_dinov2 and the MLP width (mlp_ratio 2.66667*2, DINOv2's SwiGLU rule) are recollection:
    # the repo's config.json (which the references read) overrides both here too.
    "h0-mini": TimmArch("vit_base_patch14_reg4_dinov2", {"img_size": 224, "init_values": 1e-5, "num_classes": 0,
                                                         "global_pool": "", "mlp_ratio": 2.66667 * 2, **SWIGLU},
                        "cls"),
    # Kaiko.ai ViT-B/8 (arXiv:2404.15217): kaiko-ai/towards_large_pathology_fms hubconf.py vitb8 =
    # timm vit_base_patch8_224, dynamic_img_size True, num_classes 0; the same weights in timm format at
    # hf-hub:1aurent/vit_base_patch8_224.kaiko_ai_towards_large_pathology_fms (TRIDENT KaikoB8InferenceEncoder).
    # Pooling: the class token (model(x) there; HEST KaikoBase8InferenceEncoder: forward_features(x)[:, 0]).
    "kaiko-vitb8": TimmArch("vit_base_patch8_224", {"img_size": 224, "num_classes": 0, "dynamic_img_size": True},
                            "cls"),
    # Lunit DINO ViT-S/8 (Kang et al., CVPR 2023, arXiv:2212.04690): timm vit_small_patch8_224 (TRIDENT
    # LunitS8InferenceEncoder, hf-hub:1aurent/vit_small_patch8_224.lunit_dino; eva lunit.py lunit_vits8);
    # the class token, as model(x) with num_classes 0.
    "lunit-s8": TimmArch("vit_small_patch8_224", {"img_size": 224, "num_classes": 0}, "cls"),
    # CLS-only Virchow / Virchow2 (1280-d): output[:, 0], the return_cls=True option of HEST's and TRIDENT's
    # Virchow/Virchow2InferenceEncoder (the card's embedding is that class token ++ the patch-token mean).
    "virchow-cls": TimmArch("vit_huge_patch14_224", _VIRCHOW, "cls"),
    "virchow2-cls": TimmArch("vit_huge_patch14_224", {**_VIRCHOW, "reg_tokens": 4}, "cls"),
}

SPECS: tuple[EncoderSpec, ...] = (
    EncoderSpec(
        name="uni2-h", aliases=("uni2", "uni-v2", "univ2"), embed_dim=1536,
        # bf16: TRIDENT UNIv2InferenceEncoder (precision torch.bfloat16); HEST-Benchmark does not run it.
        # Transform: Resize(224) + CenterCrop(224), ImageNet mean/std (TRIDENT; eva replicate_evaluations.md).
        # Gated: the stored hf.co/MahmoodLab/UNI2-h card (extra_gated_prompt: access on approval).
        precision="bf16", gated=True, pooling="class token of forward_features (8 register tokens skipped)",
        weights="hf.co/MahmoodLab/UNI2-h (gated)", license="CC-BY-NC-ND-4.0",
        paper="Chen et al. 2024, UNI (Nat Med); UNI2-h model card (ViT-H/14-reg8, 200M+ images)",
        random_init=True, code="timm", source=_hub("MahmoodLab/UNI2-h"),
    ),
    EncoderSpec(
        name="hoptimus1", aliases=("h-optimus-1", "hoptimus-1"), embed_dim=1536,
        mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD,
        # fp16: TRIDENT HOptimus1InferenceEncoder; transform Resize(224) only (TRIDENT). Gated: hf.co discussions
        # "Access request pending" on bioptimus/H-optimus-1 (stored activity pages); PathBench-MIL README "Gated".
        precision="fp16", gated=True,
        pooling="class token of forward_features", weights="hf.co/bioptimus/H-optimus-1 (gated)",
        license="H-optimus-1 licence (non-commercial; see the model page)",  # licence text: recollection
        paper="Bioptimus 2025, H-optimus-1 (model card; github.com/bioptimus/releases)",
        random_init=True, code="timm", source=_hub("bioptimus/H-optimus-1", ("model.safetensors", "pytorch_model.bin")),
    ),
    EncoderSpec(
        name="h0-mini", aliases=("hoptimus-mini", "h0mini"), embed_dim=768,
        mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD,
        # fp16: HEST and TRIDENT H0MiniInferenceEncoder. Gated: HEST bench_config.yaml ("uncomment after
        # requesting the weights"), hf.co/bioptimus/H0-mini/discussions (access requests). Transform: HEST and
        # TRIDENT build it from the repo's pretrained_cfg (timm create_transform), which was not seen: its
        # crop_pct / interpolation are recollection (the 224 px patch taken as it is).
        precision="fp16", gated=True,
        pooling="class token (768), as HEST-Benchmark's H0-mini row; 4 register tokens not used",
        weights="hf.co/bioptimus/H0-mini (gated)", license="CC-BY-NC-ND-4.0",  # licence and paper: recollection
        paper="Filiot et al. 2025, Distilling foundation models for robust and efficient models in digital "
              "pathology (arXiv:2501.16239)",
        random_init=True, code="timm", source=_hub("bioptimus/H0-mini", ("model.safetensors", "pytorch_model.bin")),
    ),
    EncoderSpec(
        # mean/std 0.5 with Resize(224) + CenterCrop(224): towards_large_pathology_fms README, HEST, TRIDENT, eva
        # docs; fp32: HEST KaikoBase8InferenceEncoder, TRIDENT. Not gated (GitHub release / 1aurent hub).
        name="kaiko-vitb8", aliases=("kaiko-b8", "kaiko"), embed_dim=768, mean=HALF, std=HALF,
        precision="fp32", pooling="class token of forward_features",
        weights="hf.co/1aurent/vit_base_patch8_224.kaiko_ai_towards_large_pathology_fms",
        license="Kaiko Non-Commercial Public License (towards_large_pathology_fms LICENSE)",
        paper="Aben et al. 2024, Towards large-scale training of pathology foundation models (arXiv:2404.15217)",
        random_init=True, code="timm",
        source=_hub("1aurent/vit_base_patch8_224.kaiko_ai_towards_large_pathology_fms",
                    ("model.safetensors", "pytorch_model.bin")),
    ),
    EncoderSpec(
        name="lunit-s8", aliases=("lunit-dino-s8", "lunit"), embed_dim=384,
        # Lunit's training normalisation: eva lunit.py (citing lunit-io/benchmark-ssl-pathology releases) and eva
        # replicate_evaluations.md; fp32: TRIDENT. The 1aurent config.json's crop_pct / interpolation, which
        # TRIDENT's resolve_model_data_config reads, were not seen (recollection: plain 224 px, no crop).
        mean=(0.70322989, 0.53606487, 0.66096631), std=(0.21716536, 0.26081574, 0.20723464),
        precision="fp32", pooling="class token of forward_features",
        weights="hf.co/1aurent/vit_small_patch8_224.lunit_dino",
        license="lunit-non-commercial (the hf.co/1aurent/vit_small_patch8_224.lunit_dino page)",
        paper="Kang et al. 2023, Benchmarking self-supervised learning on diverse pathology datasets (CVPR)",
        random_init=True, code="timm",
        source=_hub("1aurent/vit_small_patch8_224.lunit_dino", ("model.safetensors", "pytorch_model.bin")),
    ),
    # Precision as stbench's virchow / virchow2, HEST's choices (Virchow fp32, Virchow2 fp16); TRIDENT runs both in
    # fp16. Transform: Resize(224, bicubic) of the card, as virchow / virchow2.
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
