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

from support import Harness, admin_headers, assert_envelope


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
    make_harness: Callable[..., Harness], empty_postgres: str, tmp_path: Path
) -> None:
    """The master (prepare_database) refuses to start on it; a worker (create_app) boots
    without touching the database and refuses to serve it: 503 until it is migrated."""
    from broker import prepare_database
    from broker.config import ConfigError

    env = {"BROKER_DATABASE_URL": empty_postgres, "BROKER_DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="broker db upgrade"):
        prepare_database(environ=env)
    harness = make_harness(BROKER_DATABASE_URL=empty_postgres)
    assert_envelope(harness.client.get("/v1/health"), 503, "database.unavailable")
    created = harness.client.post("/v1/keys", json={"tenant": "acme"}, headers=admin_headers())
    assert_envelope(created, 503, "database.unavailable")
    prepare_database(environ={**env, "BROKER_AUTO_MIGRATE": "1"})  # `broker db upgrade`
    assert harness.client.get("/v1/health").status_code == 200  # no restart needed


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_keys_keep_their_rights_when_scopes_are_split(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Before 0005 files:write also deleted: a stored key that could delete still can, and
    keys that could not (read-only, admin-only) gain nothing."""
    from sqlalchemy import insert, select

    from broker.db import migrate
    from broker.db.tables import api_keys

    url = (
        f"sqlite:///{tmp_path / 'old.sqlite3'}"
        if backend == "sqlite"
        else request.getfixturevalue("empty_postgres")
    )
    database = Database(url)
    try:
        with database.engine.begin() as conn:
            migrate.upgrade(conn, migrate.revision_before("0005"))
            for key_id, scopes in [
                ("key_rw", ["files:read", "files:write"]),
                ("key_w", ["files:write"]),
                ("key_r", ["files:read"]),
                ("key_admin", ["admin"]),
            ]:
                row = {"id": key_id, "tenant": "acme", "scopes": scopes, "secret_hash": "h",
                       "created_at": 1}  # fmt: skip
                conn.execute(insert(api_keys), row)  # the columns 0003 has, only
        database.upgrade()
        with database.engine.connect() as conn:
            rows = dict(conn.execute(select(api_keys.c.id, api_keys.c.scopes)).all())
        assert rows == {
            "key_rw": ["files:read", "files:write", "files:delete"],
            "key_w": ["files:write", "files:delete"],
            "key_r": ["files:read"],
            "key_admin": ["admin"],
        }
    finally:
        database.dispose()


def test_files_from_before_0007_keep_their_objects_where_they_are(tmp_path: Path) -> None:
    """Migration 0007 adds each file's own object key; rows it finds have none, so their
    bytes stay at ``tenant/bucket/key``, where they were stored."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    from broker.db import MetadataStore
    from broker.db.migrate import MIGRATIONS

    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(url)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0003")
        conn.execute(
            text(
                "INSERT INTO files (id, tenant, bucket, key, name, mime_type, size, user_metadata,"
                " status, created_at, updated_at, expires_at, completed_at, proxied) VALUES"
                " ('file_01JD7ABCDEFGHJKMNPQRSTVWXY', 'acme', 'default', 'docs/old.txt',"
                " 'old.txt', 'text/plain', 3, '{}', 'complete', 1, 1, 2, 1, 0)"
            )
        )
    engine.dispose()
    database = Database(url)
    database.upgrade()
    assert database.is_current()
    record = MetadataStore(database).get_file("acme", "file_01JD7ABCDEFGHJKMNPQRSTVWXY")
    assert record is not None
    assert (record.object_key, record.etag, record.version_id) == (None, None, None)
    assert record.storage_key == "acme/default/docs/old.txt"
