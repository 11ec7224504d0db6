"""Extraction into the store: streamed in chunks, computed once, atomic per sample, resumable."""

import numpy as np
import pytest

from stbench.extract import ensure_embeddings
from stbench.stores import Store, read_embeddings
from stbench.tasks import PatchFile, open_task
from tests._tiny import make_tiny_task, tiny_encoder


@pytest.fixture
def task(tmp_path):
    make_tiny_task(tmp_path / "data")
    return open_task("tiny", tmp_path / "data")


def test_embeddings_are_streamed_in_chunks_and_stored_with_provenance(task, tmp_path, monkeypatch):
    sizes = []
    original = PatchFile.iter_chunks

    def spy(self, size, start=0):
        for off, chunk in original(self, size, start):
            sizes.append(len(chunk))
            yield off, chunk

    monkeypatch.setattr(PatchFile, "iter_chunks", spy)
    with Store(tmp_path / "store") as st:
        fp, paths = ensure_embeddings(task, tiny_encoder(), st, batch_size=10, device="cpu")
        assert max(sizes) == 10 and sum(sizes) == 3 * 24
        emb = read_embeddings(paths["S1"])
        assert emb.embeddings.shape == (24, 8) and emb.barcodes[0] == "S1-0"
        assert emb.attrs["weights_fingerprint"] == fp and fp.startswith("sha256:")
        assert emb.attrs["encoder"] == "test-tiny-cnn" and "stbench_version" in emb.attrs
        assert st.catalog.embedding("TINY", "test-tiny-cnn", fp, "S1")["n_patches"] == 24


def test_embeddings_are_computed_once_and_reused_without_loading_the_model(task, tmp_path):
    with Store(tmp_path / "store") as st:
        _, first = ensure_embeddings(task, tiny_encoder(), st, device="cpu")
        enc = tiny_encoder()
        object.__setattr__(enc, "loader", lambda w: (_ for _ in ()).throw(AssertionError("model loaded again")))
        assert enc.fingerprint() == tiny_encoder().fingerprint()
        _, second = ensure_embeddings(task, enc, st, device="cpu")
        assert first == second


def test_a_killed_extraction_registers_nothing_half_written_and_the_rerun_resumes(task, tmp_path):
    store_dir = tmp_path / "store"
    with Store(store_dir) as st:
        # 24 patches per sample in chunks of 10: the 5th forward call is inside the second sample.
        with pytest.raises(KeyboardInterrupt):
            ensure_embeddings(task, tiny_encoder(fail_after=4), st, batch_size=10, device="cpu")
        rows = st.catalog.con.execute("SELECT sample_id FROM embeddings ORDER BY sample_id").fetchall()
        assert rows == [("S0",)]
        files = sorted(p.name for p in store_dir.rglob("*")
                       if p.is_file() and p.suffix not in (".duckdb", ".lock") and "wal" not in p.name)
        assert files == ["S0.h5"]  # no temporary or partial file left behind
        enc = tiny_encoder()
        _, paths = ensure_embeddings(task, enc, st, batch_size=10, device="cpu")
        assert sorted(paths) == ["S0", "S1", "S2"]


def test_a_changed_patch_file_is_re_embedded(task, tmp_path):
    import h5py

    with Store(tmp_path / "store") as st:
        _, before = ensure_embeddings(task, tiny_encoder(), st, device="cpu")
        with h5py.File(task.samples["S2"].patches, "r+") as h5:
            h5["coords"][0] = [999, 999]
        enc = tiny_encoder()
        calls = []
        inner = enc.loader
        object.__setattr__(enc, "loader", lambda w: calls.append(1) or inner(w))
        _, after = ensure_embeddings(task, enc, st, device="cpu")
        assert calls == [1]
        assert read_embeddings(after["S2"]).coords[0].tolist() == [999, 999]
        np.testing.assert_array_equal(read_embeddings(after["S0"]).embeddings, read_embeddings(before["S0"]).embeddings)


