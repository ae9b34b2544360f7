"""The plugin host: loading plugins, and the catalog of the adapters, transforms and resize strategies they register.

Third-party plugins come from ``zoo`` entry points; zoo's own, in ``zoo_plugins``, are listed once, in
``BUILTIN_PLUGINS`` (as pytest, llm and datasette list theirs), so an installed zoo and a source tree that was never
installed load the same built-ins, and adding one needs no reinstall. Both kinds implement the same hooks.
A plugin that fails to import produces a warning naming it; the rest keep working.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import DuplicateNameError, UnknownNameError

ENTRY_POINT_GROUP = "zoo"
# zoo's own plugins; each registers under its module's last name ("bert"), as an entry point's name would.
BUILTIN_PLUGINS = (
    "zoo_plugins.architectures.bert",
    "zoo_plugins.architectures.gpt2",
    "zoo_plugins.architectures.vit",
    "zoo_plugins.sources.onnx_source",
    "zoo_plugins.architectures.llama",
    "zoo_plugins.transforms.dct",
    "zoo_plugins.strategies.spectral",
    "zoo_plugins.transforms.dwt",
    "zoo_plugins.strategies.wavelet",
    "zoo_plugins.strategies.baselines",
    "zoo_plugins.transforms.ordered",
)

pm = pluggy.PluginManager("zoo")
pm.add_hookspecs(hookspecs)
# plugin name -> distribution "name version" (or "builtin" / "test"), for `zoo plugins`
plugin_sources: dict[str, str] = {}
load_errors: dict[str, str] = {}
_loaded = False


def _env_list(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {item.strip() for item in value.split(",") if item.strip()}


def load_plugins() -> None:
    """Load entry-point and built-in plugins, once per process."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    only = _env_list("ZOO_LOAD_PLUGINS")
    disabled = _env_list("ZOO_DISABLE_PLUGINS") or set()
    strict = os.environ.get("ZOO_STRICT_PLUGINS") == "1"

    seen: set[tuple[str, str]] = set()
    entry_points = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    for ep in entry_points:
        if (ep.name, ep.value) in seen:  # duplicated dist-info (lib64 -> lib symlinks) lists plugins twice
            continue
        seen.add((ep.name, ep.value))
        if ep.name in disabled or (only is not None and ep.name not in only):
            continue
        if pm.has_plugin(ep.name):
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must not take the CLI down
            if strict:
                raise
            load_errors[ep.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"zoo plugin '{ep.name}' failed to load: {exc}", stacklevel=2)
            continue
        pm.register(module, name=ep.name)
        dist = getattr(ep, "dist", None)
        plugin_sources[ep.name] = f"{dist.name} {dist.version}" if dist else "entry point"

    for module_name in BUILTIN_PLUGINS:
        short = module_name.rsplit(".", 1)[-1]
        if short in disabled or (only is not None and short not in only) or pm.has_plugin(short):
            continue
        if any(plugin is sys.modules.get(module_name) for plugin in pm.get_plugins()):
            continue
        pm.register(importlib.import_module(module_name), name=short)
        plugin_sources[short] = "builtin"
    _reset_catalog()


@dataclass
class Registered:
    obj: Any
    plugin: str


@dataclass
class Catalog:
    """Everything plugins registered, by kind and name."""

    architectures: dict[str, Registered] = field(default_factory=dict)
    transforms: dict[str, Registered] = field(default_factory=dict)
    resize_strategies: dict[str, Registered] = field(default_factory=dict)

    def architecture(self, name: str) -> Any:
        table = self.architectures
        if name in table:
            return table[name].obj
        for entry in table.values():  # aliases such as "gpt" for "gpt2"
            if name in getattr(entry.obj, "arch_aliases", ()):
                return entry.obj
        valid = list(table) + [a for e in table.values() for a in getattr(e.obj, "arch_aliases", ())]
        raise UnknownNameError("architecture", name, valid)

    def transform(self, name: str) -> Any:
        return self._lookup("transform", self.transforms, name)

    def resize_strategy(self, name: str) -> Any:
        return self._lookup("resize strategy", self.resize_strategies, name)

    @staticmethod
    def _lookup(kind: str, table: dict[str, Registered], name: str) -> Any:
        if name not in table:
            raise UnknownNameError(kind, name, table)
        return table[name].obj


