"""Patch embeddings: stream a sample's patches through an encoder into the store.

Patches are read from the HDF5 file in chunks by a background thread (so disk reads overlap compute),
moved to the device as uint8, resized and normalised there as tensors, and encoded under
``torch.inference_mode`` (with autocast in the encoder's precision on CUDA). Memory is bounded by the
chunk size, not by the number of patches. Each sample's file is committed atomically and registered in
the catalog, so an interrupted extraction resumes at the first sample without a file.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import stbench
from stbench.errors import StbenchError
from stbench.hashing import file_digest
from stbench.tasks import PatchFile, Sample, Task

if TYPE_CHECKING:
    import torch
    from rich.progress import Progress

    from stbench.encoders import Encoder, EncoderSpec, LoadedEncoder
    from stbench.stores import Store

__all__ = ["resolve_device", "patch_fingerprint", "source_fingerprint", "Pipeline", "prepare_pipeline", "embed_batch",
           "pil_resample", "extract_sample", "ensure_embeddings",
           "PipelineCache", "cached_embedding", "write_sample_embeddings"]

log = logging.getLogger("stbench")
_AUTOCAST = {"fp16": "float16", "bf16": "bfloat16"}
# On CPU, small forward batches stay in cache: efficientnet-lite0 on 2 cores ran 32-38 patches/s at 16 per
# forward vs 18-20/s at 128; reads still come in chunks of --batch-size.
CPU_FORWARD_BATCH = 16


def resolve_device(device: str | None = None) -> str:
    """``auto``/None -> ``cuda`` when available, else ``cpu``."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StbenchError(f"--device {device} asked for, but torch sees no CUDA device; use --device cpu")
    return device


def patch_fingerprint(path: Path) -> str:
    """Identity of a patch file's content, ``sha256:<16 hex>`` of its bytes (every pixel, barcode and
    coordinate); hashed once, then remembered while the file is unchanged (`stbench.hashing.file_digest`)."""
    return "sha256:" + file_digest(path)[:16]


def source_fingerprint(pf: PatchFile) -> str:
    """`patch_fingerprint` of an open patch file."""
    return patch_fingerprint(pf.path)


def _prefetch(chunks: Iterator[tuple[int, np.ndarray]], depth: int = 2) -> Iterator[tuple[int, np.ndarray]]:
    """Read the next chunks in a background thread (h5py releases the GIL while reading)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def reader() -> None:
        try:
            for item in chunks:
                q.put(item)
            q.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    while True:
        item = q.get()
        if item is done:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    t.join()


def pil_resample(images: np.ndarray, spec: EncoderSpec) -> np.ndarray:
    """uint8 (B, H, W, 3) -> uint8 (B, S, S, 3), S = ``spec.input_size``, as the reference transforms compute it
    for ``resample == "pil"``: torchvision's Resize of a PIL image (PIL's filter on uint8, shorter side to
    ``resize_to`` or S) then CenterCrop(S). Other specs' patches pass unchanged (they are resized on the device).

    One patch at a time on the CPU: PIL releases the GIL, so the reader thread runs this alongside the model."""
    if spec.resample != "pil":
        return images
    from PIL import Image

    size, crop = spec.resize_to or spec.input_size, spec.input_size
    flt = Image.Resampling.BICUBIC if spec.interpolation == "bicubic" else Image.Resampling.BILINEAR
    out = np.empty((len(images), crop, crop, 3), np.uint8)
    for i, patch in enumerate(images):
        h, w = patch.shape[:2]
        new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)  # shorter side -> size
        img = Image.fromarray(patch)
        if (new_w, new_h) != (w, h):  # torchvision returns an image already at the size unchanged
            img = img.resize((new_w, new_h), flt)
        if min(new_w, new_h) < crop:
            raise StbenchError(f"{spec.name}: a {w}x{h} patch resized to {new_w}x{new_h} is smaller than the "
                               f"{crop} px crop; patches must be at least {crop} px")
        top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
        out[i] = np.asarray(img.crop((left, top, left + crop, top + crop)))
    return out


def _device_transform(images: torch.Tensor, spec: EncoderSpec) -> torch.Tensor:
    """uint8 (B, H, W, 3) on the device -> normalised float (B, 3, S, S); resized here unless PIL did it."""
    import torch
    import torch.nn.functional as F

    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    size, crop = spec.resize_to or spec.input_size, spec.input_size
    if spec.resample == "torch":
        if x.shape[-2:] != (size, size):
            mode = spec.interpolation if spec.interpolation in ("bilinear", "bicubic") else "bilinear"
            x = F.interpolate(x, size=(size, size), mode=mode, antialias=True, align_corners=False)
        if size != crop:
            top = int(round((size - crop) / 2.0))
            x = x[..., top : top + crop, top : top + crop]
    mean = torch.tensor(spec.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _preprocess(images: torch.Tensor, loaded: LoadedEncoder) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised float (B, 3, S, S) at the encoder's input size: the whole transform
    (`pil_resample` on the CPU where the spec asks for it, then `_device_transform` where ``images`` are)."""
    import torch

    if loaded.spec.resample == "pil":
        images = torch.from_numpy(pil_resample(images.cpu().numpy(), loaded.spec)).to(images.device)
    return _device_transform(images, loaded.spec)


