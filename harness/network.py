"""Is the Hugging Face Hub reachable? Asked once, answered in at most ~1.5 s, never through the hub's retries.

`hub_reach` says offline at once when ``HF_HUB_OFFLINE`` (or ``STBENCH_OFFLINE``) is set; otherwise it opens
one TCP connection to the hub's host (``HF_ENDPOINT``'s, or the ``HTTPS_PROXY``'s when one is set) in a
daemon thread and stops waiting after ``timeout`` seconds, name resolution included (a dead resolver can
otherwise stall ``getaddrinfo`` for many seconds). The answer for a host is remembered for the process.

`offline_while` puts huggingface_hub in offline mode for a block (environment and its module constant, so Ray
workers started inside inherit it): files already in the cache then load at once instead of after the hub's
retries against an unreachable server.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["Reach", "hub_reach", "offline_while", "OFFLINE_ENVS"]

OFFLINE_ENVS = ("HF_HUB_OFFLINE", "STBENCH_OFFLINE")
TIMEOUT_S = 1.5
_probed: dict[tuple[str, int], tuple[bool, str]] = {}


@dataclass(frozen=True)
class Reach:
    online: bool
    why: str  # how that was decided, for people: "HF_HUB_OFFLINE=1", "huggingface.co:443 answered in 0.08 s"
    seconds: float = 0.0


def _offline_env() -> str | None:
    for name in OFFLINE_ENVS:
        if os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{name}={os.environ[name]}"
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    return "HF_HUB_OFFLINE (huggingface_hub)" if constants.HF_HUB_OFFLINE else None


def _target() -> tuple[str, int, str]:
    """(host, port, label): the proxy when HTTPS traffic goes through one, else the hub endpoint."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urllib.parse.urlparse(proxy if proxy else endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    return host, port, (f"proxy {host}:{port}" if proxy else f"{host}:{port}")


def _probe(host: str, port: int, timeout: float) -> tuple[bool, str]:
    result: list[str] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append("")
        except OSError as exc:
            result.append(type(exc).__name__ + (f": {exc.strerror}" if getattr(exc, "strerror", None) else ""))

    worker = threading.Thread(target=connect, daemon=True)  # left behind if name resolution hangs
    worker.start()
    worker.join(timeout)
    if not result:
        return False, f"no answer within {timeout:g} s"
    return (result[0] == ""), (result[0] or "answered")


def hub_reach(timeout: float = TIMEOUT_S) -> Reach:
    """Whether the Hugging Face Hub can be reached, decided once per host and process."""
    start = time.monotonic()
    flag = _offline_env()
    if flag:
        return Reach(False, f"{flag} is set")
    host, port, label = _target()
    if (host, port) not in _probed:
        _probed[(host, port)] = _probe(host, port, timeout)
    online, detail = _probed[(host, port)]
    took = time.monotonic() - start
    return Reach(online, f"{label} {'answered' if online else 'unreachable (' + detail + ')'}", took)


@contextmanager
def offline_while(reach: Reach | None) -> Iterator[None]:
    """Offline mode for huggingface_hub inside the block when ``reach`` says the hub is unreachable."""
    if reach is None or reach.online or _offline_env():
        yield
        return
    from huggingface_hub import constants

    before_env, before_const = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before_const
        if before_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before_env
