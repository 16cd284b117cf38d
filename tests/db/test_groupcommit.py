"""SQLite's group commit: shared commits, failures kept to their own write, the file lock."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
from db.faults import fail_next_commit
from sqlalchemy import Connection, event

from broker.db import Database, KeyExists, MetadataStore
from broker.errors import DatabaseUnavailable
from broker.models import FileRecord

NewFile = Callable[..., FileRecord]


@pytest.fixture
def database(sqlite_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{sqlite_path}", busy_timeout=5)
    yield database
    database.dispose()


@pytest.fixture
def commits(database: Database) -> list[int]:
    """One entry per COMMIT the engine runs."""
    seen: list[int] = []
    event.listen(database.engine, "commit", lambda conn: seen.append(1))
    return seen


@pytest.fixture
def other_process(sqlite_path: Path) -> Iterator[int]:
    """The writer lock file, held as another process committing would hold it."""
    fd = os.open(f"{sqlite_path}.writer-lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield fd
    os.close(fd)


def _start(targets: list[Callable[[], object]]) -> list[threading.Thread]:
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    return threads


def _queued(database: Database, count: int) -> None:
    """Wait until ``count`` writes are queued behind the held lock."""
    group = database._group
    assert group is not None
    deadline = time.monotonic() + 10
    while group._queue.qsize() < count:
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_the_writer_connection_is_durable(database: Database) -> None:
    def pragmas(conn: Connection) -> tuple[object, object]:
        journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        return journal, conn.exec_driver_sql("PRAGMA synchronous").scalar()

    assert database.run_write(pragmas) == ("wal", 2)  # FULL


def test_writes_queued_meanwhile_share_one_commit(
    database: Database, other_process: int, commits: list[int], new_file: NewFile
) -> None:
    store = MetadataStore(database)
    records = [new_file() for _ in range(6)]
    threads = _start([partial(store.insert_file, r) for r in records])
    _queued(database, 6)
    fcntl.flock(other_process, fcntl.LOCK_UN)  # the other process's commit is done
    for thread in threads:
        thread.join(timeout=10)
    assert commits == [1]
    assert {r.id for r in store.list_files("acme", "default", limit=10)} == {r.id for r in records}


def test_concurrent_writers_are_all_committed(database: Database, new_file: NewFile) -> None:
    store = MetadataStore(database)
    records = [new_file() for _ in range(40)]
    barrier = threading.Barrier(len(records))

    def create(record: FileRecord) -> None:
        barrier.wait()
        store.insert_file(record)

    for thread in _start([partial(create, r) for r in records]):
        thread.join(timeout=30)
    stored = store.list_files("acme", "default", limit=100)
    assert {r.id for r in stored} == {r.id for r in records}


def test_a_failing_write_in_a_batch_fails_only_its_own_request(
    database: Database, other_process: int, new_file: NewFile
) -> None:
    store = MetadataStore(database)
    fcntl.flock(other_process, fcntl.LOCK_UN)
    store.insert_file(new_file(key="taken"))
    fcntl.flock(other_process, fcntl.LOCK_EX)
    outcomes: dict[str, str] = {}

    def create(key: str) -> None:
        try:
            store.insert_file(new_file(key=key))
            outcomes[key] = "created"
        except KeyExists:
            outcomes[key] = "exists"

    keys = ["a", "b", "taken", "c", "d"]
    threads = _start([partial(create, k) for k in keys])
    _queued(database, len(keys))
    fcntl.flock(other_process, fcntl.LOCK_UN)
    for thread in threads:
        thread.join(timeout=10)
    assert outcomes == {
        "a": "created",
        "b": "created",
        "taken": "exists",
        "c": "created",
        "d": "created",
    }
    assert len(store.list_files("acme", "default", limit=10)) == 5


def test_a_failed_commit_answers_503_to_its_batch_and_the_writer_goes_on(
    database: Database,
    other_process: int,
    monkeypatch: pytest.MonkeyPatch,
    new_file: NewFile,
) -> None:
    store = MetadataStore(database)
    fail_next_commit(database, monkeypatch)
    lost = [new_file() for _ in range(3)]
    answers: list[str] = []

    def create(record: FileRecord) -> None:
        try:
            store.insert_file(record)
            answers.append("created")
        except DatabaseUnavailable:
            answers.append("503")

    threads = _start([partial(create, r) for r in lost])
    _queued(database, 3)
    fcntl.flock(other_process, fcntl.LOCK_UN)
    for thread in threads:
        thread.join(timeout=10)
    assert answers == ["503"] * 3
    assert store.list_files("acme", "default", limit=10) == []
    kept = new_file()
    store.insert_file(kept)
    assert store.list_files("acme", "default", limit=10) == [kept]


def test_a_frozen_process_holding_the_lock_costs_a_503_not_a_stall(
    sqlite_path: Path, other_process: int, new_file: NewFile
) -> None:
    store = MetadataStore(Database(f"sqlite:///{sqlite_path}", busy_timeout=0.3))
    refused = new_file()
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        store.insert_file(refused)
    assert 0.25 < time.monotonic() - started < 5
    fcntl.flock(other_process, fcntl.LOCK_UN)  # it resumes
    kept = new_file()
    store.insert_file(kept)
    assert store.list_files("acme", "default", limit=10) == [kept]  # the refused one never lands
    store.db.dispose()


def test_two_processes_take_turns_on_the_lock_file(sqlite_path: Path, new_file: NewFile) -> None:
    """Two stores on one file (as two gunicorn workers): every write of both lands."""
    databases = [Database(f"sqlite:///{sqlite_path}") for _ in range(2)]
    stores = [MetadataStore(d) for d in databases]
    records = [new_file() for _ in range(16)]
    barrier = threading.Barrier(len(records))

    def create(index: int) -> None:
        barrier.wait()
        stores[index % 2].insert_file(records[index])

    for thread in _start([partial(create, i) for i in range(len(records))]):
        thread.join(timeout=30)
    assert Path(f"{sqlite_path}.writer-lock").exists()
    stored = stores[1].list_files("acme", "default", limit=100)
    assert {r.id for r in stored} == {r.id for r in records}
    for database in databases:
        database.dispose()


@contextmanager
def _immutable(*paths: Path) -> Iterator[None]:
    """``chattr +i``: writes fail even for root (who ignores file modes)."""
    names = [str(p) for p in paths if p.exists()]
    if subprocess.run(["chattr", "+i", *names], capture_output=True, check=False).returncode:
        pytest.skip("chattr +i is unavailable here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *names], check=True)


def test_a_read_only_database_is_503_and_heals_without_a_restart(
    database: Database, sqlite_path: Path, new_file: NewFile
) -> None:
    """Writes fail while the file cannot be written (503 at once, not after a timeout); once
    it can, the next write succeeds: on a process that wrote before, and on one that only
    read meanwhile (SQLite opened its connections read-only, for good)."""
    store = MetadataStore(database)
    store.insert_file(new_file())
    booted = Database(f"sqlite:///{sqlite_path}", busy_timeout=5)  # a worker booted meanwhile
    late = MetadataStore(booted)
    try:
        with _immutable(sqlite_path, sqlite_path.with_name(sqlite_path.name + "-wal")):
            assert store.get_file("acme", "file_missing") is None  # reads go on
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable):
                store.insert_file(new_file())
            assert time.monotonic() - started < 1
            assert late.get_file("acme", "file_missing") is None  # opens one, read-only
        for target in (store, late):
            kept = new_file()
            target.insert_file(kept)
            assert target.get_file("acme", kept.id) == kept
    finally:
        booted.dispose()
