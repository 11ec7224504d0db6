"""Encoders as HEST-Benchmark runs them (issue 13): precision, the fingerprint that keys their embeddings, and
CHIEF's CTransPath as an encoder of its own.

Expected precisions are HEST-Benchmark's model zoo (mahmoodlab/HEST, src/hest/bench/cpath_model_zoo/
inference_models.py: each encoder's ``precision = torch.float16 | torch.float32``), written out here.
The transforms themselves are checked against torchvision in tests/test_extract.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from stbench.cli import cli
from stbench.encoders import PRECISIONS, compute_tag, get_encoder
from stbench.encoders.weights import encoder_label, file_fingerprint
from stbench.errors import StbenchError

HEST_PRECISION = {"resnet50": "fp32", "ctranspath": "fp32", "phikon": "fp32", "conch": "fp32", "uni": "fp16",
                  "gigapath": "fp32", "virchow": "fp32", "virchow2": "fp16", "hoptimus0": "fp16"}


@pytest.mark.parametrize("name", sorted(HEST_PRECISION))
def test_default_precision_is_hest_benchmarks(name: str) -> None:
    assert get_encoder(name).spec.precision == HEST_PRECISION[name]


def test_fingerprints_of_unchanged_settings_are_kept_and_changed_ones_are_tagged() -> None:
    # what stbench ran before issue 13 keeps its key: these encoders' settings did not change
    for name in ("efficientnet-lite0", "resnet50", "ctranspath", "phikon", "uni", "virchow2", "hoptimus0"):
        assert compute_tag(get_encoder(name).spec) == "", name
    # GigaPath (fp16 -> fp32, resize-crop), Virchow (fp16 -> fp32), CONCH (PIL resampling) are keyed apart
    assert compute_tag(get_encoder("gigapath").spec) == "+fp32+pil256crop224"
    assert compute_tag(get_encoder("virchow").spec) == "+fp32"
    assert compute_tag(get_encoder("conch").spec) == "+pil448"
    # the fp16 run of Virchow is what stbench computed before, so it finds those embeddings; GigaPath's is not
    assert compute_tag(get_encoder("virchow", precision="fp16").spec) == ""
    assert compute_tag(get_encoder("gigapath", precision="fp16").spec) == "+pil256crop224"


def test_the_resize_filter_is_part_of_the_key() -> None:
    import dataclasses

    spec = get_encoder("conch").spec
    assert spec.interpolation == "bicubic" and compute_tag(spec) == "+pil448"
    assert compute_tag(dataclasses.replace(spec, interpolation="bilinear")) == "+pil448-bilinear"
    v15 = get_encoder("conch-v1.5").spec  # PIL bilinear to 448, as TRIDENT's and CLAM's transforms
    assert v15.interpolation == "bilinear" and compute_tag(v15).endswith("+pil448-bilinear")


@pytest.mark.parametrize("name", sorted(HEST_PRECISION))
def test_each_precision_is_its_own_key(name: str) -> None:
    tags = {p: compute_tag(get_encoder(name, precision=p).spec) for p in PRECISIONS}
    assert len(set(tags.values())) == len(PRECISIONS), tags
    assert get_encoder(name, precision="bf16").spec.precision == "bf16"
    assert get_encoder(name, precision=None) == get_encoder(name)


def test_precision_changes_the_fingerprint_of_real_and_random_weights() -> None:
    from stbench.encoders.efficientnet_lite import SPEC

    effnet = get_encoder("efficientnet-lite0")
    weights = file_fingerprint(Path(SPEC.source.local()))
    assert effnet.fingerprint() == weights  # unchanged by issue 13
    assert effnet.with_precision("fp16").fingerprint() == weights + "+fp16"
    assert effnet.with_precision("fp16").load().fingerprint == weights + "+fp16"  # what the store keys
    random = get_encoder("resnet50", precision="bf16").fingerprint("random:2")
    assert random.startswith("random:seed2-timm") and random.endswith("+bf16")
    assert encoder_label("resnet50", random) == "resnet50 (random weights)"
    with pytest.raises(StbenchError, match="--precision must be one of fp32, fp16, bf16, not 'fp8'"):
        get_encoder("uni", precision="fp8")


# -- CTransPath and CHIEF's CTransPath ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_ctranspath_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two checkpoints of the CTransPath architecture with the same keys and other values, as the authors'
    ctranspath.pth and CHIEF's CHIEF_CTransPath.pth are (random full-size networks, fp16 to write less)."""
    import torch

    from stbench.encoders.ctranspath import build_ctranspath

    folder = tmp_path_factory.mktemp("ctranspath")
    paths = []
    for seed, name in ((0, "ctranspath.pth"), (1, "CHIEF_CTransPath.pth")):
        torch.manual_seed(seed)
        state = build_ctranspath(init=True).state_dict()
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        torch.save({"model": state}, folder / name)
        paths.append(folder / name)
    return paths[0], paths[1]


