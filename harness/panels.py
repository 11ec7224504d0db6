"""Named gene panels for evaluation (``--genes pam50``), and which of a panel's genes a task has.

A panel replaces the task's gene list: only the panel genes measured in every sample of the task are
evaluated (the others are listed, never silently dropped), and the protocol records the panel's name and
the genes used, so each panel is its own result set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stbench.tasks import Task

__all__ = ["PAM50", "PANELS", "panel_genes", "genes_in_every_sample", "split_panel"]

# The 50 genes of the PAM50 intrinsic-subtype classifier (Parker et al., J Clin Oncol 2009), in the order of
# genefu's pam50 model (shared/data/genesets/pam50_model.csv, column "probe"). Three probes carry withdrawn
# symbols there and are given under their current HGNC symbols, the names count matrices use today:
# CDCA1 -> NUF2, KNTC2 -> NDC80, ORC6L -> ORC6.
PAM50: tuple[str, ...] = (
    "ACTR3B", "ANLN", "BAG1", "BCL2", "BIRC5", "BLVRA", "CCNB1", "CCNE1", "CDC20", "CDC6",
    "NUF2", "CDH3", "CENPF", "CEP55", "CXXC5", "EGFR", "ERBB2", "ESR1", "EXO1", "FGFR4",
    "FOXA1", "FOXC1", "GPR160", "GRB7", "KIF2C", "NDC80", "KRT14", "KRT17", "KRT5", "MAPT",
    "MDM2", "MELK", "MIA", "MKI67", "MLPH", "MMP11", "MYBL2", "MYC", "NAT1", "ORC6",
    "PGR", "PHGDH", "PTTG1", "RRM2", "SFRP1", "SLC39A6", "TMEM45B", "TYMS", "UBE2C", "UBE2T",
)

PANELS: dict[str, tuple[str, ...]] = {"pam50": PAM50}


def panel_genes(name: str) -> tuple[str, ...] | None:
    """The genes of a built-in panel (case-insensitive name), or None when ``name`` is not one."""
    return PANELS.get(name.strip().lower())


def genes_in_every_sample(task: Task) -> set[str]:
    """Gene names measured in every sample of the task (read from the count files' var names only)."""
    import anndata as ad

    from stbench.errors import DataError

    common: set[str] | None = None
    for sid in sorted(task.samples):
        path = task.samples[sid].adata
        try:
            backed = ad.read_h5ad(path, backed="r")
        except Exception as exc:  # noqa: BLE001 - h5py/anndata raise many types for broken files
            raise DataError(path, f"cannot read as h5ad ({type(exc).__name__}: {exc})") from exc
        try:
            names = set(backed.var_names)
        finally:
            backed.file.close()
        common = names if common is None else common & names
    return common or set()


def split_panel(genes: Sequence[str], available: set[str]) -> tuple[list[str], list[str]]:
    """``(present, absent)``: the panel's genes that are in ``available`` and those that are not, in panel order."""
    return [g for g in genes if g in available], [g for g in genes if g not in available]
