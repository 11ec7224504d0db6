"""Encoder plugins: a frozen spec plus one loader function, in one registry.

    from stbench.encoders import list_encoders, get_encoder
    enc = get_encoder("efficientnet-lite0")
    loaded = enc.load()          # LoadedEncoder: model (normalised images -> embeddings), fingerprint

Built-ins register when this registry first loads; other packages add theirs through the entry-point
group ``stbench.encoders`` (a module that uses `register_encoder`, or an `Encoder` object).
"""

from __future__ import annotations

from stbench.encoders._base import (
    PRECISIONS,
    Encoder,
    EncoderSpec,
    LoadedEncoder,
    encoders,
    get_encoder,
    compute_tag,
    list_encoders,
    register_encoder,
)

__all__ = ["Encoder", "EncoderSpec", "LoadedEncoder", "encoders", "get_encoder", "list_encoders", "register_encoder",
           "compute_tag", "PRECISIONS"]
