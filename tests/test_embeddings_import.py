"""`bench embeddings import`: embeddings computed elsewhere, refused unless they fit the task exactly, then run
by `bench run` with the numbers of the embeddings they were exported from, without loading any model."""

import re

import h5py
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from stbench.cli import cli
from stbench.encoders import Encoder, encoders
from stbench.errors import StbenchError
from stbench.protocol import Protocol
from stbench.runner import ReducerChoice, run_task
from stbench.stores import Store, read_embeddings
from stbench.tasks import open_task
from tests._tiny import make_tiny_task, tiny_encoder

ENCODER = "test-tiny-cnn"  # registered by the fixture below; 8-d
FORMATS = ("hest", "parquet-list", "parquet-columns", "npy", "npz")


@pytest.fixture(scope="module", autouse=True)
def _tiny_plugin():
    if ENCODER not in encoders:
        encoders.register(tiny_encoder(), origin="tests")


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """A tiny task, its embeddings extracted with the tiny encoder and identity/pca run on them:
    (data root, {sample: (embeddings, barcodes, coords)}, {reducer: per-gene PCC by (fold, gene)})."""
    base = tmp_path_factory.mktemp("extracted")
    root = base / "data"
    make_tiny_task(root)
    task = open_task("tiny", root)
    with Store(base / "store") as st:
        results = run_task(task, ENCODER, [ReducerChoice("identity"), ReducerChoice("pca")], Protocol.from_options(),
                           st, device="cpu")
        fp = results[0].weights_fingerprint
        vectors = {}
        for sid, rel in st.catalog.embedding_paths(task.name, ENCODER, fp).items():
            emb = read_embeddings(st.resolve(rel))
            vectors[sid] = (emb.embeddings, emb.barcodes, emb.coords)
        pccs = {r.reducer: _pccs(st, r.run_id) for r in results}
    return root, vectors, pccs


def _pccs(store, run_id):
    rows = store.catalog.gene_table(run_ids=[run_id]).sort("fold", "gene")
    return dict(zip(zip(rows["fold"], rows["gene"]), rows["pcc"]))


def export(vectors, folder, fmt, *, seed=0, edit=None):
    """Write each sample's embeddings into ``folder`` as another tool would, rows shuffled. ``edit(sid, emb,
    barcodes) -> (emb, barcodes)`` changes them first (to break them)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for sid, (emb, barcodes, coords) in vectors.items():
        order = rng.permutation(len(emb))
        emb, barcodes, coords = emb[order], [barcodes[i] for i in order], coords[order]
        if edit is not None:
            emb, barcodes = edit(sid, emb, barcodes)
        if fmt == "hest":  # as HEST-Benchmark's embed_tiles writes them: barcodes (N, 1) bytes
            with h5py.File(folder / f"{sid}.h5", "w") as h5:
                h5["embeddings"] = emb
                h5["barcodes"] = np.asarray(barcodes, dtype="S")[:, None]
                h5["coords"] = coords[: len(emb)] if len(coords) >= len(emb) else np.zeros((len(emb), 2))
        elif fmt == "parquet-list":
            pl.DataFrame({"barcode": barcodes, "embedding": [list(map(float, row)) for row in emb]}).write_parquet(
                folder / f"{sid}.parquet")
        elif fmt == "parquet-columns":
            frame = {"barcode": barcodes} | {f"f{j}": emb[:, j] for j in range(emb.shape[1])}
            pl.DataFrame(frame).write_parquet(folder / f"{sid}.parquet")
        elif fmt == "npy":
            np.save(folder / f"{sid}.npy", emb)
            (folder / f"{sid}.barcodes.txt").write_text("".join(f"{b}\n" for b in barcodes))
        else:
            np.savez(folder / f"{sid}.npz", embeddings=emb, barcodes=np.asarray(barcodes, dtype=str))
    return folder


def _import(root, store, folder, encoder="my-tiny", *args):
    return CliRunner().invoke(cli, ["embeddings", "import", "--task", "tiny", "--encoder", encoder, "--from",
                                    str(folder), "--data-root", str(root), "--store", str(store), *args])


def _run(root, store, encoder, *args, reducer="identity,pca"):
    return CliRunner().invoke(cli, ["run", "--task", "tiny", "--encoder", encoder, "--reducer", reducer,
                                    "--data-root", str(root), "--store", str(store), "--no-progress", "--device", "cpu",
                                    *args])


@pytest.fixture
def no_model(monkeypatch):
    """Any attempt to load an encoder's model fails the test."""
    def refuse(self, weights=None):
        raise AssertionError(f"{self.name}: a model was loaded")
    monkeypatch.setattr(Encoder, "load", refuse)


