"""Alembic environment: zoo passes its engine in ``config.attributes``; batch mode works around SQLite's ALTER.

The store passes an open ``connection`` too: it runs the migrations inside its own transaction, under its setup
lock, so a crash or a concurrent first run never leaves a half-migrated registry.
"""

from alembic import context

from zoo.registry.models import Base

connection = context.config.attributes.get("connection")
if connection is not None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    context.run_migrations()
else:
    with context.config.attributes["engine"].begin() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        context.run_migrations()
