"""Alembic environment for the coordinator's schema (run through coordinator.store.migrate).

The connection comes from the caller (config.attributes["connection"]); nothing is read
from alembic.ini or the environment, so the URL, and its password, never pass through here.
"""

from __future__ import annotations

from alembic import context

from coordinator.store.migrate import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata(),
    # SQLite cannot ALTER most things in place: batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