# -- the round trip ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_imported_embeddings_give_the_numbers_of_the_extracted_ones_without_a_model(extracted, tmp_path, fmt, no_model):
    root, vectors, expected = extracted
    folder = export(vectors, tmp_path / fmt, fmt, seed=len(fmt))
    store = tmp_path / "store"
    imported = _import(root, store, folder)
    assert imported.exit_code == 0, imported.output
    fp = re.search(r"imported:sha256:[0-9a-f]{16}", imported.output).group(0)
    result = _run(root, store, "my-tiny")
    assert result.exit_code == 0, result.output
    assert "my-tiny (imported)" in result.output and f"embeddings {fp}" in result.output
    with Store(store) as st:
        runs = st.catalog.summary().to_dicts()
        assert {r["weights_fingerprint"] for r in runs} == {fp} and {r["encoder"] for r in runs} == {"my-tiny"}
        for r in runs:
            got = _pccs(st, r["run_id"])
            assert got.keys() == expected[r["reducer"]].keys()
            np.testing.assert_allclose([got[k] for k in got], [expected[r["reducer"]][k] for k in got], atol=1e-6)
        # the files are stored in the patch files' barcode order, whatever order they came in
        for sid, rel in st.catalog.embedding_paths("TINY", "my-tiny", fp).items():
            emb = read_embeddings(st.resolve(rel))
            assert emb.barcodes == vectors[sid][1]
            np.testing.assert_array_equal(emb.embeddings, vectors[sid][0])


def test_a_registered_name_uses_imported_embeddings_with_weights_imported(extracted, tmp_path, no_model):
    root, vectors, expected = extracted
    store = tmp_path / "store"
    assert _import(root, store, export(vectors, tmp_path / "h", "hest"), ENCODER, "--format", "hest").exit_code == 0
    result = _run(root, store, ENCODER, "--weights", "imported")
    assert result.exit_code == 0, result.output
    assert f"{ENCODER} (imported)" in result.output
    with Store(store) as st:
        runs = st.catalog.summary().to_dicts()
        assert len(runs) == 2 and all(r["weights_fingerprint"].startswith("imported:sha256:") for r in runs)
        for r in runs:
            got = _pccs(st, r["run_id"])
            np.testing.assert_allclose([got[k] for k in got], [expected[r["reducer"]][k] for k in got], atol=1e-6)
    # without --weights imported the registered name means its model, which this test may not load
    plain = _run(root, store, ENCODER)
    assert plain.exit_code == 3 and "a model was loaded" in plain.output


def test_the_ray_executor_runs_imported_embeddings_too(extracted, tmp_path, no_model):
    pytest.importorskip("ray", reason='ray is not installed (pip install "stbench[ray]")')
    root, vectors, expected = extracted
    store = tmp_path / "store"
    assert _import(root, store, export(vectors, tmp_path / "p", "parquet-list")).exit_code == 0
    result = _run(root, store, "my-tiny", "--executor", "ray", reducer="identity")
    assert result.exit_code == 0, result.output
    with Store(store) as st:
        (run,) = st.catalog.summary().to_dicts()
        got = _pccs(st, run["run_id"])
        np.testing.assert_allclose([got[k] for k in got], [expected["identity"][k] for k in got], atol=1e-6)


