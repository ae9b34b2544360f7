"""Alembic environment: zoo passes its engine in ``config.attributes``; batch mode works around SQLite's ALTER."""

from alembic import context

from zoo.registry.models import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    context.run_migrations()
