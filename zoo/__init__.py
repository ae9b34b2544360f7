"""zoo: a registry of learngenes, the low-frequency part of pretrained weights, and any-size models made from them.

    >>> import zoo
    >>> zoo.add_learngene("path/to/bert-folder")              # doctest: +SKIP
    >>> model = zoo.materialize("bert", layers=4, hidden=256)  # doctest: +SKIP

The API functions are imported on first use (PEP 562), so ``import zoo`` and ``from zoo import hookimpl``, which
every plugin does, load neither the registry nor extraction and materialization.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    DuplicateNameError,
    InvalidConfigError,
    RegistryError,
    SourceNotFoundError,
    UnknownNameError,
    ZooError,
)
from .hookspecs import hookimpl

if TYPE_CHECKING:
    from .api import (add_learngene, list_learngenes, materialize, materialize_request, materialize_request_to_disk,
                      materialize_to_disk, remove_learngene, show_learngene)
    from .plugin_host import catalog, register_plugin, unregister_plugin
    from .registry import open_registry
    from .request import MaterializeRequest
    from .share.export import export_learngene
    from .share.importer import import_learngene

# public name -> the module that defines it
_LAZY = {
    "add_learngene": "zoo.api",
    "list_learngenes": "zoo.api",
    "materialize": "zoo.api",
    "materialize_to_disk": "zoo.api",
    "materialize_request": "zoo.api",
    "materialize_request_to_disk": "zoo.api",
    "MaterializeRequest": "zoo.request",
    "remove_learngene": "zoo.api",
    "show_learngene": "zoo.api",
    "catalog": "zoo.plugin_host",
    "register_plugin": "zoo.plugin_host",
    "unregister_plugin": "zoo.plugin_host",
    "open_registry": "zoo.registry",
    "export_learngene": "zoo.share.export",
    "import_learngene": "zoo.share.importer",
}

__all__ = [
    "DuplicateNameError", "InvalidConfigError", "MaterializeRequest", "RegistryError", "SourceNotFoundError",
    "UnknownNameError", "ZooError", "__version__", "add_learngene", "catalog", "export_learngene", "hookimpl",
    "import_learngene", "list_learngenes", "materialize", "materialize_request", "materialize_request_to_disk",
    "materialize_to_disk", "open_registry",
    "register_plugin", "remove_learngene", "show_learngene", "unregister_plugin",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip this function
        return value
    try:  # a submodule: `import zoo; zoo.api` works as it did when this package imported everything
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
