"""What went wrong talking to the Hugging Face Hub, in one place for dataset and model downloads.

`hub_problem` sorts a huggingface_hub exception into a few kinds; callers (``bench data fetch``, encoder
weights) turn the kind into their own one-line message saying what to do next. Import lazily: importing
huggingface_hub costs a noticeable fraction of a second.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

__all__ = ["HubProblem", "hub_problem", "offline_mode", "ACCESS_HINT"]

ACCESS_HINT = "then set HF_TOKEN or run `hf auth login`"


@dataclass(frozen=True)
class HubProblem:
    """``kind``: gated, no-token (401 on a gated repo), token-refused, revision, not-found, disabled,
    offline (no network, or HF_HUB_OFFLINE with nothing cached), http (any other HTTP failure)."""

    kind: str
    status: int | None
    detail: str  # first line of the hub's message


def _status(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection failures of whichever HTTP client the installed huggingface_hub uses.

    Only modules already imported can have raised, so nothing is imported here.
    """
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]  # incl. OfflineModeIsEnabled
    clients = {
        "httpx2": ("TransportError",),  # huggingface_hub >= 2
        "httpx": ("TransportError",),  # 1.x
        "requests": ("ConnectionError", "Timeout"),  # 0.x
    }
    for module, names in clients.items():
        mod = sys.modules.get(module)
        errors += [getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type)]
    return tuple(errors)


def offline_mode() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_problem(exc: BaseException) -> HubProblem | None:
    """The kind of hub failure ``exc`` is, or None for an error that is not the hub's (a real bug)."""
    from huggingface_hub.errors import (
        DisabledRepoError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, LocalEntryNotFoundError) and isinstance(exc.__cause__, HfHubHTTPError):
        exc = exc.__cause__  # the hub fell back to the cache after an HTTP error: that error is the cause
    status = _status(exc)
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    kind = None
    if isinstance(exc, GatedRepoError):
        kind = "gated"
    elif isinstance(exc, RevisionNotFoundError):
        kind = "revision"
    elif isinstance(exc, RepositoryNotFoundError):
        kind = "no-token" if status == 401 else "not-found"  # the hub answers 401 for gated repos without a token
    elif isinstance(exc, DisabledRepoError):
        kind = "disabled"
    elif isinstance(exc, HfHubHTTPError) and status in (401, 403):
        kind = "token-refused"
    elif isinstance(exc, (LocalEntryNotFoundError, *_network_errors())):
        kind = "offline"
    elif isinstance(exc, HfHubHTTPError):
        kind = "http"
    return None if kind is None else HubProblem(kind, status, detail)
