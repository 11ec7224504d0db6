"""Writing a task in the HEST-Benchmark layout, all or nothing.

Every importer (her2st, the synthetic demo, later Visium and tables) writes through `TaskWriter`: files go
to a hidden temporary folder next to the destination and appear under the task's name only when
`TaskWriter.commit` renames it, so an interrupted import never leaves a half-written task behind.
"""

from __future__ import annotations

import csv
import json
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stbench.errors import DataError, StbenchError
from stbench.tasks import GENES_FILE, TASK_META

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["TaskWriter", "leave_one_group_out"]


def leave_one_group_out(groups: dict[str, str]) -> list[tuple[list[str], list[str]]]:
    """Folds holding out one group (patient or section) each: ``[(train_ids, test_ids), ...]``.

    ``groups`` maps sample id -> group; folds follow the sorted group names, samples their sorted ids.
    """
    names = sorted(set(groups.values()))
    if len(names) < 2:
        raise DataError(None, f"a leave-one-out split needs at least two groups, found {names}")
    folds = []
    for g in names:
        test = sorted(s for s, sg in groups.items() if sg == g)
        train = sorted(s for s, sg in groups.items() if sg != g)
        folds.append((train, test))
    return folds


class TaskWriter:
    """Build ``<root>/<name>/`` (patches, adata, splits, gene list, task.json) in a temporary folder.

    Use as a context manager: on an exception the temporary folder is removed and nothing appears.
    """

    def __init__(self, root: Path, name: str, *, overwrite: bool = False) -> None:
        self.root = Path(root)
        self.name = name
        self.dest = self.root / name
        if self.dest.exists() and not overwrite:
            raise StbenchError(f"{self.dest} already exists; pass --overwrite to replace it")
        self.overwrite = overwrite
        self.tmp = self.root / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        self.samples: list[str] = []

    def __enter__(self) -> TaskWriter:
        (self.tmp / "patches").mkdir(parents=True)
        (self.tmp / "adata").mkdir()
        (self.tmp / "splits").mkdir()
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self.tmp.exists():  # not committed: an error, or the caller forgot commit()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def add_sample(
        self,
        sample_id: str,
        *,
        patches: Iterable[np.ndarray],
        n_patches: int,
        barcodes: Sequence[str],
        coords: np.ndarray,
        counts: AnnData,
        patch_size: int = 224,
        attrs: dict | None = None,
    ) -> None:
        """Write one sample: ``patches`` yields uint8 arrays (k, size, size, 3) in barcode order.

        ``counts`` holds raw counts with obs_names equal to ``barcodes`` (same order is not required).
        """
        import h5py

        if len(barcodes) != n_patches or len(coords) != n_patches:
            raise ValueError(f"{sample_id}: {n_patches} patches, {len(barcodes)} barcodes, {len(coords)} coords")
        if len(set(barcodes)) != len(barcodes):
            raise DataError(None, f"{sample_id}: duplicate barcodes")
        missing = set(barcodes) - set(counts.obs_names)
        if missing:
            raise DataError(None, f"{sample_id}: {len(missing)} barcodes have no count row")
        path = self.tmp / "patches" / f"{sample_id}.h5"
        with h5py.File(path, "w") as h5:
            img = h5.create_dataset(
                "img", shape=(n_patches, patch_size, patch_size, 3), dtype=np.uint8,
                chunks=(min(64, n_patches), patch_size, patch_size, 3),
            )
            written = 0
            for block in patches:
                img[written : written + len(block)] = block
                written += len(block)
            if written != n_patches:
                raise ValueError(f"{sample_id}: expected {n_patches} patches, got {written}")
            h5.create_dataset("barcode", data=np.asarray(barcodes, dtype=object).reshape(-1, 1),
                              dtype=h5py.string_dtype("utf-8"))
            h5.create_dataset("coords", data=np.asarray(coords, dtype=np.int64).reshape(-1, 2))
            for k, v in (attrs or {}).items():
                h5.attrs[k] = v
        counts.write_h5ad(self.tmp / "adata" / f"{sample_id}.h5ad")
        self.samples.append(sample_id)

    def commit(self, folds: Sequence[tuple[Sequence[str], Sequence[str]]], genes: Sequence[str], meta: dict) -> Path:
        """Write splits, the gene list and task.json, then move the folder into place."""
        unknown = {s for tr, te in folds for s in (*tr, *te)} - set(self.samples)
        if unknown:
            raise ValueError(f"splits name samples that were not written: {sorted(unknown)}")
        for i, (train, test) in enumerate(folds):
            for kind, ids in (("train", train), ("test", test)):
                with (self.tmp / "splits" / f"{kind}_{i}.csv").open("w", newline="") as fh:
                    w = csv.writer(fh)
                    w.writerow(["sample_id", "patches_path", "expr_path"])
                    for sid in ids:
                        w.writerow([sid, f"patches/{sid}.h5", f"adata/{sid}.h5ad"])
        (self.tmp / GENES_FILE).write_text(json.dumps({"genes": list(genes)}, indent=1))
        (self.tmp / TASK_META).write_text(json.dumps({"name": self.name, **meta}, indent=1))
        if self.dest.exists():
            old = self.root / f".{self.name}.old-{uuid.uuid4().hex[:8]}"
            self.dest.rename(old)
            self.tmp.rename(self.dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.tmp.rename(self.dest)
        return self.dest