def test_the_fingerprint_is_the_files_content_and_reimporting_them_changes_nothing(extracted, tmp_path):
    root, vectors, _ = extracted
    store = tmp_path / "store"
    a = _import(root, store, export(vectors, tmp_path / "a", "npy", seed=1))
    again = _import(root, store, tmp_path / "a")
    b = _import(root, store, export(vectors, tmp_path / "b", "npy", seed=2), "my-tiny-b")  # other row order
    fps = [re.search(r"imported:sha256:[0-9a-f]{16}", r.output).group(0) for r in (a, again, b)]
    assert fps[0] == fps[1] != fps[2]
    with Store(store) as st:
        assert st.catalog.imported_sets() == [("TINY", "my-tiny", fps[0]), ("TINY", "my-tiny-b", fps[2])]
        assert len(st.catalog.embedding_paths("TINY", "my-tiny", fps[0])) == 3


def test_several_imported_sets_under_one_name_must_be_chosen(extracted, tmp_path, no_model):
    root, vectors, _ = extracted
    store = tmp_path / "store"
    fps = []
    for seed in (1, 2):
        out = _import(root, store, export(vectors, tmp_path / str(seed), "npz", seed=seed))
        fps.append(re.search(r"imported:sha256:([0-9a-f]{16})", out.output).group(1))
    task = open_task("tiny", root)
    with Store(store) as st, pytest.raises(StbenchError, match=r"2 imported embedding sets of my-tiny .* imported:"):
        run_task(task, "my-tiny", [ReducerChoice("identity")], Protocol.from_options(), st)
    result = _run(root, store, "my-tiny", "--weights", f"imported:{fps[1][:8]}")
    assert result.exit_code == 0, result.output
    with Store(store) as st:
        assert {r["weights_fingerprint"] for r in st.catalog.summary().to_dicts()} == {f"imported:sha256:{fps[1]}"}


def test_a_free_name_without_imported_embeddings_is_a_one_line_error(extracted, tmp_path):
    root, vectors, _ = extracted
    store = tmp_path / "store"
    result = _run(root, store, "nothing-here")
    assert result.exit_code not in (0, 3) and len(result.output.strip().splitlines()) == 1, result.output
    assert "unknown encoder 'nothing-here'" in result.output and "bench embeddings import" in result.output
    assert not store.exists()
    make_tiny_task(root, "OTHER", n_samples=2, overwrite=True)
    assert _import(root, store, export(vectors, tmp_path / "e", "npy")).exit_code == 0
    other = CliRunner().invoke(cli, ["run", "--task", "other", "--encoder", "my-tiny", "--data-root", str(root),
                                     "--store", str(store), "--no-progress"])
    assert other.exit_code not in (0, 3) and len(other.output.strip().splitlines()) == 1, other.output
    assert "no imported embeddings of my-tiny for task OTHER" in other.output
    assert "bench embeddings import --task OTHER --encoder my-tiny" in other.output


# -- refusals ----------------------------------------------------------------------------------------------------


def _drop_row(sid, emb, barcodes):
    return (emb[1:], barcodes[1:]) if sid == "S1" else (emb, barcodes)


def _extra_row(sid, emb, barcodes):
    return (np.vstack([emb, emb[:1]]), [*barcodes, "S1-extra"]) if sid == "S1" else (emb, barcodes)


def _other_dim(sid, emb, barcodes):
    return (emb[:, :7], barcodes) if sid == "S1" else (emb, barcodes)


def _nan(sid, emb, barcodes):
    if sid == "S2":
        emb = emb.copy()
        emb[3, 2] = np.nan
    return emb, barcodes


def _inf(sid, emb, barcodes):
    if sid == "S0":
        emb = emb.copy()
        emb[0, 0] = np.inf
    return emb, barcodes


def _duplicate(sid, emb, barcodes):
    return (emb, [barcodes[0], *barcodes[:-1]]) if sid == "S1" else (emb, barcodes)


def _unknown_sample(folder):
    (folder / "S0.npy").rename(folder / "S9.npy")
    (folder / "S0.barcodes.txt").rename(folder / "S9.barcodes.txt")
    np.save(folder / "S0.npy", np.load(folder / "S9.npy"))
    (folder / "S0.barcodes.txt").write_text((folder / "S9.barcodes.txt").read_text())


def _no_file(folder):
    (folder / "S2.npy").unlink()


