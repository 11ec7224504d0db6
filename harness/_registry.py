"""One generic plugin registry, used for encoders and for reducers.

Built-in plugins are modules of stbench imported on first use; other packages add theirs through an
entry-point group (``stbench.encoders``, ``stbench.reducers``). Each entry point is loaded in its own
``try`` so that one broken plugin is reported by name and never takes down the others (or ``--help``).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from stbench.errors import StbenchError

__all__ = ["Registry", "UnknownNameError", "PluginFailure"]

T = TypeVar("T")
log = logging.getLogger("stbench")


class UnknownNameError(StbenchError, KeyError):
    """A name that no registered plugin answers to."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


@dataclass(frozen=True)
class PluginFailure:
    """An entry point that could not be loaded: shown by `bench list`, never raised unless strict."""

    name: str
    target: str
    error: str


@dataclass
class _Entry(Generic[T]):
    obj: T
    origin: str
    aliases: tuple[str, ...] = ()


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _origin_of(obj: object) -> str:
    try:
        return f"{inspect.getsourcefile(obj) or inspect.getmodule(obj).__name__}"  # type: ignore[union-attr,arg-type]
    except TypeError:
        mod = getattr(type(obj), "__module__", "?")
        return mod


@dataclass
class Registry(Generic[T]):
    """Names -> plugin objects, with aliases, lazy loading and entry points.

    Args:
        kind: what the registry holds, for messages ("encoder", "reducer").
        group: the entry-point group other packages declare their plugins under.
        builtin_modules: stbench modules that register the built-in plugins when imported.
        key: the plugin's name and aliases, read from the plugin object.
    """

    kind: str
    group: str
    builtin_modules: Sequence[str]
    key: Callable[[T], tuple[str, Sequence[str]]]
    _entries: dict[str, _Entry[T]] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)
    _failures: list[PluginFailure] = field(default_factory=list)
    _loaded: bool = False
    _loading: str | None = None  # the entry point being imported, named in the origin of what it registers

    # -- registration ---------------------------------------------------------------------------------
    def register(self, obj: T, *, origin: str | None = None) -> T:
        """Add a plugin; a second, different plugin under a taken name or alias raises ValueError."""
        name, aliases = self.key(obj)
        name = _normalise(name)
        origin = origin or _origin_of(obj)
        if self._loading and "entry point" not in origin:
            origin = f"{origin} (entry point {self._loading})"
        for label in (name, *map(_normalise, aliases)):
            taken = self._aliases.get(label)
            if taken is None:
                continue
            existing = self._entries[taken]
            if existing.obj is obj:  # the same object registered twice (decorator + entry point)
                return obj
            msg = (
                f"{self.kind} name {label!r} is already registered by {existing.origin}; "
                f"refusing the second registration from {origin}"
            )
            raise ValueError(msg)
        self._entries[name] = _Entry(obj, origin, tuple(_normalise(a) for a in aliases))
        self._aliases[name] = name
        for alias in aliases:
            self._aliases[_normalise(alias)] = name
        return obj

    # -- loading --------------------------------------------------------------------------------------
    def load_plugins(self) -> None:
        """Import the built-ins and every allowed entry point once; failures are kept, not raised.

        ``STBENCH_LOAD_PLUGINS=a,b`` restricts which entry points load (empty: none);
        ``STBENCH_STRICT_PLUGINS=1`` re-raises the first failure (for plugin authors).
        """
        if self._loaded:
            return
        self._loaded = True
        for module in self.builtin_modules:
            importlib.import_module(module)
        allow = os.environ.get("STBENCH_LOAD_PLUGINS")
        allowed = None if allow is None else {_normalise(a) for a in allow.split(",") if a.strip()}
        strict = os.environ.get("STBENCH_STRICT_PLUGINS", "") not in ("", "0")
        for ep in entry_points(group=self.group):
            if allowed is not None and _normalise(ep.name) not in allowed:
                continue
            self._loading = f"{ep.name} = {ep.value}"
            try:
                obj = ep.load()
                if not inspect.ismodule(obj):  # a module registers its plugins when imported
                    self.register(obj, origin=f"entry point {ep.name} = {ep.value}")
            except Exception as exc:  # noqa: BLE001 - any plugin error is isolated and reported
                if strict:
                    raise
                failure = PluginFailure(ep.name, ep.value, f"{type(exc).__name__}: {exc}")
                self._failures.append(failure)
                log.warning("%s plugin %r (%s) failed to load: %s", self.kind, ep.name, ep.value, failure.error)
            finally:
                self._loading = None

    @property
    def failures(self) -> list[PluginFailure]:
        self.load_plugins()
        return list(self._failures)

    # -- lookup ---------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        self.load_plugins()
        return sorted(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        self.load_plugins()
        return isinstance(name, str) and _normalise(name) in self._aliases

    def resolve(self, name: str) -> str:
        """The canonical name for a name or alias; unknown names raise with suggestions."""
        self.load_plugins()
        canonical = self._aliases.get(_normalise(name))
        if canonical is not None:
            return canonical
        close = difflib.get_close_matches(_normalise(name), list(self._aliases), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        failed = [f.name for f in self._failures if _normalise(f.name) == _normalise(name)]
        if failed:
            hint += f" A plugin named {name!r} exists but failed to load (see `bench list {self.kind}s`)."
        msg = f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(self.names())}."
        raise UnknownNameError(msg)

    def get(self, name: str) -> T:
        return self._entries[self.resolve(name)].obj

    def origin(self, name: str) -> str:
        return self._entries[self.resolve(name)].origin

    def aliases(self, name: str) -> tuple[str, ...]:
        return self._entries[self.resolve(name)].aliases