def test_pipeline_batch_sizes_and_results_do_not_depend_on_them(task):
    from stbench.extract import CPU_FORWARD_BATCH, prepare_pipeline

    loaded = tiny_encoder().load()
    default = prepare_pipeline(loaded, device="cpu")
    assert (default.read_batch, default.forward_batch) == (128, CPU_FORWARD_BATCH)
    fixed = prepare_pipeline(loaded, device="cpu", batch_size=5)
    assert (fixed.read_batch, fixed.forward_batch) == (5, 5)
    with PatchFile(task.samples["S0"].patches) as pf:
        images = next(pf.iter_chunks(24))[1]
    np.testing.assert_allclose(default(images), fixed(images), rtol=1e-5, atol=1e-6)
    assert fixed(images).shape == (24, 8)


# -- what the model is fed: the reference transforms (issue 13) ---------------------------------------------


class _Recorder:
    """Stands in for a model: records its input, returns zeros of the spec's embedding length."""

    def __init__(self, dim):
        self.dim, self.seen = dim, []

    def __call__(self, x):
        import torch

        self.seen.append(x.clone())
        return torch.zeros(len(x), self.dim)


def _fed(name, images):
    """The tensor the extraction pipeline hands encoder ``name``'s model for uint8 ``images``."""
    import torch

    from stbench.encoders import LoadedEncoder, get_encoder
    from stbench.extract import Pipeline

    spec = get_encoder(name).spec
    model = _Recorder(spec.embed_dim)
    Pipeline(LoadedEncoder(spec, model, "test"), "cpu", len(images), 3)(images)
    return torch.cat(model.seen), spec


def _reference(images, spec, size, crop):
    """torchvision's transforms of PIL images, as HEST-Benchmark and the model cards run them."""
    import torch
    from PIL import Image
    from torchvision import transforms

    t = transforms.Compose([transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
                            transforms.CenterCrop(crop), transforms.ToTensor(),
                            transforms.Normalize(mean=spec.mean, std=spec.std)])
    return torch.stack([t(Image.fromarray(img)) for img in images])


def _patches(task, n=5):
    with PatchFile(task.samples["S1"].patches) as pf:
        return next(pf.iter_chunks(n))[1]


def test_gigapath_is_fed_its_cards_256_bicubic_resize_then_224_centre_crop(task):
    images = _patches(task)
    x, spec = _fed("gigapath", images)
    expected = _reference(images, spec, 256, 224)
    assert x.shape == expected.shape == (5, 3, 224, 224)
    np.testing.assert_allclose(x.numpy(), expected.numpy(), rtol=0, atol=1e-5)


def test_conch_is_fed_pil_bicubic_448_as_its_own_transform(task):
    images = _patches(task)
    x, spec = _fed("conch", images)
    expected = _reference(images, spec, 448, 448)
    assert x.shape == expected.shape == (5, 3, 448, 448)
    np.testing.assert_allclose(x.numpy(), expected.numpy(), rtol=0, atol=1e-5)


def test_encoders_without_a_reference_resample_keep_the_fast_path(task):
    from stbench.encoders import LoadedEncoder, get_encoder
    from stbench.extract import Pipeline

    images = _patches(task)
    for name in ("uni", "virchow", "hoptimus0", "resnet50", "efficientnet-lite0"):
        spec = get_encoder(name).spec
        pipeline = Pipeline(LoadedEncoder(spec, _Recorder(spec.embed_dim), "test"), "cpu", 5, 5)
        assert pipeline.resample(images) is images  # no per-patch CPU work: resized (if at all) on the device
    x, spec = _fed("uni", images)
    mean, std = np.array(spec.mean)[:, None, None], np.array(spec.std)[:, None, None]
    plain = (images.transpose(0, 3, 1, 2) / 255.0 - mean) / std
    np.testing.assert_allclose(x.numpy(), plain, rtol=0, atol=1e-5)
