"""stbench: which foundation-model embeddings, and which reducers, best predict spatial expression from H&E.

Kept import-light on purpose: ``bench --help`` and ``bench list`` must not import torch.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
