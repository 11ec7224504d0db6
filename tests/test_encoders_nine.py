"""The foundation-model encoders, loaded exactly as a user loads them, offline, from reduced-depth stand-ins.

For every entry of ``tests/_reduced.py::REDUCED``: weights of the same architecture at depth 1 are laid out
as the hub repository (or a local file) would hold them, ``get_encoder(name).load()`` builds the model, and
real HER2+ patches go through ``stbench.extract.embed_batch``. Checked: shape, dtype, determinism, batch
independence, the fingerprint, and the pooling against an independent computation. For every entry of
``FULL_SIZE``: the full architecture on the meta device has the spec's parameter count and embedding length.
Then how weights are found (``--weights``, the user config) and what users see when they are not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub.errors import GatedRepoError

from stbench.encoders import compute_tag, encoders, get_encoder
from stbench.encoders.weights import file_fingerprint
from stbench.errors import WeightsError
from stbench.extract import embed_batch
from stbench.tasks import PatchFile, open_task
from stbench.testing import COMMIT, use_offline_hub, write_hub_repo
from tests._reduced import FULL_SIZE, REDUCED, TESTED_ELSEWHERE, timm_config, torch_bytes

torch = pytest.importorskip("torch")

HUB = sorted(n for n, r in REDUCED.items() if r.provides == "hub")


# -- fixtures ------------------------------------------------------------------------------------------------
@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], Path]:
    """``offline(cache)``: HF_HUB_OFFLINE=1 with ``cache`` as the hub cache (see stbench.testing.use_offline_hub)."""
    return lambda cache: use_offline_hub(monkeypatch, cache)


@pytest.fixture(scope="module")
def reduced_repo(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Path]]:
    """``reduced_repo(name) -> (cache or folder, snapshot or weight file)``, written once per module."""
    root = tmp_path_factory.mktemp("reduced")
    written: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in written:
            where = root / ("hub" if REDUCED[name].provides == "hub" else name)
            where.mkdir(exist_ok=True)
            written[name] = (where, REDUCED[name].write(where))
        return written[name]

    return get


@pytest.fixture(scope="module")
def patches(her2st_task_root: Path) -> np.ndarray:
    """Four real HER2+ patches (224 px at 0.5 um/px, uint8), spread over one section."""
    task = open_task("HER2ST", her2st_task_root)
    with PatchFile(task.samples[sorted(task.samples)[0]].patches) as pf:
        picks = np.linspace(0, len(pf) - 1, 4).astype(int)
        blocks = [next(pf.iter_chunks(1, start=int(i)))[1] for i in picks]
    return np.ascontiguousarray(np.concatenate(blocks))


def _normalise(patches: np.ndarray, spec) -> torch.Tensor:  # noqa: ANN001
    """The spec's preprocessing written out: 224 px patches as they are, or the model card's torchvision
    Resize(resize_to or input_size, the spec's filter) + CenterCrop(input_size) of PIL images (GigaPath: bicubic;
    CONCH v1.5: bilinear)."""
    if spec.resize_to or spec.input_size != patches.shape[1]:
        from PIL import Image
        from torchvision import transforms

        mode = transforms.InterpolationMode(spec.interpolation)
        t = transforms.Compose([transforms.Resize(spec.resize_to or spec.input_size, interpolation=mode),
                                transforms.CenterCrop(spec.input_size), transforms.ToTensor(),
                                transforms.Normalize(spec.mean, spec.std)])
        return torch.stack([t(Image.fromarray(p)) for p in patches])
    assert patches.shape[1:3] == (spec.input_size, spec.input_size)
    x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)


def _load(name: str, reduced_repo, offline):  # noqa: ANN001, ANN202
    where, written = reduced_repo(name)
    if REDUCED[name].provides == "hub":
        offline(where)
        return get_encoder(name).load()  # exactly the user's path: no --weights, the hub cache
    offline(where / "empty-hub")
    return get_encoder(name).load(written)


# -- every encoder through the real path ---------------------------------------------------------------------
@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(REDUCED))
def test_reduced_model_embeds_real_patches(name: str, reduced_repo, offline,  # noqa: ANN001
                                           patches: np.ndarray) -> None:
    loaded = _load(name, reduced_repo, offline)
    spec = loaded.spec
    if REDUCED[name].provides == "hub":
        # the hub revision, and the precision / transform where they differ from stbench's earlier runs
        assert loaded.fingerprint == f"hub:{spec.source.repo_id}@{COMMIT}{compute_tag(spec)}"
        assert loaded.origin.startswith("hub")
    else:
        assert loaded.fingerprint.startswith("sha256:") and loaded.origin == "--weights"
    tensors = [*loaded.model.parameters(), *loaded.model.buffers()]
    assert not any(t.is_meta for t in tensors)
    assert all(t.dtype == torch.float32 for t in tensors if t.is_floating_point())  # fp16 files: kept in fp32

    a = embed_batch(loaded, patches)
    assert a.shape == (len(patches), spec.embed_dim) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, embed_batch(loaded, patches))  # deterministic
    one = embed_batch(loaded, patches[2:3])[0]
    np.testing.assert_allclose(one, a[2], rtol=1e-4, atol=1e-4 * np.abs(a).max())  # batch composition: no effect
    assert np.abs(a[0] - a[1]).max() > 1e-3  # different patches, different embeddings

    with torch.inference_mode():  # the specified pooling, computed another way from the model's parts
        expected = REDUCED[name].reference(loaded.model, _normalise(patches, spec)).numpy()
    np.testing.assert_allclose(a, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_full_size_architecture_on_meta(name: str) -> None:
    entry, spec = FULL_SIZE[name], get_encoder(name).spec
    with torch.device("meta"):
        model = entry.build()
        out = model(torch.empty(2, 3, spec.input_size, spec.input_size))
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / entry.params - 1) <= entry.rel_tol, f"{name}: {n / 1e6:.2f} M params, spec {entry.params / 1e6:.1f} M"
    assert tuple(out.shape) == (2, spec.embed_dim)


def _timm_names() -> list[str]:
    from stbench.encoders import timm_models, timm_recent

    return sorted(({*timm_models.ARCHS, *timm_recent.ARCHS}) & set(REDUCED))


@pytest.mark.parametrize("name", _timm_names())
def test_model_card_kwargs_alone_fit_the_weights(name: str, reduced_repo, offline, tmp_path: Path) -> None:  # noqa: ANN001
    """The plugin's own kwargs, with only the depth from a config, load the weights strictly: a kwarg missing
    from the plugin's table (reg_tokens, init_values, the SwiGLU layers) cannot hide behind the repo config."""
    cache, snapshot = reduced_repo(name)
    offline(cache)
    hub = get_encoder(name).load()
    config = json.loads((snapshot / "config.json").read_text())
    depth_only = {k: v for k, v in config["model_args"].items() if k in ("depth", "layers")}
    folder = tmp_path / "weights"
    folder.mkdir()
    weights = next(p for p in snapshot.iterdir() if p.name != "config.json")
    (folder / weights.name).write_bytes(weights.read_bytes())
    (folder / "config.json").write_text(json.dumps({"model_args": depth_only}))
    local = get_encoder(name).load(folder)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(local.model(x), hub.model(x))