def test_ctranspath_chief_is_its_own_encoder_with_its_own_fingerprint(two_ctranspath_files, no_user_config) -> None:
    import torch

    original, chief = two_ctranspath_files
    enc, chief_enc = get_encoder("ctranspath"), get_encoder("chief-ctranspath")
    assert chief_enc.name == "ctranspath-chief" and chief_enc.spec.embed_dim == enc.spec.embed_dim == 768
    assert chief_enc.spec.source.files == ("CHIEF_CTransPath.pth",)
    assert set(chief_enc.spec.known_sha256).isdisjoint(enc.spec.known_sha256) and enc.spec.known_sha256
    a, b = enc.load(original), chief_enc.load(chief)  # the same loader: same keys, strict
    assert a.fingerprint == file_fingerprint(original) != b.fingerprint == file_fingerprint(chief)
    x = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        assert a.model(x).shape == b.model(x).shape == (2, 768)
        assert not torch.allclose(a.model(x), b.model(x))

    # both names' rows show the fingerprint of the weights found for them
    no_user_config.write_text(f'[weights]\nctranspath = "{original}"\nctranspath-chief = "{chief}"\n')
    result = CliRunner().invoke(cli, ["list", "encoders", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["ctranspath"]["fingerprint"] == a.fingerprint
    assert rows["ctranspath-chief"]["fingerprint"] == b.fingerprint
    assert rows["gigapath"]["input"] == "224 (pil bicubic 256, crop 224)" and rows["virchow"]["precision"] == "fp32"


def test_a_known_file_of_the_other_name_is_warned_about(two_ctranspath_files, monkeypatch, caplog) -> None:
    """Nothing in the files tells them apart but their bytes: the published sha256 of each is on its spec."""
    import dataclasses
    import hashlib

    from stbench.encoders import _base

    original, chief = two_ctranspath_files
    digest = hashlib.sha256(chief.read_bytes()).hexdigest()  # stands in for CHIEF's published file
    registered = [e for e in _base.list_encoders()]
    swapped = [dataclasses.replace(e, spec=dataclasses.replace(e.spec, known_sha256=(digest,)))
               if e.name == "ctranspath-chief" else e for e in registered]
    monkeypatch.setattr(_base, "list_encoders", lambda: swapped)
    monkeypatch.setattr(_base, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="stbench"):
        get_encoder("ctranspath").fingerprint(original)
        assert not caplog.records  # an unknown file: nothing to say
        get_encoder("ctranspath-chief").fingerprint(chief)
        assert not caplog.records  # the right name
        get_encoder("ctranspath").fingerprint(chief)
        get_encoder("ctranspath").fingerprint(chief)  # once per process
    (record,) = caplog.records
    assert "is the published weight file of ctranspath-chief" in record.getMessage()
    assert "run it as --encoder ctranspath-chief" in record.getMessage()


def test_the_known_digests_are_the_published_files() -> None:
    # sha256 of the authors' ctranspath.pth and of CHIEF's CHIEF_CTransPath.pth (as STAMP checks them)
    assert get_encoder("ctranspath").spec.known_sha256 == (
        "7c998680060c8743551a412583fac689db43cec07053b72dfec6dcd810113539",)
    assert get_encoder("ctranspath-chief").spec.known_sha256 == (
        "1646f23001214f74cf432ef0e80b808ee6605143802ae6ed53a87564ddc4924a",)
