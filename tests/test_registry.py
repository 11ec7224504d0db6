"""The plugin registry: names, aliases, duplicates, suggestions, entry points and broken plugins."""

import sys
import textwrap
from dataclasses import dataclass

import pytest

from stbench._registry import Registry, UnknownNameError


@dataclass(frozen=True)
class Thing:
    name: str
    aliases: tuple = ()


def fresh(group="stbench.test-things"):
    return Registry(kind="thing", group=group, builtin_modules=(), key=lambda t: (t.name, t.aliases))


def test_register_get_and_aliases_case_insensitive():
    reg = fresh()
    a = reg.register(Thing("alpha-one", ("a1",)))
    assert reg.get("Alpha_One") is a and reg.get("A1") is a
    assert reg.names() == ["alpha-one"] and "a1" in reg


def test_duplicate_name_raises_naming_both_origins():
    reg = fresh()
    reg.register(Thing("x"), origin="pkg_one.mod")
    with pytest.raises(ValueError, match=r"'x' is already registered by pkg_one\.mod.*from pkg_two\.mod"):
        reg.register(Thing("x", ("other",)), origin="pkg_two.mod")
    with pytest.raises(ValueError, match="already registered"):
        reg.register(Thing("y", ("x",)), origin="pkg_three")  # an alias may not shadow a name either
    same = reg.get("x")
    assert reg.register(same) is same  # the same object twice (decorator + entry point) is fine


def test_unknown_name_suggests_close_names_and_lists_all():
    reg = fresh()
    reg.register(Thing("virchow2"))
    reg.register(Thing("uni"))
    with pytest.raises(UnknownNameError, match=r"Did you mean: virchow2\?.*Available: uni, virchow2") as exc:
        reg.get("virchow3")
    assert "unknown thing 'virchow3'" in str(exc.value)


def _install_plugin(tmp_path, monkeypatch, body, ep_lines):
    """A real installed distribution on sys.path: a module plus dist-info/entry_points.txt."""
    (tmp_path / "my_plugin_mod.py").write_text(textwrap.dedent(body))
    dist = tmp_path / "my_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[stbench.test-things]\n" + ep_lines)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_plugin_mod", raising=False)


def test_entry_point_plugins_load_and_a_broken_one_is_reported_not_raised(tmp_path, monkeypatch):
    body = """
        from tests.test_registry import Thing
        GOOD = Thing("good-plugin")
        def __getattr__(name):
            if name == "BAD":
                raise ImportError("needs a package that is not installed")
            raise AttributeError(name)
    """
    _install_plugin(tmp_path, monkeypatch, body, "good = my_plugin_mod:GOOD\nbad = my_plugin_mod:BAD\n")
    reg = fresh()
    assert reg.names() == ["good-plugin"]
    assert "entry point good" in reg.origin("good-plugin")
    [failure] = reg.failures
    assert failure.name == "bad" and "not installed" in failure.error
    with pytest.raises(UnknownNameError, match="exists but failed to load"):
        reg.get("bad")


def test_strict_plugins_reraise_and_allowlist_filters(tmp_path, monkeypatch):
    body = """
        from tests.test_registry import Thing
        GOOD = Thing("good-plugin")
    """
    _install_plugin(tmp_path, monkeypatch, body, "good = my_plugin_mod:GOOD\nmissing = my_plugin_mod:NOPE\n")
    monkeypatch.setenv("STBENCH_LOAD_PLUGINS", "good")
    reg = fresh()
    assert reg.names() == ["good-plugin"] and reg.failures == []
    monkeypatch.delenv("STBENCH_LOAD_PLUGINS")
    monkeypatch.setenv("STBENCH_STRICT_PLUGINS", "1")
    with pytest.raises(AttributeError):
        fresh().names()


def test_builtin_registries_hold_the_defaults():
    from stbench.encoders import encoders
    from stbench.reducers import reducers

    assert "efficientnet-lite0" in encoders.names()
    assert {"identity", "pca"} <= set(reducers.names())
    assert reducers.resolve("raw") == "identity"