def test_every_builtin_encoder_is_covered() -> None:
    builtin = {n for n in encoders.names() if encoders.origin(n).startswith("stbench.encoders.")}
    covered = set(REDUCED) & set(FULL_SIZE) | set(TESTED_ELSEWHERE)
    assert builtin - covered == set(), "add an entry to tests/_reduced.py REDUCED and FULL_SIZE"
    assert {"resnet50", "uni", "virchow", "virchow2", "gigapath", "hoptimus0"} <= set(REDUCED) & builtin


# -- where weights come from ---------------------------------------------------------------------------------
def _perturbed_copy(snapshot: Path, folder: Path) -> Path:
    """config.json + a pytorch_model.bin whose weights differ from the hub's."""
    folder.mkdir()
    state = torch.load(snapshot / "pytorch_model.bin", weights_only=True)
    (folder / "pytorch_model.bin").write_bytes(torch_bytes({k: v * 1.5 if v.is_floating_point() else v
                                                            for k, v in state.items()}))
    (folder / "config.json").write_bytes((snapshot / "config.json").read_bytes())
    return folder / "pytorch_model.bin"


@pytest.mark.parametrize("form", ["file", "folder"])
def test_weights_path_wins_over_the_hub(form: str, reduced_repo, offline, tmp_path: Path) -> None:  # noqa: ANN001
    cache, snapshot = reduced_repo("uni")
    offline(cache)
    hub = get_encoder("uni").load()
    weights = _perturbed_copy(snapshot, tmp_path / "local")
    arg = weights if form == "file" else weights.parent  # a file picks up the config.json beside it
    local = get_encoder("uni").load(arg)
    assert local.origin == "--weights" and local.weights_path == str(weights)
    assert local.fingerprint == file_fingerprint(weights) and local.fingerprint.startswith("sha256:")
    assert get_encoder("uni").fingerprint(arg) == local.fingerprint != hub.fingerprint
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert not torch.allclose(local.model(x), hub.model(x))  # the other weights were really used


