"""A tiny HEST-layout task written through the real TaskWriter, for tests of readers and failures.

Patches are random colour fields whose mean colour drives the counts, so a run produces finite numbers.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from stbench.data.layout import TaskWriter, leave_one_group_out


def make_tiny_task(root: Path, name: str = "TINY", *, n_samples: int = 3, n_spots: int = 24, n_genes: int = 60,
                   seed: int = 0, overwrite: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    genes = [f"G{i:03d}" for i in range(n_genes)]
    load = rng.normal(size=(3, n_genes))
    groups = {}
    with TaskWriter(root, name, overwrite=overwrite) as w:
        for s in range(n_samples):
            sid = f"S{s}"
            groups[sid] = sid
            colour = rng.uniform(0, 1, size=(n_spots, 3))
            imgs = (colour[:, None, None, :] * 200 + rng.uniform(0, 55, size=(n_spots, 224, 224, 3))).astype(np.uint8)
            rate = np.exp(1.0 + colour @ load)
            counts = rng.poisson(rate).astype(np.float32)
            barcodes = [f"{sid}-{i}" for i in range(n_spots)]
            adata = ad.AnnData(sp.csr_matrix(counts), obs={"x": np.arange(n_spots)}, var={"g": genes})
            adata.obs_names, adata.var_names = barcodes, genes
            coords = np.stack([np.arange(n_spots) * 224, np.zeros(n_spots)], axis=1)
            w.add_sample(sid, patches=[imgs[:10], imgs[10:]], n_patches=n_spots, barcodes=barcodes, coords=coords,
                         counts=adata)
        return w.commit(leave_one_group_out(groups), genes[:20], {"synthetic": True, "source": "tests"})


def tiny_encoder(fail_after: int | None = None):
    """An encoder with a seeded random 2-layer CNN (8-d), fast enough for any test, whose weights are a
    real file (so it goes through weights resolution and fingerprinting like any plugin).

    ``fail_after`` makes the model raise on that forward call, to simulate a run killed mid-sample.
    """
    import tempfile

    import torch

    from stbench.encoders import Encoder, EncoderSpec
    from stbench.encoders.weights import WeightsSource

    calls = {"n": 0}

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)

        def forward(self, x):
            calls["n"] += 1
            if fail_after is not None and calls["n"] > fail_after:
                raise KeyboardInterrupt("simulated kill")
            return torch.relu(self.conv(x)).mean(dim=(2, 3))

    path = Path(tempfile.gettempdir()) / "stbench-tests" / "tiny-cnn.pt"
    if not path.exists():
        torch.manual_seed(0)
        path.parent.mkdir(exist_ok=True)
        torch.save(Tiny().state_dict(), path)

    def load(weights):
        model = Tiny()
        if weights.random_seed is None:  # else --weights random: Tiny's own init, seeded by Encoder.load
            model.load_state_dict(torch.load(weights.path, weights_only=True))
        return model

    spec = EncoderSpec(name="test-tiny-cnn", embed_dim=8, weights="random (seed 0)", license="test", input_size=32,
                       source=WeightsSource(local=lambda: path, config=False))
    return Encoder(spec, load)
