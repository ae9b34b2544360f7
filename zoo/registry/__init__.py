"""The learngene registry: SQLAlchemy models, a store with atomic writes, Alembic migrations."""

from .entities import GeneRecord, LearngeneInfo
from .store import Registry, default_registry_path, open_registry

__all__ = ["GeneRecord", "LearngeneInfo", "Registry", "default_registry_path", "open_registry"]
