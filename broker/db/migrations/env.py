"""Alembic environment: runs on the connection the broker hands over, or on a URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from broker.db.tables import metadata

config = context.config


def run() -> None:
    """Migrate on the caller's connection (inside its transaction and lock) when given."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        context.run_migrations()


run()