def _other_task_names(folder):
    for p in list(folder.iterdir()):
        p.rename(folder / p.name.replace("S", "T", 1))


def _no_barcode_list(folder):
    (folder / "S1.barcodes.txt").unlink()


@pytest.mark.parametrize(("edit", "after", "args", "message"), [
    (_drop_row, None, (), r"S1\.npy: 1 of 24 barcodes of the patch file S1\.h5 have no embedding"),
    (_extra_row, None, (), r"S1\.npy: 1 barcodes are not in the patch file S1\.h5 \(first: 'S1-extra'\)"),
    (_duplicate, None, (), r"S1\.npy: duplicate barcode"),
    (_other_dim, None, (), r"S1\.npy: 7-dimensional embeddings, but S0\.npy has 8"),
    (lambda s, e, b: (e[:, :5], b), None, ("--encoder", ENCODER),
     r"S0\.npy: 5-dimensional embeddings, but the registered encoder test-tiny-cnn gives 8"),
    (_nan, None, (), r"S2\.npy: 1 values are NaN or infinite"),
    (_inf, None, (), r"S0\.npy: 1 values are NaN or infinite"),
    (None, _unknown_sample, (), r"S9\.npy: sample 'S9' is not in task TINY"),
    (None, _no_file, (), r"no embeddings for sample 'S2' of task TINY"),
    (None, _other_task_names, (), r"none of its 3 embedding files is named after a sample of task TINY .*another task"),
    (None, _no_barcode_list, (), r"S1\.npy: no barcode file S1\.barcodes\.txt beside it"),
])
def test_embeddings_that_do_not_fit_the_task_are_refused_and_nothing_is_written(extracted, tmp_path, edit, after, args,
                                                                              message):
    root, vectors, _ = extracted
    folder = export(vectors, tmp_path / "e", "npy", edit=edit)
    if after is not None:
        after(folder)
    store = tmp_path / "store"
    encoder = args[1] if args else "my-tiny"
    result = _import(root, store, folder, encoder)
    assert result.exit_code != 0
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1, result.output
    assert re.search(message, result.output), result.output
    assert not store.exists()


def test_another_tasks_hest_files_are_refused(extracted, tmp_path):
    root, vectors, _ = extracted
    folder = export(vectors, tmp_path / "e", "hest")
    with h5py.File(folder / "S0.h5", "a") as h5:
        h5.attrs["task"] = "LUNG"  # as in a file exported from an stbench store
    result = _import(root, tmp_path / "store", folder, "my-tiny", "--format", "hest")
    assert result.exit_code != 0 and "S0.h5: holds embeddings of task LUNG, not TINY" in result.output, result.output


def test_a_refused_import_leaves_an_existing_store_as_it_was(extracted, tmp_path, monkeypatch):
    root, vectors, _ = extracted
    store = tmp_path / "store"
    assert _import(root, store, export(vectors, tmp_path / "good", "npy")).exit_code == 0
    before = sorted(p.relative_to(store) for p in store.rglob("*.h5"))
    with Store(store) as st:
        rows = st.catalog.rows("SELECT * FROM embeddings ORDER BY ALL")
    assert _import(root, store, export(vectors, tmp_path / "bad", "npy", edit=_nan), "other").exit_code != 0
    # a write that fails half-way (a full disk) removes the files it added and registers none
    from stbench.stores import embeddings as store_embeddings

    calls = {"n": 0}
    commit = store_embeddings.EmbeddingWriter.commit

    def failing_commit(self):
        calls["n"] += 1
        if calls["n"] == 2:
            self.abort()
            raise OSError("No space left on device")
        return commit(self)

    monkeypatch.setattr(store_embeddings.EmbeddingWriter, "commit", failing_commit)
    failed = _import(root, store, export(vectors, tmp_path / "other", "npy", seed=5), "other")
    assert failed.exit_code != 0 and calls["n"] == 2
    assert sorted(p.relative_to(store) for p in store.rglob("*.h5")) == before
    with Store(store) as st:
        assert st.catalog.rows("SELECT * FROM embeddings ORDER BY ALL") == rows