@dataclass
class Pipeline:
    """A loaded encoder placed on its device, with the batch sizes to read and to run it at.

    Call it on uint8 patches (N, H, W, 3) of any N: they are resampled with PIL first where the spec says so
    (``resampled=True``: `pil_resample` was applied already, e.g. in the reader thread), go to the device as
    uint8, are resized and normalised there, and pass through the model ``forward_batch`` at a time under
    ``inference_mode`` (and autocast in the encoder's precision on CUDA).
    """

    loaded: LoadedEncoder
    device: str
    read_batch: int  # patches per HDF5 read (memory bound of the reader)
    forward_batch: int  # patches per forward pass

    def resample(self, images: np.ndarray) -> np.ndarray:
        """The CPU part of the transform (`pil_resample`); unchanged patches for on-device resizing."""
        return pil_resample(images, self.loaded.spec)

    def __call__(self, images: np.ndarray, *, resampled: bool = False) -> np.ndarray:
        import torch

        out = []
        spec = self.loaded.spec
        dtype = _AUTOCAST.get(spec.precision)
        autocast = self.device.startswith("cuda") and dtype is not None
        if not resampled:
            images = self.resample(images)
        with torch.inference_mode():
            for i in range(0, len(images), self.forward_batch):
                block = torch.from_numpy(np.ascontiguousarray(images[i : i + self.forward_batch]))
                x = _device_transform(block.to(self.device, non_blocking=True), spec)
                with torch.autocast("cuda", dtype=getattr(torch, dtype or "float16"), enabled=autocast):
                    out.append(self.loaded.model(x).float())
        return torch.cat(out).cpu().numpy()


def _probe_forward_batch(loaded: LoadedEncoder, device: str, *, start: int = 512) -> int:
    """The largest power-of-two forward batch (<= ``start``) that fits in GPU memory, with a dummy batch."""
    import torch

    size = loaded.spec.input_size
    batch = start
    while batch > 1:
        try:
            Pipeline(loaded, device, batch, batch)(np.zeros((batch, size, size, 3), np.uint8))
            break
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            batch //= 2
    torch.cuda.empty_cache()
    log.info("%s: forward batch %d fits on %s", loaded.spec.name, batch, device)
    return batch


def prepare_pipeline(loaded: LoadedEncoder, *, device: str = "cpu", batch_size: int | None = None,
                     compile: bool = False) -> Pipeline:
    """Place the model on ``device`` and choose batch sizes: ``batch_size`` when given, else 128-patch reads
    with 16-patch forwards on CPU, or the largest forward batch that fits on a GPU."""
    import torch

    # uint8 NHWC patches permuted to NCHW are already channels-last in memory; matching the weights to it
    # avoids a layout conversion per convolution (CNNs: 20 -> 26 patches/s on CPU; no-op for ViTs).
    loaded.model.to(device, memory_format=torch.channels_last)
    if compile:
        loaded.model = torch.compile(loaded.model)
    if loaded.spec.precision != "fp32" and not device.startswith("cuda"):
        log.info("%s: %s applies on CUDA (autocast); on %s the model runs in fp32", loaded.spec.name,
                 loaded.spec.precision, device)
    if batch_size:
        return Pipeline(loaded, device, max(batch_size, 1), max(batch_size, 1))
    if device.startswith("cuda"):
        fb = _probe_forward_batch(loaded, device)
        return Pipeline(loaded, device, max(fb, 128), fb)
    return Pipeline(loaded, device, 128, CPU_FORWARD_BATCH)


