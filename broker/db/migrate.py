"""Schema migrations: Alembic's upgrade and head check on the caller's connection."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, func, select

MIGRATIONS = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 0x62726F6B  # "brok": serialises concurrent `db upgrade` runs


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(conn: Connection, revision: str = "head") -> None:
    """Apply every pending migration (up to ``revision``) inside the caller's write
    transaction.

    On SQLite that transaction already holds the one writer's lock; on PostgreSQL a
    transaction-scoped advisory lock makes concurrent upgrades take turns.
    """
    if conn.dialect.name == "postgresql":
        # Requests are bounded (statement_timeout, lock_timeout: engine.py); a migration
        # (an index over a large table, a wait for another upgrade's turn) may take longer.
        conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
        conn.exec_driver_sql("SET LOCAL lock_timeout = 0")
        conn.execute(select(func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
    config = _config()
    config.attributes["connection"] = conn  # env.py migrates on it
    command.upgrade(config, revision)


def revision_before(revision: str) -> str:
    """The migration ``revision`` follows (for tests of what it does to existing rows)."""
    script = ScriptDirectory.from_config(_config()).get_revision(revision)
    assert script is not None
    assert isinstance(script.down_revision, str)
    return script.down_revision


def is_current(conn: Connection) -> bool:
    """Whether the schema ``conn`` sees is at the newest migration."""
    heads = set(ScriptDirectory.from_config(_config()).get_heads())
    return set(MigrationContext.configure(conn).get_current_heads()) == heads
