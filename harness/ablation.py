"""The BP-Booster paper's ablation table as reducer variants.

Each row is a reducer with options; the runner stores each as its own result set (its options are part of
the run's identity), so rows are reused across invocations and can be compared under any protocol.
The published column is the paper's SKCM / Virchow 2 ablation (PCC), shown beside ours, never ranked with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AblationRow", "ABLATION_ROWS", "PUBLISHED_SOURCE", "select_rows"]

PUBLISHED_SOURCE = "BP-Booster paper, ablation on SKCM with Virchow 2 (shared/specs/bp-booster.md)"


@dataclass(frozen=True)
class AblationRow:
    key: str
    label: str
    reducer: str
    options: dict[str, Any] = field(default_factory=dict)
    published: float | None = None  # the paper's PCC for this row (SKCM, Virchow 2)


_NO_GATES = {"prototype_gate": False, "dim_gate": False}

ABLATION_ROWS: tuple[AblationRow, ...] = (
    AblationRow("ridge", "ridge on raw embeddings", "identity", published=0.303),
    AblationRow("pca", "ridge on PCA-256 (reference)", "pca"),
    AblationRow("attention", "+ cross-attention module (no gates)", "bpbooster-random", _NO_GATES, 0.638),
    AblationRow("gate-prototype", "+ g_prototype", "bpbooster-random", {"dim_gate": False}, 0.6478),
    AblationRow("gate-dim", "+ g_dim", "bpbooster-random", {"prototype_gate": False}, 0.644),
    AblationRow("both-gates", "+ both gates (= random init)", "bpbooster-random", {}, 0.6482),
    AblationRow("gene-program", "+ gene-program init", "bpbooster-gp", {}, 0.6522),
    AblationRow("no-reg", "gene-program, without L_Reg", "bpbooster-gp", {"reg_loss": False}, 0.6498),
    AblationRow("no-recon", "gene-program, without L_Recon", "bpbooster-gp", {"recon_loss": False}, 0.6492),
    AblationRow("literal-random", "random init, literal attention (degenerate)", "bpbooster-random", {"attention": "literal"}),
    AblationRow("literal-gp", "gene-program init, literal attention (degenerate)", "bpbooster-gp", {"attention": "literal"}),
)


def select_rows(keys: list[str] | None) -> list[AblationRow]:
    """The rows named by ``keys`` (all when None), in table order."""
    from stbench.errors import StbenchError, suggest

    if not keys:
        return list(ABLATION_ROWS)
    known = {r.key: r for r in ABLATION_ROWS}
    bad = [k for k in keys if k not in known]
    if bad:
        raise StbenchError(f"unknown ablation row(s) {', '.join(bad)}; rows: {', '.join(known)}.{suggest(bad[0], set(known))}")
    return [r for r in ABLATION_ROWS if r.key in set(keys)]