_catalog: Catalog | None = None


def _reset_catalog() -> None:
    global _catalog
    _catalog = None


def _plugin_name(impl_plugin: Any) -> str:
    return pm.get_name(impl_plugin) or repr(impl_plugin)


def _collect(hook_name: str, table: dict[str, Registered]) -> None:
    hook = getattr(pm.hook, hook_name)
    # Call each implementation on its own so every entry is stamped with the plugin that registered it.
    for impl in hook.get_hookimpls():  # registration order (pluggy would call them last-registered first)
        plugin = _plugin_name(impl.plugin)

        def register(obj: Any, replace: bool = False, _plugin: str = plugin) -> None:
            name = getattr(obj, "name", None)
            if not isinstance(name, str) or not name:
                raise TypeError(f"plugin '{_plugin}' registered {obj!r} without a string 'name' attribute")
            if name in table and not replace:
                raise DuplicateNameError(
                    f"{hook_name.removeprefix('register_').rstrip('s').replace('_', ' ')} '{name}' from plugin "
                    f"'{_plugin}' conflicts with plugin '{table[name].plugin}'; pass replace=True to override"
                )
            if hook_name == "register_architectures":
                _check_claims(table, name, obj, _plugin)
            table[name] = Registered(obj, _plugin)

        impl.function(register=register)


def _claims(name: str, adapter: Any) -> set[tuple[str, str]]:
    """What an adapter answers to: its name and ``--arch`` aliases, the config ``model_type`` values it reads, and
    the short source names it resolves."""
    return ({("architecture name or alias", n) for n in (name, *getattr(adapter, "arch_aliases", ()))}
            | {("model_type", t) for t in getattr(adapter, "model_types", ())}
            | {("source alias", a) for a in getattr(adapter, "source_aliases", {})})


def _check_claims(table: dict[str, Registered], name: str, adapter: Any, plugin: str) -> None:
    """Refuse an adapter that answers to something another one (other than the one it replaces) answers to, so
    which adapter reads a checkpoint never depends on the order plugins load in."""
    mine = _claims(name, adapter)
    for other, entry in table.items():
        if other == name:
            continue
        shared = sorted(mine & _claims(other, entry.obj))
        if shared:
            kind, value = shared[0]
            raise DuplicateNameError(
                f"architecture '{name}' from plugin '{plugin}' and architecture '{other}' from plugin "
                f"'{entry.plugin}' both claim {kind} '{value}'; each must belong to one architecture"
            )


def catalog() -> Catalog:
    """The catalog of registered components, rebuilt whenever plugins change."""
    global _catalog
    load_plugins()
    if _catalog is None:
        built = Catalog()
        _collect("register_architectures", built.architectures)
        _collect("register_transforms", built.transforms)
        _collect("register_resize_strategies", built.resize_strategies)
        _catalog = built
    return _catalog


def register_plugin(plugin: Any, name: str | None = None) -> str:
    """Register a plugin object or module at run time (tests, notebooks, ``--plugin``)."""
    load_plugins()
    registered = pm.register(plugin, name=name)
    if registered is None:
        raise DuplicateNameError(f"a plugin named '{name}' is already registered")
    plugin_sources[registered] = "runtime"
    _reset_catalog()
    try:
        catalog()  # validate now so a conflicting plugin is rejected whole
    except Exception:
        pm.unregister(name=registered)
        plugin_sources.pop(registered, None)
        _reset_catalog()
        raise
    return registered


def unregister_plugin(name: str) -> None:
    pm.unregister(name=name)
    plugin_sources.pop(name, None)
    _reset_catalog()