def embed_batch(loaded: LoadedEncoder, images: np.ndarray, *, device: str = "cpu") -> np.ndarray:
    """Embeddings (B, D) float32 of uint8 patches (B, H, W, 3), with the model where it already is."""
    return Pipeline(loaded, device, len(images), CPU_FORWARD_BATCH if device == "cpu" else len(images))(images)


def extract_sample(
    pipeline: Pipeline,
    sample: Sample,
    store: Store,
    *,
    task: str,
    progress: Progress | None = None,
) -> str:
    """Write the embeddings of one sample and register them. Reads: the patch file. Writes: one HDF5 file
    under ``<store>/embeddings/...`` and a row of the ``embeddings`` table (its path relative to the store).
    Returns the file's path."""
    loaded = pipeline.loaded
    path = store.embedding_path(task, loaded.spec.name, loaded.fingerprint, sample.id)
    row = write_sample_embeddings(pipeline, sample, path, task=task, progress=progress)
    store.catalog.add_embedding(**{**row, "path": store.relative(row["path"])})
    return row["path"]


def write_sample_embeddings(pipeline: Pipeline, sample: Sample, path: Path, *, task: str,
                            progress: Progress | None = None) -> dict:
    """Write the embeddings of one sample to ``path`` (atomically: a temporary file renamed into place);
    the catalog is not touched. Returns the ``embeddings`` row to register (`Catalog.add_embedding`)."""
    from stbench.stores import EmbeddingWriter

    loaded = pipeline.loaded
    spec = loaded.spec
    with PatchFile(sample.patches) as pf:
        src, n = source_fingerprint(pf), len(pf)
        attrs = {
            "task": task, "sample_id": sample.id, "encoder": spec.name, "weights_fingerprint": loaded.fingerprint,
            "source_fingerprint": src, "stbench_version": stbench.__version__, "embed_dim": spec.embed_dim,
        }
        writer = EmbeddingWriter(path, n=n, dim=spec.embed_dim, barcodes=pf.barcodes, coords=pf.coords, attrs=attrs)
        bar = progress.add_task(f"{sample.id}", total=n, log="items", unit="patches") if progress else None
        try:
            # PIL resampling (where the spec asks for it) runs in the reader thread, alongside the model
            chunks = ((offset, pipeline.resample(chunk)) for offset, chunk in pf.iter_chunks(pipeline.read_batch))
            for offset, chunk in _prefetch(chunks):
                emb = pipeline(chunk, resampled=True)
                if emb.shape != (len(chunk), spec.embed_dim):
                    raise StbenchError(f"encoder {spec.name} returned {emb.shape}, expected ({len(chunk)}, {spec.embed_dim})")
                writer.write(offset, emb)
                if progress is not None:
                    progress.advance(bar, len(chunk))
            final = writer.commit()
        except BaseException:
            writer.abort()
            raise
        finally:
            if progress is not None:
                progress.remove_task(bar)
    return {"task": task, "encoder": spec.name, "weights_fingerprint": loaded.fingerprint, "sample_id": sample.id,
            "source_fingerprint": src, "path": str(final), "n_patches": n, "dim": spec.embed_dim,
            "stbench_version": stbench.__version__}


def cached_embedding(store: Store, task: Task, encoder: str, fingerprint: str, sample: Sample) -> str | None:
    """The registered embedding file of this sample in this store, if it exists and was computed from the
    patch file as it is now (its content digest; the patch file is hashed, not opened)."""
    row = store.catalog.embedding(task.name, encoder, fingerprint, sample.id)
    path = store.embedding_path(task.name, encoder, fingerprint, sample.id)  # in this store, wherever it was made
    if row is None or not path.exists():
        return None
    if patch_fingerprint(sample.patches) != row["source_fingerprint"]:
        log.info("%s: patch file changed since its embeddings were computed; recomputing", sample.id)
        return None
    return str(path)


