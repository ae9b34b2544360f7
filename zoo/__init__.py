"""zoo: a registry of learngenes, the low-frequency part of pretrained weights, and any-size models made from them.

    >>> import zoo
    >>> zoo.add_learngene("path/to/bert-folder")              # doctest: +SKIP
    >>> model = zoo.materialize("bert", layers=4, hidden=256)  # doctest: +SKIP
"""

__version__ = "0.1.0"

from .hookspecs import hookimpl  # noqa: E402  (first: plugins import it)
from .errors import (  # noqa: E402
    DuplicateNameError,
    InvalidConfigError,
    RegistryError,
    SourceNotFoundError,
    UnknownNameError,
    ZooError,
)
from .api import (  # noqa: E402
    add_learngene,
    list_learngenes,
    materialize,
    materialize_to_disk,
    remove_learngene,
    show_learngene,
)
from .plugins import catalog, register_plugin, unregister_plugin  # noqa: E402
from .registry import open_registry  # noqa: E402

__all__ = [
    "DuplicateNameError", "InvalidConfigError", "RegistryError", "SourceNotFoundError", "UnknownNameError", "ZooError",
    "__version__", "add_learngene", "catalog", "hookimpl", "list_learngenes", "materialize", "materialize_to_disk",
    "open_registry",
    "register_plugin", "remove_learngene", "show_learngene", "unregister_plugin",
]
