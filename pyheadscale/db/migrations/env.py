"""Alembic environment: migrations run on a connection handed in by pyheadscale.db.database."""

from __future__ import annotations

from alembic import context

from pyheadscale.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("pyheadscale migrations run through pyheadscale.db.database.migrate()")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