def test_user_config_wins_over_the_hub_and_loses_to_weights(reduced_repo, offline, tmp_path: Path,  # noqa: ANN001
                                                           no_user_config: Path) -> None:
    cache, snapshot = reduced_repo("virchow2")
    offline(cache)
    weights = _perturbed_copy(snapshot, tmp_path / "mine")
    no_user_config.write_text(f'[weights]\nvirchow2 = "{weights}"\n')
    enc = get_encoder("virchow-v2")  # an alias
    assert enc.available() == "config"
    loaded = enc.load()
    assert loaded.origin == f"config {no_user_config}" and loaded.fingerprint == file_fingerprint(weights)
    override = enc.load(snapshot)  # --weights beats the config
    assert override.origin == "--weights" and override.fingerprint == file_fingerprint(snapshot / "pytorch_model.bin")


def test_weights_without_config_must_fit_the_model_card(reduced_repo, offline, tmp_path: Path) -> None:  # noqa: ANN001
    """A depth-1 file with no config.json is checked against the full model card: one line, not a torch dump."""
    _, snapshot = reduced_repo("uni")
    offline(tmp_path / "empty")
    lone = tmp_path / "uni.bin"
    lone.write_bytes((snapshot / "pytorch_model.bin").read_bytes())
    with pytest.raises(WeightsError) as err:
        get_encoder("uni").load(lone)
    msg = str(err.value)
    assert "\n" not in msg and "does not fit vit_large_patch16_224" in msg and "missing" in msg and "blocks.1." in msg


# -- what users see when weights cannot be had ---------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in HUB if get_encoder(n).spec.gated])
def test_gated_repo_says_the_three_ways(name: str, monkeypatch: pytest.MonkeyPatch, no_user_config: Path) -> None:
    import httpx2
    import huggingface_hub

    def gated(*args: object, **kwargs: object) -> str:
        url = "https://huggingface.co/api/models/x/revision/main"
        raise GatedRepoError("403 Client Error. Cannot access gated repo.",
                             response=httpx2.Response(403, request=httpx2.Request("GET", url)))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)  # what stbench.encoders.weights calls
    spec = get_encoder(name).spec
    with pytest.raises(WeightsError) as err:
        get_encoder(name).load()
    msg = str(err.value)
    assert "\n" not in msg and spec.source.page in msg and spec.source.page.startswith("https://huggingface.co/")
    assert "HF_TOKEN" in msg and "hf auth login" in msg  # way 1: access + token
    assert "--weights PATH" in msg  # way 2
    assert f'{name} = "PATH"' in msg and "[weights]" in msg and str(no_user_config) in msg  # way 3


