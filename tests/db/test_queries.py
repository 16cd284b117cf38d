"""The queries on SQLite and real PostgreSQL: tenancy, constraints, races, cursors."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.db import (
    Database,
    IdempotencyConflict,
    IdempotentAnswer,
    KeyExists,
    MetadataStore,
    TokenFilesExhausted,
)
from broker.models import FileRecord, Status

from support import Harness

NewFile = Callable[..., FileRecord]


def _run_threads(target: Callable[[int], None], count: int) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_a_file_is_seen_by_its_tenant_only(store: MetadataStore, new_file: NewFile) -> None:
    record = new_file()
    store.insert_file(record)
    assert store.get_file("acme", record.id) == record
    assert store.get_file("other", record.id) is None
    assert not store.delete_file("other", record.id)
    assert store.delete_file("acme", record.id)
    assert not store.delete_file("acme", record.id)


def test_a_live_key_is_unique_per_tenant_and_bucket(
    store: MetadataStore, new_file: NewFile
) -> None:
    store.insert_file(new_file(key="k"))
    with pytest.raises(KeyExists):
        store.insert_file(new_file(key="k"))
    store.insert_file(new_file(tenant="globex", key="k"))
    store.insert_file(new_file(key="k", bucket="other"))
    assert store.live_counts("acme") == {"default": 1, "other": 1}


def test_failed_and_aborted_files_free_their_key(store: MetadataStore, new_file: NewFile) -> None:
    first = new_file(key="k")
    store.insert_file(first)
    assert store.transition("acme", first.id, Status.PENDING, Status.FAILED)
    second = new_file(key="k")
    store.insert_file(second)
    assert store.get_file_by_key("acme", "default", "k") == second
    assert store.transition("acme", second.id, Status.PENDING, Status.ABORTED)
    assert store.get_file_by_key("acme", "default", "k") == store.get_file("acme", second.id)
    assert store.live_files("acme", "default", keys=["k"]) == []
    assert store.live_counts("acme") == {}


def test_transition_only_from_the_expected_status(store: MetadataStore, new_file: NewFile) -> None:
    record = new_file()
    store.insert_file(record)
    assert store.transition("acme", record.id, Status.PENDING, Status.COMPLETE, completed_at=5)
    assert not store.transition("acme", record.id, Status.PENDING, Status.FAILED)
    assert not store.transition("other", record.id, Status.COMPLETE, Status.FAILED)
    current = store.get_file("acme", record.id)
    assert current is not None
    assert (current.status, current.completed_at) == (Status.COMPLETE, 5)


def test_a_transition_to_an_unknown_column_is_refused(
    store: MetadataStore, new_file: NewFile
) -> None:
    record = new_file()
    store.insert_file(record)
    with pytest.raises(TypeError, match="completed"):
        store.transition("acme", record.id, Status.PENDING, Status.COMPLETE, completed=5)
    assert store.get_file("acme", record.id) == record


def test_extend_pushes_a_pending_expiry_out_never_in(
    store: MetadataStore, new_file: NewFile
) -> None:
    record = new_file(expires_at=100)
    store.insert_file(record)
    assert store.extend("acme", record.id, 200, updated_at=2)
    assert store.extend("acme", record.id, 150, updated_at=3)
    current = store.get_file("acme", record.id)
    assert current is not None
    assert (current.expires_at, current.updated_at) == (200, 3)
    assert store.transition("acme", record.id, Status.PENDING, Status.COMPLETE)
    assert not store.extend("acme", record.id, 300, updated_at=4)


def test_expire_claims_only_a_still_expired_pending_file(
    store: MetadataStore, new_file: NewFile
) -> None:
    old, fresh = new_file(expires_at=10), new_file(expires_at=1000)
    for record in (old, fresh):
        store.insert_file(record)
    assert store.expired_pending(cutoff=500, limit=10) == [old]
    assert not store.expire("acme", fresh.id, cutoff=500, failure_code="x", updated_at=5)
    assert store.expire("acme", old.id, cutoff=500, failure_code="upload.expired", updated_at=5)
    assert not store.expire("acme", old.id, cutoff=500, failure_code="x", updated_at=6)
    current = store.get_file("acme", old.id)
    assert current is not None
    assert (current.status, current.failure_code, current.updated_at) == (
        Status.FAILED,
        "upload.expired",
        5,
    )


def test_expired_pending_pages_by_expiry_then_id(store: MetadataStore, new_file: NewFile) -> None:
    records = [new_file(tenant=t, expires_at=e) for t, e in [("a", 5), ("b", 3), ("a", 3)]]
    for record in records:
        store.insert_file(record)
    order = sorted(records, key=lambda r: (r.expires_at, r.id))
    first = store.expired_pending(cutoff=10, limit=2)
    assert first == order[:2]
    last = first[-1]
    assert store.expired_pending(10, 2, after=(last.expires_at, last.id)) == order[2:]


def test_live_files_by_key_or_id(store: MetadataStore, new_file: NewFile) -> None:
    a = new_file(key="a", upload_id="up-1", part_size=5)
    b = new_file(key="b", status=Status.COMPLETE)
    c = new_file(key="c", status=Status.FAILED)
    for record in (a, b, c, new_file(key="a", tenant="globex"), new_file(key="e")):
        store.insert_file(record)
    found = store.live_files("acme", "default", keys=["a", "c", "d"], ids=[b.id, c.id])
    assert sorted(found, key=lambda r: r.key) == [a, b]
    assert store.live_files("acme", "default") == []


def test_only_one_of_many_racing_completions_wins(store: MetadataStore, new_file: NewFile) -> None:
    record = new_file()
    store.insert_file(record)
    wins: list[bool] = []
    barrier = threading.Barrier(6)

    def attempt(_: int) -> None:
        barrier.wait()
        wins.append(store.transition("acme", record.id, Status.PENDING, Status.COMPLETE))

    _run_threads(attempt, 6)
    assert sorted(wins) == [False] * 5 + [True]


def test_racing_creates_of_one_key_yield_exactly_one_file(
    store: MetadataStore, new_file: NewFile
) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def create(_: int) -> None:
        barrier.wait()
        try:
            store.insert_file(new_file(key="contended"))
            outcomes.append("created")
        except KeyExists:
            outcomes.append("exists")

    _run_threads(create, 6)
    assert sorted(outcomes) == ["created"] + ["exists"] * 5


def test_racing_idempotent_creates_record_one_answer(
    store: MetadataStore, new_file: NewFile
) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def create(_: int) -> None:
        answer = IdempotentAnswer("acme", "idem", "fp", 201, {"id": "x"}, created_at=10)
        barrier.wait()
        try:
            store.insert_file(new_file(), answer)
            outcomes.append("created")
        except IdempotencyConflict:
            outcomes.append("replay")

    _run_threads(create, 6)
    assert sorted(outcomes) == ["created"] + ["replay"] * 5
    answer = store.get_answer("acme", "idem", now=10)
    assert answer is not None
    assert answer.response == {"id": "x"}
    assert len(store.list_files("acme", "default", limit=10)) == 1


def test_an_answer_binds_its_key_for_a_day_then_frees_it(
    store: MetadataStore, new_file: NewFile
) -> None:
    day = 24 * 3600
    first = IdempotentAnswer("acme", "idem", "fp", 201, {"id": "1"}, created_at=10)
    store.insert_file(new_file(), first)
    assert store.get_answer("acme", "idem", now=10 + day) == first
    assert store.get_answer("acme", "idem", now=11 + day) is None
    assert store.get_answer("globex", "idem", now=10) is None
    with pytest.raises(IdempotencyConflict):
        store.insert_file(new_file(), IdempotentAnswer("acme", "idem", "fp", 201, {}, 10 + day))
    later = IdempotentAnswer("acme", "idem", "fp2", 201, {"id": "2"}, created_at=11 + day)
    store.insert_file(new_file(), later)  # the expired answer is cleared for it
    assert store.get_answer("acme", "idem", now=11 + day) == later


def test_forget_answer_frees_only_that_answer(store: MetadataStore, new_file: NewFile) -> None:
    answer = IdempotentAnswer("acme", "idem", "fp", 201, {"id": "1"}, created_at=10)
    store.insert_file(new_file(), answer)
    store.forget_answer(IdempotentAnswer("acme", "idem", "other", 201, {}, created_at=10))
    assert store.get_answer("acme", "idem", now=10) == answer
    store.forget_answer(answer)
    assert store.get_answer("acme", "idem", now=10) is None


def test_a_failing_write_among_concurrent_ones_fails_alone(
    store: MetadataStore, new_file: NewFile
) -> None:
    store.insert_file(new_file(key="taken"))
    outcomes: dict[str, str] = {}
    barrier = threading.Barrier(24)

    def create(index: int) -> None:
        key = "taken" if index == 0 else f"free-{index}"
        barrier.wait()
        try:
            store.insert_file(new_file(key=key))
            outcomes[key] = "created"
        except KeyExists:
            outcomes[key] = "exists"

    _run_threads(create, 24)
    assert outcomes.pop("taken") == "exists"
    assert set(outcomes.values()) == {"created"}
    assert len(outcomes) == 23
    stored = {r.key for r in store.list_files("acme", "default", limit=100)}
    assert stored == {"taken", *outcomes}


def test_two_processes_writing_one_sqlite_file_all_land(
    sqlite_path: Path, new_file: NewFile
) -> None:
    """Two stores on one SQLite file (as two gunicorn workers): every write of both lands."""
    databases = [Database(f"sqlite:///{sqlite_path}") for _ in range(2)]
    stores = [MetadataStore(d) for d in databases]
    barrier = threading.Barrier(16)

    def create(index: int) -> None:
        barrier.wait()
        stores[index % 2].insert_file(new_file(key=f"k-{index}"))

    _run_threads(create, 16)
    stored = {r.key for r in stores[1].list_files("acme", "default", limit=100)}
    assert stored == {f"k-{i}" for i in range(16)}
    for database in databases:
        database.dispose()


def test_listing_is_keyset_paginated_and_escapes_like(
    store: MetadataStore, new_file: NewFile
) -> None:
    records = [new_file(key=k) for k in ("a%b", "a_c", "abc", "x")]
    for record in records:
        store.insert_file(record)
    store.transition("acme", records[3].id, Status.PENDING, Status.COMPLETE)
    newest_first = [r.id for r in reversed(records)]
    page = store.list_files("acme", "default", limit=2)
    assert [r.id for r in page] == newest_first[:2]
    rest = store.list_files("acme", "default", limit=5, after_id=page[-1].id)
    assert [r.id for r in rest] == newest_first[2:]
    assert [r.key for r in store.list_files("acme", "default", limit=9, prefix="a%")] == ["a%b"]
    assert [r.key for r in store.list_files("acme", "default", limit=9, prefix="a_")] == ["a_c"]
    complete = store.list_files("acme", "default", limit=9, status=Status.COMPLETE)
    assert [r.key for r in complete] == ["x"]
    assert store.list_files("globex", "default", limit=9) == []


def test_keys_revoke_once(store: MetadataStore) -> None:
    from broker.auth import mint_key

    record, _ = mint_key("acme", "ci", ("files:read",), now=1)
    other, _ = mint_key("globex", None, ("admin",), now=2)
    store.insert_key(record)
    store.insert_key(other)
    assert store.revoke_key(record.id, at=2)
    assert not store.revoke_key(record.id, at=3)
    stored = store.get_key(record.id)
    assert stored is not None
    assert stored.revoked_at == 2
    assert [k.id for k in store.list_keys()] == sorted([record.id, other.id])
    assert [k.id for k in store.list_keys("globex")] == [other.id]
    assert store.get_key("key_nope") is None


def test_a_revocation_is_seen_at_once_by_every_thread(store: MetadataStore) -> None:
    """Key lookups reuse pooled connections; none may answer from a stale snapshot."""
    from broker.auth import mint_key

    record, _ = mint_key("acme", "ci", ("files:read",), now=1)
    store.insert_key(record)
    seen: list[int | None] = []

    def look(_: int = 0) -> None:
        found = store.get_key(record.id)
        assert found is not None
        seen.append(found.revoked_at)

    look()
    _run_threads(look, 4)
    assert store.revoke_key(record.id, at=2)
    look()
    _run_threads(look, 4)
    assert seen == [None] * 5 + [2] * 5
    store.db.dispose()  # closes the pool; the next read opens another connection
    look()
    assert seen[-1] == 2


@pytest.fixture
def pg_harness(make_harness: Callable[..., Harness], empty_postgres: str) -> Harness:
    """The whole app on PostgreSQL (migrated by `broker db upgrade`'s code path)."""
    database = Database(empty_postgres)
    database.upgrade()
    database.dispose()
    return make_harness(BROKER_DATABASE_URL=empty_postgres.replace("+psycopg", ""))


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


def test_racing_declarations_of_a_token_never_pass_its_max_files(
    store: MetadataStore, new_file: NewFile
) -> None:
    """The count is taken in the transaction that inserts, one token at a time: of twelve
    racing inserts, exactly the first three (of any status) are in."""
    store.insert_file(new_file(token_id="tok_1", status=Status.FAILED))
    store.insert_file(new_file(token_id="tok_other"))
    outcomes: list[str] = []

    def declare(_: int) -> None:
        try:
            store.insert_file(new_file(token_id="tok_1"), max_token_files=4)
            outcomes.append("in")
        except TokenFilesExhausted:
            outcomes.append("refused")

    _run_threads(declare, 12)
    assert sorted(outcomes) == ["in"] * 3 + ["refused"] * 9
    store.insert_file(new_file(token_id="tok_1"))  # without a limit nothing is counted


def test_pending_usage_counts_a_tenants_unexpired_pending_files(
    store: MetadataStore, new_file: NewFile
) -> None:
    assert store.pending_usage("acme", now=50) == (0, 0, None)
    store.insert_file(new_file(size=10, expires_at=100))
    store.insert_file(new_file(size=5 * 1024**3, expires_at=80))  # bigint sums
    store.insert_file(new_file(size=7, expires_at=40))  # expired by now=50
    store.insert_file(new_file(size=3, status=Status.COMPLETE))
    store.insert_file(new_file(tenant="other", size=99))
    aborted = new_file(size=11)
    store.insert_file(aborted)
    assert store.transition("acme", aborted.id, Status.PENDING, Status.ABORTED)
    assert store.pending_usage("acme", now=50) == (2, 5 * 1024**3 + 10, 80)
