"""The Database: durable SQLite settings, write locking, and failures answered with 503."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from db.faults import fail_next_commit
from sqlalchemy import text

from broker.db import Database, MetadataStore
from broker.errors import DatabaseUnavailable
from broker.models import FileRecord


@pytest.fixture
def sqlite_db(sqlite_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{sqlite_path}", busy_timeout=0.2)
    yield database
    database.dispose()


def test_every_sqlite_connection_is_durable(sqlite_db: Database) -> None:
    """WAL and synchronous=FULL on reads and writes alike: a returned commit is on disk."""
    for transaction in (sqlite_db.read, sqlite_db.write):
        with transaction() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 200


def test_a_returned_write_is_committed(
    sqlite_db: Database, sqlite_path: Path, new_file: Callable[..., FileRecord]
) -> None:
    record = new_file()
    MetadataStore(sqlite_db).insert_file(record)
    other = sqlite3.connect(sqlite_path)
    try:
        assert other.execute("SELECT id FROM files").fetchall() == [(record.id,)]
    finally:
        other.close()


def test_a_write_takes_the_sqlite_lock_at_begin(sqlite_db: Database, sqlite_path: Path) -> None:
    """BEGIN IMMEDIATE: writers queue for the lock instead of failing on upgrading to it."""
    other = sqlite3.connect(sqlite_path, timeout=0, isolation_level=None)
    try:
        with sqlite_db.read():
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        with sqlite_db.write(), pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    finally:
        other.close()


def test_a_locked_sqlite_answers_503_after_the_busy_timeout(
    sqlite_db: Database, sqlite_path: Path, new_file: Callable[..., FileRecord]
) -> None:
    store = MetadataStore(sqlite_db)
    record = new_file()
    other = sqlite3.connect(sqlite_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the writer's lock
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as failure:
            store.insert_file(record)
        assert failure.value.code == "database.unavailable"
        assert 0.15 < time.monotonic() - started < 5
        assert store.get_file("acme", record.id) is None  # reads go on meanwhile (WAL)
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.insert_file(record)
    assert store.get_file("acme", record.id) == record


def test_a_failing_commit_answers_503_and_leaves_nothing_behind(
    database: Database, monkeypatch: pytest.MonkeyPatch, new_file: Callable[..., FileRecord]
) -> None:
    """An I/O error at COMMIT: the request gets database.unavailable, its row is rolled
    back, and the next write goes through."""
    store = MetadataStore(database)
    fail_next_commit(database, monkeypatch)
    lost = new_file()
    with pytest.raises(DatabaseUnavailable):
        store.insert_file(lost)
    assert store.get_file("acme", lost.id) is None
    kept = new_file()
    store.insert_file(kept)
    assert store.get_file("acme", kept.id) == kept


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////nonexistent/dir/meta.sqlite3",
        "postgresql+psycopg://postgres@127.0.0.1:1/test",
    ],
)
def test_an_unreachable_database_answers_503(url: str) -> None:
    database = Database(url)
    with pytest.raises(DatabaseUnavailable):
        database.ping()
    with pytest.raises(DatabaseUnavailable), database.write() as conn:
        conn.execute(text("SELECT 1"))
    if not database.is_sqlite:  # SQLite takes no lock
        with pytest.raises(DatabaseUnavailable), database.try_lock(1):
            pass
    database.dispose()


def test_try_lock_is_held_by_one_session_at_a_time(postgres_url: str) -> None:
    first, second = Database(postgres_url), Database(postgres_url)
    try:
        with first.try_lock(42) as got:
            assert got
            with second.try_lock(42) as also:
                assert not also
        with second.try_lock(42) as got:
            assert got
    finally:
        first.dispose()
        second.dispose()


def test_try_lock_on_sqlite_always_succeeds(sqlite_db: Database) -> None:
    with sqlite_db.try_lock(42) as got, sqlite_db.try_lock(42) as also:
        assert got
        assert also


def test_a_row_locked_by_another_postgresql_session_answers_503_within_the_bound(
    empty_postgres: str, new_file: Callable[..., FileRecord]
) -> None:
    """A backup, a stuck admin session: a statement waiting on another session's row lock
    is cancelled at the bound (503), reads go on, and the write succeeds once it is gone."""
    database = Database(empty_postgres, busy_timeout=0.3)
    database.upgrade()
    store = MetadataStore(database)
    record = new_file()
    store.insert_file(record)
    other = Database(empty_postgres).engine.connect()
    try:
        other.begin()
        other.execute(text("SELECT 1 FROM files WHERE id = :id FOR UPDATE"), {"id": record.id})
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            store.delete_file("acme", record.id)
        assert 0.25 < time.monotonic() - started < 3
        assert store.get_file("acme", record.id) == record  # reads are not blocked
    finally:
        other.rollback()
        other.close()
    assert store.delete_file("acme", record.id)
    assert store.get_file("acme", record.id) is None
    database.dispose()
