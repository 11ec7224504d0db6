"""Every setting that changes a number, in one frozen object, and its fingerprint.

The defaults are the HEST-Benchmark protocol: the task's gene list, log1p of raw counts, ridge with
``alpha = 100 / (n_features * n_genes)``, no intercept, scikit-learn's lsqr solver fitted in float32 (the
dtype of the embeddings, as the reference fits), Pearson per gene over the pooled test spots of each fold,
seed 1. Each stored result carries `Protocol.fingerprint`; results
with different fingerprints are never averaged together.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

from stbench.errors import ProtocolError
from stbench.regression import DTYPES, SOLVERS, default_dtype

__all__ = ["PROTOCOL_VERSION", "Protocol", "GENE_RULES"]

# Bump when a computation behind the same settings changes (and say why in CHANGELOG.md).
# 2: lsqr fits in float32 as HEST's reference does (was float64), field dtype (issue 13).
PROTOCOL_VERSION = 2
GENE_RULES = ("task", "train-hvg", "file")


def _sweep(text: str) -> str:
    """``sweep`` or ``sweep:LO:HI:N`` checked and written canonically (``sweep:1e-06:1e+08:29``)."""
    from stbench.regression import SWEEP_ALPHAS

    parts = text.split(":")[1:] or [str(v) for v in SWEEP_ALPHAS]
    try:
        lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3:
            raise ValueError
    except (ValueError, IndexError):
        raise ProtocolError(f"--alpha {text!r}: write sweep or sweep:LO:HI:N, e.g. sweep:1e-6:1e8:29") from None
    if not (0 < lo < hi < float("inf")) or not 2 <= n <= 200:
        raise ProtocolError(f"--alpha {text!r}: needs 0 < LO < HI (finite) and 2 <= N <= 200")
    return f"sweep:{lo:.0e}:{hi:.0e}:{n}" if lo == float(f"{lo:.0e}") and hi == float(f"{hi:.0e}") else f"sweep:{lo!r}:{hi!r}:{n}"


@dataclass(frozen=True)
class Protocol:
    """The evaluation protocol (HEST-Benchmark defaults)."""

    genes: str = "task"  # "task": var_50genes.json; "train-hvg": top HVGs of each fold's training samples; "file"
    gene_list: tuple[str, ...] = ()  # the genes when genes == "file"
    panel: str = ""  # a named panel the gene list came from (pam50), restricted to the genes the task has
    n_genes: int = 50  # how many HVGs under "train-hvg"
    expression: str = "log1p"  # log1p of raw counts, no total-count normalisation (HEST)
    solver: str = "lsqr"  # "lsqr" (HEST reference, early-stopping) or "exact" (closed form)
    dtype: str = "float32"  # what lsqr fits in: float32 (HEST: the embeddings' dtype) or float64; exact: float64
    alpha: str = "hest"  # "hest": 100/(n_features*n_genes); "cv": chosen inside the training fold; a number;
    # or "sweep:LO:HI:N": PCC stored at every alpha of the grid, the headline at the CV choice among them
    intercept: bool = False
    pcc: str = "pooled"  # the headline PCC: over all test spots of a fold (HEST); per-sample PCC is stored too
    seed: int = 1

    @classmethod
    def from_options(
        cls,
        *,
        genes: str = "task",
        gene_list: tuple[str, ...] = (),
        panel: str = "",
        solver: str | None = None,
        alpha: str | float | None = None,
        intercept: bool | None = None,
        seed: int = 1,
        dtype: str | None = None,
    ) -> Protocol:
        """Validate command-line style options. ``--alpha cv`` implies the exact solver and, unless ``intercept``
        says otherwise, an intercept: a large cross-validated alpha without one shrinks every prediction towards
        zero rather than towards the gene's mean. ``dtype`` (``--ridge-dtype``) defaults to float32 for lsqr and
        must be float64 for the exact solver."""
        alpha_s = "hest" if alpha is None else str(alpha).strip().lower()
        if alpha_s == "sweep" or alpha_s.startswith("sweep:"):
            alpha_s = _sweep(alpha_s)
        elif alpha_s not in ("hest", "cv"):
            try:
                value = float(alpha_s)
            except ValueError:
                raise ProtocolError(f"--alpha must be 'hest', 'cv' or a number, not {alpha!r}") from None
            if not 0 <= value < float("inf"):  # NaN fails both comparisons
                raise ProtocolError(f"--alpha must be a finite non-negative number, not {alpha!r}")
            alpha_s = repr(value + 0.0)  # -0 is 0: one protocol, one fingerprint
        searched = alpha_s == "cv" or alpha_s.startswith("sweep:")
        if solver is None:
            solver = "exact" if searched else "lsqr"
        if solver not in SOLVERS:
            raise ProtocolError(f"--solver must be one of {', '.join(SOLVERS)}, not {solver!r}")
        if searched and solver != "exact":
            raise ProtocolError(f"--alpha {alpha_s.split(':')[0]} needs --solver exact (every alpha comes from one "
                                "decomposition)")
        dtype = dtype or default_dtype(solver)
        if dtype not in DTYPES:
            raise ProtocolError(f"--ridge-dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        if solver == "exact" and dtype != "float64":
            raise ProtocolError(f"--ridge-dtype {dtype} applies to --solver lsqr; the exact solver fits in float64")
        if genes not in GENE_RULES:
            raise ProtocolError(f"--genes must be one of task, train-hvg or a gene file, not {genes!r}")
        if genes == "file" and not gene_list:
            raise ProtocolError("a gene file was given but it lists no genes")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ProtocolError(f"--seed must be an integer from 0 to 2**32 - 1 (numpy's and scikit-learn's seeds), "
                                f"not {seed!r}")
        from stbench.expression import unique_genes

        gene_list = tuple(unique_genes(gene_list, "--genes"))
        if panel and genes != "file":
            raise ProtocolError(f"a gene panel ({panel}) needs genes='file', not {genes!r}")
        if intercept is None:
            intercept = alpha_s == "cv"
        return cls(genes=genes, gene_list=tuple(gene_list), panel=panel, solver=solver, dtype=dtype, alpha=alpha_s,
                   intercept=bool(intercept), seed=seed)

    def to_dict(self) -> dict:
        d = {"version": PROTOCOL_VERSION, **asdict(self), "gene_list": list(self.gene_list)}
        if not self.panel:  # absent unless used, so protocols from before panels keep their fingerprints
            del d["panel"]
        return d

    @property
    def fingerprint(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def alpha_for(self, n_features: int, n_genes: int) -> float | None:
        """The fixed alpha for these shapes, or None when it is cross-validated."""
        from stbench.regression import hest_alpha

        if self.alpha == "hest":
            return hest_alpha(n_features, n_genes)
        if self.alpha == "cv" or self.is_sweep:
            return None
        return float(self.alpha)

    @property
    def is_sweep(self) -> bool:
        """``--alpha sweep``: the PCC at every alpha of a grid is stored, the headline at the CV choice."""
        return self.alpha.startswith("sweep:")

    def sweep_alphas(self) -> tuple[float, ...]:
        """The swept alphas, log-spaced from LO to HI (``sweep:LO:HI:N``)."""
        import numpy as np

        _, lo, hi, n = self.alpha.split(":")
        return tuple(float(a) for a in np.logspace(np.log10(float(lo)), np.log10(float(hi)), int(n)))

    def describe(self) -> str:
        """One line for tables and logs."""
        genes = {"task": "task genes (var_50genes.json)", "train-hvg": f"top-{self.n_genes} train-fold HVGs"}.get(
            self.genes, f"{len(self.gene_list)} {self.panel.upper()} genes" if self.panel else f"{len(self.gene_list)} genes from file"
        )
        alpha = {"hest": "alpha=100/(features*genes)", "cv": "alpha by grouped CV (lowest held-out MSE)"}.get(
            self.alpha, f"alpha={self.alpha}")
        if self.is_sweep:
            _, lo, hi, n = self.alpha.split(":")
            alpha = f"PCC stored at {n} alphas {lo}..{hi}, headline at the grouped-CV choice among them"
        icpt = ", intercept" if self.intercept else ""
        ridge = f"ridge[{self.solver} {self.dtype}, {alpha}{icpt}]"
        return f"{ridge} on {self.expression}; {genes}; PCC {self.pcc}; seed {self.seed}"

    def with_seed(self, seed: int) -> Protocol:
        return replace(self, seed=seed)
