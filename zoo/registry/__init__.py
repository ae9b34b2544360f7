"""The learngene registry: SQLAlchemy models, a store with atomic writes, Alembic migrations.

The store's names are imported on first use (PEP 562): modules that only need the entities (``LearngeneInfo``,
``GeneRecord``) do not load SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .entities import GeneRecord, LearngeneInfo

if TYPE_CHECKING:
    from .store import Registry, default_registry_path, open_registry

_STORE_NAMES = ("Registry", "default_registry_path", "open_registry")

__all__ = ["GeneRecord", "LearngeneInfo", "Registry", "default_registry_path", "open_registry"]


def __getattr__(name: str) -> Any:
    if name not in _STORE_NAMES:
        raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"{__name__}.store"), name)
    globals()[name] = value
    return value
