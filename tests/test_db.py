"""The metadata store on SQLite and on real PostgreSQL: migrations, constraints, races."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from broker.db import (
    Database,
    IdempotencyConflict,
    IdempotentAnswer,
    KeyExists,
    MetadataStore,
    metadata,
)
from broker.ids import new_id
from broker.models import FileRecord, Status

from support import Harness


def _drop_schema(database: Database) -> None:
    with database.engine.begin() as conn:
        tables = "files, api_keys, idempotency_keys, alembic_version"
        conn.execute(text(f"DROP TABLE IF EXISTS {tables}"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'meta.sqlite3'}")
    else:
        db = Database(request.getfixturevalue("postgres_url"))
        with db.engine.begin() as conn:  # each test starts from an empty schema
            conn.execute(
                text("DROP TABLE IF EXISTS files, api_keys, idempotency_keys, alembic_version")
            )
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture
def store(database: Database) -> MetadataStore:
    return MetadataStore(database)


def _record(tenant: str = "acme", key: str | None = None, **fields: object) -> FileRecord:
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


def test_round_trip_of_a_file_record(store: MetadataStore) -> None:
    record = _record(key="a/ü.txt", sha256="f" * 64, size=2**40)
    store.insert_file(record)
    assert store.get_file("acme", record.id) == record
    assert store.get_file("other", record.id) is None


def test_a_live_key_is_unique_per_tenant_and_bucket(store: MetadataStore) -> None:
    store.insert_file(_record(key="k"))
    with pytest.raises(KeyExists):
        store.insert_file(_record(key="k"))
    store.insert_file(_record(tenant="globex", key="k"))
    store.insert_file(_record(key="k", bucket="other"))


def test_failed_and_aborted_files_free_their_key(store: MetadataStore) -> None:
    first = _record(key="k")
    store.insert_file(first)
    assert store.transition("acme", first.id, Status.PENDING, Status.FAILED)
    second = _record(key="k")
    store.insert_file(second)
    assert store.get_file_by_key("acme", "default", "k") == second


def test_transition_only_from_the_expected_status(store: MetadataStore) -> None:
    record = _record()
    store.insert_file(record)
    assert store.transition("acme", record.id, Status.PENDING, Status.COMPLETE, completed_at=5)
    assert not store.transition("acme", record.id, Status.PENDING, Status.FAILED)
    current = store.get_file("acme", record.id)
    assert current is not None
    assert (current.status, current.completed_at) == (Status.COMPLETE, 5)


def test_only_one_of_many_racing_completions_wins(store: MetadataStore) -> None:
    record = _record()
    store.insert_file(record)
    wins: list[bool] = []
    barrier = threading.Barrier(6)

    def attempt() -> None:
        barrier.wait()
        wins.append(store.transition("acme", record.id, Status.PENDING, Status.COMPLETE))

    _run_threads(attempt, 6)
    assert sorted(wins) == [False] * 5 + [True]


def test_racing_creates_of_one_key_yield_exactly_one_file(store: MetadataStore) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def create() -> None:
        barrier.wait()
        try:
            store.insert_file(_record(key="contended"))
            outcomes.append("created")
        except KeyExists:
            outcomes.append("exists")

    _run_threads(create, 6)
    assert sorted(outcomes) == ["created"] + ["exists"] * 5


def test_racing_idempotent_creates_record_one_answer(store: MetadataStore) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def create() -> None:
        answer = IdempotentAnswer("acme", "idem", "fp", 201, {"id": "x"}, created_at=10)
        barrier.wait()
        try:
            store.insert_file(_record(), answer)
            outcomes.append("created")
        except IdempotencyConflict:
            outcomes.append("replay")

    _run_threads(create, 6)
    assert sorted(outcomes) == ["created"] + ["replay"] * 5
    answer = store.get_answer("acme", "idem", now=10)
    assert answer is not None
    assert answer.response == {"id": "x"}


def test_listing_is_keyset_paginated_and_escapes_like(store: MetadataStore) -> None:
    records = [_record(key=k) for k in ("a%b", "a_c", "abc", "x")]
    for record in records:
        store.insert_file(record)
    newest_first = [r.id for r in reversed(records)]
    page = store.list_files("acme", "default", limit=2)
    assert [r.id for r in page] == newest_first[:2]
    rest = store.list_files("acme", "default", limit=5, after_id=page[-1].id)
    assert [r.id for r in rest] == newest_first[2:]
    assert [r.key for r in store.list_files("acme", "default", limit=9, prefix="a%")] == ["a%b"]
    assert [r.key for r in store.list_files("acme", "default", limit=9, prefix="a_")] == ["a_c"]


def test_keys_revoke_once(store: MetadataStore) -> None:
    from broker.auth import mint_key

    record, _ = mint_key("acme", "ci", ("files:read",), now=1)
    store.insert_key(record)
    assert store.revoke_key(record.id, at=2)
    assert not store.revoke_key(record.id, at=3)
    stored = store.get_key(record.id)
    assert stored is not None
    assert stored.revoked_at == 2


def _run_threads(target: Callable[[], None], count: int) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.fixture
def pg_harness(make_harness: Callable[..., Harness], postgres_url: str) -> Harness:
    """The whole app on PostgreSQL (migrated by `broker db upgrade`'s code path)."""
    database = Database(postgres_url)
    with database.engine.begin() as conn:
        conn.execute(
            text("DROP TABLE IF EXISTS files, api_keys, idempotency_keys, alembic_version")
        )
    database.upgrade()
    database.dispose()
    return make_harness(BROKER_DATABASE_URL=postgres_url.replace("+psycopg", ""))


def test_the_api_round_trips_on_postgresql(pg_harness: Harness) -> None:
    acme, globex = pg_harness.key("acme"), pg_harness.key("globex")
    done = pg_harness.upload(acme, b"on postgres", key="pg/file.txt")
    assert pg_harness.download(done["download_url"]).data == b"on postgres"
    assert pg_harness.client.get(f"/v1/files/{done['id']}", headers=globex).status_code == 404
    clash = pg_harness.client.post(
        "/v1/files",
        headers=acme,
        json={"name": "b", "size": 1, "mime_type": "text/plain", "key": "pg/file.txt"},
    )
    assert clash.status_code == 409
    listing = pg_harness.client.get("/v1/buckets/default/files?prefix=pg/", headers=acme).json
    assert [f["id"] for f in listing["data"]] == [done["id"]]


def test_an_unmigrated_postgresql_is_refused_at_start(
    make_harness: Callable[..., Harness], postgres_url: str
) -> None:
    from broker.config import ConfigError

    database = Database(postgres_url)
    with database.engine.begin() as conn:
        conn.execute(
            text("DROP TABLE IF EXISTS files, api_keys, idempotency_keys, alembic_version")
        )
    database.dispose()
    with pytest.raises(ConfigError, match="broker db upgrade"):
        make_harness(BROKER_DATABASE_URL=postgres_url)


def test_a_failing_write_in_a_busy_batch_fails_alone(store: MetadataStore) -> None:
    """Concurrent writes share commits (SQLite); one collision must not take others down."""
    store.insert_file(_record(key="taken"))
    outcomes: dict[str, str] = {}
    barrier = threading.Barrier(24)

    def create(index: int) -> None:
        key = "taken" if index == 0 else f"free-{index}"
        barrier.wait()
        try:
            store.insert_file(_record(key=key))
            outcomes[key] = "created"
        except KeyExists:
            outcomes[key] = "exists"

    threads = [threading.Thread(target=create, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.pop("taken") == "exists"
    assert set(outcomes.values()) == {"created"}
    assert len(outcomes) == 23
    stored = {r.key for r in store.list_files("acme", "default", limit=100)}
    assert stored == {"taken", *outcomes}


def test_group_commit_writes_durably_on_its_raw_connection(tmp_path: Path) -> None:
    """The SQLite writer connection keeps WAL and synchronous=FULL, and a returned write is
    committed: a fresh connection sees it at once."""
    import sqlite3

    database = Database(f"sqlite:///{tmp_path / 'meta.sqlite3'}")
    database.upgrade()
    store = MetadataStore(database)
    record = _record()
    store.insert_file(record)
    writer = database._group._writer()  # type: ignore[union-attr]
    assert writer.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert writer.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert not writer.in_transaction
    other = sqlite3.connect(tmp_path / "meta.sqlite3")
    try:
        assert other.execute("SELECT id FROM files").fetchall() == [(record.id,)]
    finally:
        other.close()
    assert store.get_file("acme", record.id) == record
    database.dispose()


def test_a_revocation_is_seen_at_once_by_every_thread(store: MetadataStore) -> None:
    """Key lookups reuse a connection per thread; none may answer from a stale snapshot."""
    from broker.auth import mint_key

    record, _ = mint_key("acme", "ci", ("files:read",), now=1)
    store.insert_key(record)
    seen: list[int | None] = []

    def look() -> None:
        found = store.get_key(record.id)
        assert found is not None
        seen.append(found.revoked_at)

    look()  # this thread's connection is now open and has read the key
    _run_threads(look, 4)
    assert store.revoke_key(record.id, at=2)
    look()
    _run_threads(look, 4)
    assert seen == [None] * 5 + [2] * 5
    store.db.dispose()  # closes every thread's connection; the next read opens another
    look()
    assert seen[-1] == 2


def test_two_processes_group_commits_take_turns(tmp_path: Path) -> None:
    """Two stores on one SQLite file (as two gunicorn workers) queue on the writer lock
    file, not in SQLite's busy handler; every write of both lands."""
    path = tmp_path / "meta.sqlite3"
    databases = [Database(f"sqlite:///{path}") for _ in range(2)]
    databases[0].upgrade()
    stores = [MetadataStore(d) for d in databases]
    barrier = threading.Barrier(16)
    keys: list[str] = []

    def create(index: int) -> None:
        barrier.wait()
        record = _record(key=f"k-{index}")
        stores[index % 2].insert_file(record)
        keys.append(record.key)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (tmp_path / "meta.sqlite3.writer-lock").exists()
    stored = {r.key for r in stores[1].list_files("acme", "default", limit=100)}
    assert stored == set(keys) == {f"k-{i}" for i in range(16)}
    for database in databases:
        database.dispose()


def test_writes_queued_while_another_process_commits_share_one_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another process holds the writer lock, this process's writes pile up; the
    leader collects them once its turn comes and commits them together."""
    import fcntl
    import os
    import time

    from broker.db import _GroupCommit

    database = Database(f"sqlite:///{tmp_path / 'meta.sqlite3'}")
    database.upgrade()
    store = MetadataStore(database)
    store.insert_file(_record())  # opens the lock file
    batches: list[int] = []
    commit = _GroupCommit._commit

    def counting(self: _GroupCommit, batch: list[object]) -> None:
        batches.append(len(batch))
        commit(self, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(_GroupCommit, "_commit", counting)
    other = os.open(tmp_path / "meta.sqlite3.writer-lock", os.O_RDWR)
    fcntl.flock(other, fcntl.LOCK_EX)  # "another process" is committing
    threads = [threading.Thread(target=store.insert_file, args=(_record(),)) for _ in range(6)]
    for thread in threads:
        thread.start()
    group = database._group
    assert group is not None
    while group._queue.qsize() < 6:  # all six queued behind the other process
        time.sleep(0.001)
    fcntl.flock(other, fcntl.LOCK_UN)
    os.close(other)
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert batches == [6]
    assert len(store.list_files("acme", "default", limit=100)) == 7
    database.dispose()


def test_a_failing_commit_answers_503_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """An I/O error at COMMIT on the raw writer: the request gets database.unavailable, its
    row is rolled back, and the next write goes through on the same connection."""
    import sqlite3

    from broker.errors import BrokerError

    database = Database(f"sqlite:///{tmp_path / 'meta.sqlite3'}")
    database.upgrade()
    store = MetadataStore(database)
    store.insert_file(_record())  # opens the writer connection
    group = database._group
    assert group is not None
    real = group._connection
    assert real is not None

    class FailingCommit:
        failed = False

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if sql == "COMMIT" and not self.failed:
                self.failed = True
                raise sqlite3.OperationalError("disk I/O error")
            return real.execute(sql, *args)  # type: ignore[arg-type]

        @property
        def in_transaction(self) -> bool:
            return real.in_transaction

        def close(self) -> None:
            real.close()

    group._connection = FailingCommit()  # type: ignore[assignment]
    lost = _record()
    with pytest.raises(BrokerError) as failure:
        store.insert_file(lost)
    assert failure.value.code == "database.unavailable"
    assert store.get_file("acme", lost.id) is None
    kept = _record()
    store.insert_file(kept)
    assert store.get_file("acme", kept.id) == kept
    database.dispose()
