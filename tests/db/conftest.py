"""Fixtures of the metadata store tests: a migrated database on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from broker.db import Database, MetadataStore
from broker.ids import new_id
from broker.models import FileRecord, Status


@pytest.fixture
def empty_postgres(postgres_url: str) -> str:
    """The session's PostgreSQL database with no tables (they outlive each test)."""
    database = Database(postgres_url)
    with database.engine.begin() as conn:
        conn.execute(
            text("DROP TABLE IF EXISTS files, api_keys, idempotency_keys, alembic_version")
        )
    database.dispose()
    return postgres_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'meta.sqlite3'}")
    else:
        db = Database(request.getfixturevalue("empty_postgres"))
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    """A migrated SQLite file."""
    path = tmp_path / "meta.sqlite3"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    db.dispose()
    return path


@pytest.fixture
def store(database: Database) -> MetadataStore:
    return MetadataStore(database)


@pytest.fixture
def new_file() -> Callable[..., FileRecord]:
    """Build a pending file of tenant ``acme`` (a fresh id, and key unless given)."""

    def build(tenant: str = "acme", key: str | None = None, **fields: object) -> FileRecord:
        file_id = new_id("file")
        values: dict[str, object] = {
            "id": file_id,
            "tenant": tenant,
            "bucket": "default",
            "key": key or file_id,
            "name": "a.txt",
            "mime_type": "text/plain",
            "size": 1,
            "sha256": None,
            "metadata": {"k": "v"},
            "status": Status.PENDING,
            "created_at": 1,
            "updated_at": 1,
            "expires_at": 100,
        }
        values.update(fields)
        return FileRecord(**values)  # type: ignore[arg-type]

    return build