@pytest.mark.parametrize("name", HUB)
def test_offline_with_empty_cache(name: str, offline, tmp_path: Path) -> None:  # noqa: ANN001
    offline(tmp_path / "empty-cache")
    enc = get_encoder(name)
    assert enc.available() is None
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE") as err:
        enc.load()
    assert "\n" not in str(err.value) and "--weights PATH" in str(err.value)


# -- config.json: how it may and may not change the model ----------------------------------------------------
def test_config_that_changes_the_embedding_length_is_refused(offline, tmp_path: Path) -> None:  # noqa: ANN001
    cache = offline(tmp_path / "hub")
    config = timm_config("vit_large_patch16_224", {"embed_dim": 512, "num_heads": 8, "depth": 1})
    snapshot = write_hub_repo(cache, "MahmoodLab/UNI", {"config.json": config, "pytorch_model.bin": b"unused"})
    with pytest.raises(WeightsError) as err:
        get_encoder("uni").load()
    msg = str(err.value)
    assert str(snapshot / "config.json") in msg and "512-d" in msg and "1024-d" in msg and "\n" not in msg


def test_config_of_another_architecture_is_refused(offline, tmp_path: Path) -> None:  # noqa: ANN001
    cache = offline(tmp_path / "hub")
    write_hub_repo(cache, "bioptimus/H-optimus-0", {"config.json": timm_config("vit_base_patch16_224", {}),
                                                    "pytorch_model.bin": b"unused"})
    with pytest.raises(WeightsError, match="describes a vit_base_patch16_224 but this encoder is a "
                                           "vit_giant_patch14_reg4_dinov2"):
        get_encoder("hoptimus0").load()


def test_model_args_merge_layer_names_and_pinned_keys() -> None:
    from timm.layers import SwiGLUPacked

    from stbench.encoders.timm_models import ARCHS, model_args

    args = model_args(ARCHS["virchow2"], {"model_args": {"depth": 2, "global_pool": "avg", "num_classes": 1000,
                                                         "mlp_layer": "timm.layers.SwiGLUPacked"}})
    assert args["depth"] == 2 and args["reg_tokens"] == 4  # config overrides, model card fills in
    assert args["global_pool"] == "" and args["num_classes"] == 0  # pooling-defining keys stay the spec's
    assert args["mlp_layer"] is SwiGLUPacked and args["act_layer"] is torch.nn.SiLU
    with pytest.raises(WeightsError, match="'os.system' is not a layer stbench knows"):
        model_args(ARCHS["uni"], {"model_args": {"act_layer": "os.system"}})
    assert model_args(ARCHS["uni"], {"model_args": {"act_layer": "gelu"}})["act_layer"] == "gelu"  # timm's names


# -- listing -------------------------------------------------------------------------------------------------
def test_list_encoders_json_shows_all_with_dims_and_imports_no_torch(tmp_path: Path) -> None:
    code = (
        "import sys, json; from click.testing import CliRunner; from stbench.cli import cli; "
        "r = CliRunner().invoke(cli, ['list', 'encoders', '--json']); assert r.exit_code == 0, r.output; "
        "heavy = [m for m in ('torch', 'timm', 'transformers') if m in sys.modules]; assert not heavy, heavy; "
        "print(r.output)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "STBENCH_CONFIG": str(tmp_path / "none.toml")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    for name in {*REDUCED, *FULL_SIZE}:
        spec = get_encoder(name).spec
        assert rows[name]["dim"] == spec.embed_dim and rows[name]["weights here"] == "no"
        assert rows[name]["gated"] == ("yes" if spec.gated else "no") and rows[name]["licence"] == spec.license
    assert rows["virchow2"]["dim"] == 2560 and rows["hoptimus0"]["gated"] == "no" and rows["uni"]["gated"] == "yes"
