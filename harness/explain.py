"""What a fitted BP-Booster learned: its prototypes (pathways, for gene-program init) ranked by gate and by
mean attention over a fold's spots, and the per-spot attention for plotting.

Reads only the store: the run's saved booster (``models/<run_id>/fold<i>.pt``), its fold row, and the
embeddings of the fold's samples. Deterministic: no training happens here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stbench.errors import StbenchError, StoreError

if TYPE_CHECKING:
    import polars as pl

    from stbench.stores import Store

__all__ = ["Explanation", "explain_fold"]


@dataclass
class Explanation:
    run_id: str
    task: str
    encoder: str
    reducer: str
    fold: int
    reducer_options: dict[str, Any]
    protocol: dict[str, Any]
    report: dict[str, Any]
    samples: list[str]  # the spots' samples (the fold's test samples unless asked otherwise)
    synthetic: bool
    other_runs: list[str]  # other matching runs with their variant and alpha rule, newest first (choose with run_id=)
    variant: str  # options that differ from the reducer's defaults ("" = defaults)
    pathways: pl.DataFrame  # one row per prototype: name, gate, mean attention, both ranks, SVG overlap
    spots: pl.DataFrame  # one row per spot: sample_id, barcode, x, y, then one attention column per prototype

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "task": self.task, "encoder": self.encoder, "reducer": self.reducer,
            "fold": self.fold, "variant": self.variant, "reducer_options": self.reducer_options, "protocol": self.protocol,
            "report": self.report, "samples": self.samples, "synthetic": self.synthetic,
            "pathways": self.pathways.to_dicts(),
        }


def explain_fold(store: Store, *, task: str, encoder: str, fold: int, reducer: str = "bpbooster-gp",
                 run_id: str | None = None, on: str = "test") -> Explanation:
    """Rank the prototypes of the booster fitted on ``fold`` by gate value and by mean attention over the
    spots of the fold's ``on`` samples ("test", "train" or "all")."""
    import polars as pl

    from stbench.reducers.bpbooster import load_booster
    from stbench.stores import read_embeddings

    if on not in ("test", "train", "all"):
        raise StbenchError(f"on={on!r}: choose test, train or all")
    runs = store.catalog.fitted_models(task=task, encoder=encoder, reducer=reducer, fold=fold)
    if len(runs) == 0:
        raise StoreError(f"no complete {reducer} run with a saved model for task {task}, encoder {encoder}, fold {fold} "
                         f"in {store.root}; run `bench run --task {task} --encoder {encoder} --reducer {reducer}` first")
    from stbench.reducers import reducers

    ids = runs["run_id"].to_list()
    cls = reducers.get(reducer)
    variants = {r["run_id"]: _variant(cls, r) for r in runs.iter_rows(named=True)}
    if run_id is not None:
        if run_id not in ids:
            raise StoreError(f"run {run_id} is not among the matching runs: {', '.join(ids)}")
        row = runs.row(ids.index(run_id), named=True)
    else:  # the newest run with the reducer's default options, else the newest run
        plain = [i for i in ids if not variants[i]]
        row = runs.row(ids.index(plain[0] if plain else ids[0]), named=True)
    booster = load_booster(store.resolve(row["model_path"]))
    samples = {"test": json.loads(row["test_samples"]), "train": json.loads(row["train_samples"])}
    chosen = samples["test"] + samples["train"] if on == "all" else samples[on]
    paths = store.catalog.embedding_paths(row["task"], row["encoder"], row["weights_fingerprint"])
    missing = [s for s in chosen if s not in paths]
    if missing:
        raise StoreError(f"embeddings of {', '.join(missing)} are not in the store; rerun `bench run` for this task")
    parts = [read_embeddings(store.resolve(paths[s])) for s in chosen]
    attn = booster.attention(np.concatenate([p.embeddings for p in parts]))
    names = list(booster.prototype_names_)
    gates = booster.prototype_gates()
    mean_attn = attn.mean(axis=0)
    overlap = (booster.report_ or {}).get("overlap", {})
    pathways = pl.DataFrame({
        "prototype": names,
        "gate": gates.astype(np.float64),
        "mean_attention": mean_attn.astype(np.float64),
        "svg_overlap": [overlap.get(n) for n in names],
    }).with_columns(
        pl.col("gate").rank("ordinal", descending=True).alias("rank_gate"),
        pl.col("mean_attention").rank("ordinal", descending=True).alias("rank_attention"),
    ).sort("rank_gate")
    spot_cols: dict[str, Any] = {
        "sample_id": [s for s, p in zip(chosen, parts) for _ in range(len(p.barcodes))],
        "barcode": [b for p in parts for b in p.barcodes],
        "x": np.concatenate([p.coords[:, 0] for p in parts]),
        "y": np.concatenate([p.coords[:, 1] for p in parts]),
    }
    for j, n in enumerate(names):
        spot_cols[n] = attn[:, j]
    return Explanation(
        run_id=row["run_id"], task=row["task"], encoder=row["encoder"], reducer=row["reducer"], fold=fold,
        reducer_options=json.loads(row["reducer_options"]), protocol=json.loads(row["protocol"]),
        report=booster.report_ or {}, samples=chosen, synthetic=bool(row["synthetic"]),
        other_runs=[f"{i} ({variants[i] or 'defaults'}; alpha {a})" for i, a in zip(ids, runs["alpha_rule"])
                    if i != row["run_id"]],
        variant=variants[row["run_id"]], pathways=pathways, spots=pl.DataFrame(spot_cols),
    )


def _variant(cls, row: dict[str, Any]) -> str:  # noqa: ANN001
    """The run's options that differ from the defaults, the gene-set file aside."""
    opts = {k: v for k, v in json.loads(row["reducer_options"]).items() if k not in ("gene_sets", "gene_sets_sha256")}
    return cls.variant_label(opts, task=row["task"], encoder=row["encoder"])
