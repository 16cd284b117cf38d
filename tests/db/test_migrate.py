"""Migrations: they build exactly the tables, run once, and take turns when raced."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from broker.db import Database
from broker.db.tables import metadata

from support import Harness


def test_migrations_match_the_table_definitions(database: Database) -> None:
    with database.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    assert database.is_current()


def test_upgrade_is_idempotent(database: Database) -> None:
    database.upgrade()
    database.upgrade()
    assert database.is_current()


def test_concurrent_upgrades_do_not_collide(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.sqlite3'}"
    errors: list[BaseException] = []

    def upgrade() -> None:
        try:
            Database(url).upgrade()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Database(url).is_current()


def test_an_empty_database_is_not_current(empty_postgres: str) -> None:
    database = Database(empty_postgres)
    try:
        assert not database.is_current()
    finally:
        database.dispose()


def test_an_unmigrated_postgresql_is_refused_at_start(
    make_harness: Callable[..., Harness], empty_postgres: str
) -> None:
    from broker.config import ConfigError

    with pytest.raises(ConfigError, match="broker db upgrade"):
        make_harness(BROKER_DATABASE_URL=empty_postgres)