class PipelineCache:
    """Keeps the last loaded encoder pipeline, so a grid running one encoder on several tasks loads its
    weights once; asking for another encoder (or other settings) releases the previous one first, so at
    most one encoder's weights are in memory."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._pipeline: Pipeline | None = None

    def get(self, encoder: Encoder, *, weights: str | None, device: str, batch_size: int | None,
            compile: bool) -> Pipeline:
        key = (encoder.spec, weights, device, batch_size, compile)  # the spec: --precision gives another
        pipeline = self._pipeline
        if pipeline is None or key != self._key:
            self.release()
            pipeline = prepare_pipeline(encoder.load(weights), device=device, batch_size=batch_size, compile=compile)
            self._key, self._pipeline = key, pipeline
        return pipeline

    def release(self) -> None:
        if self._pipeline is None:
            return
        on_gpu = self._pipeline.device.startswith("cuda")
        self._key = self._pipeline = None
        if on_gpu:
            import torch

            torch.cuda.empty_cache()


def ensure_embeddings(
    task: Task,
    encoder: Encoder,
    store: Store,
    *,
    sample_ids: list[str] | None = None,
    weights: str | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    compile: bool = False,
    progress: Progress | None = None,
    pipelines: PipelineCache | None = None,
) -> tuple[str, dict[str, str]]:
    """Embeddings for every sample of the task, computed once and reused: ``(fingerprint, {sample: path})``.

    The model is loaded only if some sample has no valid cached file (and, with ``pipelines``, only if that
    cache does not hold it already).
    """
    fingerprint = encoder.fingerprint(weights)
    ids = sample_ids or sorted(task.samples)
    paths: dict[str, str] = {}
    todo = []
    for sid in ids:
        cached = cached_embedding(store, task, encoder.name, fingerprint, task.samples[sid])
        if cached:
            paths[sid] = cached
        else:
            todo.append(sid)
    if not todo:
        return fingerprint, paths
    state: dict[str, Pipeline] = {}

    def pipeline() -> Pipeline:  # the model is loaded for the first sample this process must compute
        if "p" not in state:
            dev = resolve_device(device)
            if pipelines is None:
                state["p"] = prepare_pipeline(encoder.load(weights), device=dev, batch_size=batch_size, compile=compile)
            else:
                state["p"] = pipelines.get(encoder, weights=weights, device=dev, batch_size=batch_size, compile=compile)
            if state["p"].loaded.fingerprint != fingerprint:
                raise StbenchError(f"{encoder.name}: the weights changed while loading ({fingerprint} -> "
                                   f"{state['p'].loaded.fingerprint}); rerun")
        return state["p"]

    # One process computes a sample's embeddings; another asking for them at the same time takes the
    # samples nobody holds first, then waits for the rest and reads them back.
    def compute(sid: str, *, wait: bool) -> bool:
        lock = store.lock("embed", json.dumps([task.name, encoder.name, fingerprint, sid]),
                          what=f"the embeddings of {task.name}/{sid} ({encoder.name}), being computed")
        if not lock.acquire(None if wait else 0):
            return False
        try:
            cached = cached_embedding(store, task, encoder.name, fingerprint, task.samples[sid])
            paths[sid] = cached or extract_sample(pipeline(), task.samples[sid], store, task=task.name, progress=progress)
        finally:
            lock.release()
        return True

    bar = progress.add_task(f"{encoder.name} · {task.name} embeddings", total=len(todo), log="steps",
                            unit="sample") if progress else None  # log: a line per sample without a terminal
    try:
        busy = []
        for sid in todo:
            if not compute(sid, wait=False):
                busy.append(sid)
            elif progress is not None:
                progress.advance(bar)
        for sid in busy:
            compute(sid, wait=True)
            if progress is not None:
                progress.advance(bar)
    finally:
        if progress is not None:
            progress.remove_task(bar)
    return fingerprint, {sid: paths[sid] for sid in ids}
