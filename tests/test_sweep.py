"""``broker sweep``: expiry of stale pending files and removal of what storage holds for
nobody, on the embedded store, moto and LocalStack, SQLite and PostgreSQL.

Storage keeps its own clock (S3's LastModified and Initiated are real time), so these tests
start the frozen clock at the real time and move it forward from there.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from broker.db import Database, MetadataStore
from broker.ids import new_id
from broker.models import FileRecord, Status
from broker.storage import LocalStorage, build_storage
from broker.sweep import SWEEP_LOCK, Sweeper, SweepReport

from support import Harness, StorageBackend

GRACE = 60


@pytest.fixture
def h(storage_backend: StorageBackend, make_harness: Callable[..., Harness]) -> Harness:
    """An app on each storage backend, its clock set to the real time."""
    harness = make_harness(storage_backend)
    harness.clock.now = float(int(time.time()))
    return harness


@pytest.fixture
def local(make_harness: Callable[..., Harness]) -> Harness:
    harness = make_harness()
    harness.clock.now = float(int(time.time()))
    return harness


def sweeper(h: Harness, **options: Any) -> Sweeper:
    service = h.service
    return Sweeper(service.settings, service.store, h.reapable, h.clock, **options)


def sweep(h: Harness, grace: int = GRACE) -> SweepReport:
    report = sweeper(h).run(grace)
    assert report.errors == 0
    assert not report.skipped
    return report


def storage_key(created: dict[str, Any], tenant: str = "acme") -> str:
    """Where a file's own object is: ``tenant/bucket/file_id/key`` (FileRecord.storage_key)."""
    return f"{tenant}/{created['bucket']}/{created['id']}/{created['key']}"


def put_object(h: Harness, key: str, data: bytes) -> None:
    """Bytes straight into storage, with no file row behind them."""
    h.backend.put_object(h.storage, key, data)


def status(h: Harness, headers: dict[str, str], file_id: str) -> tuple[str, str | None]:
    body = h.client.get(f"/v1/files/{file_id}", headers=headers).json
    return body["status"], body["failure_code"]


def upload_id(h: Harness, file_id: str) -> str:
    record = h.service.store.get_file("acme", file_id)
    assert record is not None
    assert record.upload_id is not None
    return str(record.upload_id)


def put_part(h: Harness, created: dict[str, Any], data: bytes) -> None:
    part = created["upload"]["parts"][0]
    assert h.put({"method": "PUT", **part}, data).status_code == 200


# -- a. expired pending files ------------------------------------------------------------------


def test_an_expired_upload_fails_and_its_bytes_are_deleted(h: Harness) -> None:
    acme = h.key()
    created = h.declare(acme, expires_in=60)
    assert h.put(created["upload"], b"hello").status_code == 200
    assert h.storage.head(storage_key(created)) is not None
    h.clock.advance(60 + GRACE + 1)

    assert sweep(h).files_expired == 1
    assert status(h, acme, created["id"]) == ("failed", "upload.expired")
    assert h.storage.head(storage_key(created)) is None
    late = h.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    assert (late.status_code, late.json["error"]["code"]) == (409, "upload.expired")
    assert sweep(h).files_expired == 0  # nothing left to do; nothing breaks


def test_an_expired_multipart_upload_is_aborted(h: Harness) -> None:
    acme = h.key()
    created = h.declare(acme, size=10, multipart=True, expires_in=60)
    put_part(h, created, b"0123456789")
    opened = upload_id(h, created["id"])
    assert h.multipart.list_parts(storage_key(created), opened) != []
    h.clock.advance(60 + GRACE + 1)

    report = sweep(h)
    assert report.files_expired == 1
    assert report.orphan_uploads_aborted == 0  # pass a freed it: nothing was left over
    assert h.multipart.list_parts(storage_key(created), opened) is None
    assert status(h, acme, created["id"]) == ("failed", "upload.expired")


def test_a_file_within_its_grace_is_left_alone(h: Harness) -> None:
    acme = h.key()
    single = h.declare(acme, expires_in=60)
    assert h.put(single["upload"], b"hello").status_code == 200
    parts = h.declare(acme, size=10, multipart=True, expires_in=60)
    put_part(h, parts, b"0123456789")
    h.clock.advance(60 + GRACE - 1)  # expired, but the grace has not run out

    report = sweep(h)
    assert (report.files_expired, report.orphan_uploads_aborted) == (0, 0)
    assert report.orphan_objects_deleted == 0
    for created in (single, parts):
        assert status(h, acme, created["id"]) == ("pending", None)
        done = h.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
        assert done.status_code == 200, done.json  # a late complete still works


def test_a_complete_file_is_left_alone(h: Harness) -> None:
    acme = h.key()
    start = h.clock.now
    done = h.upload(acme, b"keep me", expires_in=60)
    h.clock.advance(24 * 3600)

    report = sweep(h)
    assert (report.files_expired, report.orphan_objects_deleted) == (0, 0)
    h.clock.now = start  # S3 peers check a URL's date against the real time
    redirect = h.client.get(f"/v1/files/{done['id']}/content", headers=acme)
    assert h.download(redirect.headers["Location"]).data == b"keep me"


def test_a_file_given_fresh_urls_after_the_listing_is_not_expired(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-issuing part URLs moves a file's expiry out; a sweeper that listed the file just
    before must not expire it (the claim checks the expiry again)."""
    acme = h.key()
    created = h.declare(acme, size=10, multipart=True, expires_in=60)
    h.clock.advance(60 + GRACE + 1)
    store = h.service.store
    listing = store.expired_pending

    def list_then_reissue(*args: Any, **kwargs: Any) -> list[Any]:
        page = listing(*args, **kwargs)
        fresh = h.client.post(
            f"/v1/files/{created['id']}/parts", json={"expires_in": 600}, headers=acme
        )
        assert fresh.status_code == 200, fresh.json
        return page

    monkeypatch.setattr(store, "expired_pending", list_then_reissue)
    assert sweep(h).files_expired == 0
    assert status(h, acme, created["id"]) == ("pending", None)
    assert h.multipart.list_parts(storage_key(created), upload_id(h, created["id"])) == []


def test_a_key_taken_again_right_after_the_claim_keeps_the_new_bytes(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim frees the key; a new file can take it before the sweeper deletes the old
    bytes. The sweeper must then leave the object alone: it is the new file's."""
    acme = h.key()
    start = h.clock.now
    old = h.declare(acme, key="reused.txt", expires_in=60)
    assert h.put(old["upload"], b"old!!").status_code == 200
    h.clock.advance(60 + GRACE + 1)
    store = h.service.store
    claim = store.expire
    newer: dict[str, Any] = {}

    def claim_then_redeclare(*args: Any, **kwargs: Any) -> bool:
        won = claim(*args, **kwargs)
        if won:
            swept_at, h.clock.now = h.clock.now, start
            newer.update(h.declare(acme, key="reused.txt"))
            assert h.put(newer["upload"], b"new!!").status_code == 200
            h.clock.now = swept_at
        return won

    monkeypatch.setattr(store, "expire", claim_then_redeclare)
    report = sweep(h)
    assert (report.files_expired, report.orphan_objects_deleted) == (1, 0)
    h.clock.now = start
    done = h.client.post(f"/v1/files/{newer['id']}/complete", headers=acme)
    assert done.status_code == 200, done.json
    assert h.download(done.json["download_url"]).data == b"new!!"
    assert status(h, acme, old["id"]) == ("failed", "upload.expired")


# -- b, c. orphans -----------------------------------------------------------------------------


def test_orphan_objects_older_than_the_grace_are_deleted(h: Harness) -> None:
    acme = h.key()
    live = h.declare(acme, key="live.txt", expires_in=3600)
    assert h.put(live["upload"], b"live!").status_code == 200
    put_object(h, "acme/default/orphans/old.txt", b"old")
    put_object(h, "not-a-broker-key.txt", b"not ours")  # outside tenant/bucket/key
    put_object(h, "acme/default/a/../b.txt", b"not ours")  # no key the broker writes
    if isinstance(h.storage, LocalStorage):
        h.clock.advance(10)  # the embedded store dates objects by the broker's clock
    else:
        time.sleep(1.1)  # S3 dates them itself, to the second
    put_object(h, "acme/default/orphans/young.txt", b"young")
    stored = {o.key: o for o in h.inventory.iter_objects()}
    assert stored["acme/default/orphans/old.txt"].size == 3
    # The grace ends between the two orphans.
    h.clock.now = stored["acme/default/orphans/young.txt"].modified_at - 0.5 + GRACE

    report = sweep(h)
    assert report.orphan_objects_deleted == 1
    remaining = {o.key for o in h.inventory.iter_objects()}
    assert remaining == {
        storage_key(live),
        "not-a-broker-key.txt",
        "acme/default/a/../b.txt",
        "acme/default/orphans/young.txt",
    }


def test_orphan_multipart_uploads_are_aborted(h: Harness) -> None:
    acme = h.key()
    storage = h.reapable
    orphan = storage.start_multipart("acme/default/orphan.bin", content_type="text/plain")
    created = h.declare(acme, size=10, multipart=True, expires_in=3600)
    live = upload_id(h, created["id"])
    h.clock.now = time.time() + GRACE + 1  # S3 dates uploads by the real time

    report = sweep(h)
    assert report.orphan_uploads_aborted == 1
    assert storage.list_parts("acme/default/orphan.bin", orphan) is None
    assert storage.list_parts(storage_key(created), live) == []
    assert {u.upload_id for u in storage.iter_uploads()} == {live}


def test_stale_scratch_is_removed_and_fresh_scratch_kept(local: Harness) -> None:
    acme = local.key()
    done = local.upload(acme, b"a real object")
    storage = local.service.storage
    assert isinstance(storage, LocalStorage)
    disk = storage.disk
    pointer = next(disk.objects.glob("*/*.json"))
    shard, stem = pointer.parent, pointer.stem
    real_blob = next(shard.glob(f"{stem}.*.blob"))
    other = disk.objects / "ab"
    other.mkdir(exist_ok=True)
    hour_ago = time.time() - 3600

    def scratch(path: Path, *, old: bool, directory: bool = False) -> Path:
        if directory:
            path.mkdir()
            (path / "00001.0123456789abcdef0123456789abcdef.part").write_bytes(b"x")
        else:
            path.write_bytes(b"x")
        if old:
            os.utime(path, (hour_ago, hour_ago))
        return path

    stale = [
        scratch(disk.tmp / "stale.part", old=True),
        scratch(shard / f"{stem}.{uuid.uuid4().hex}.blob", old=True),  # a second, unnamed blob
        scratch(other / f"{'ab' * 32}.{uuid.uuid4().hex}.blob", old=True),  # no pointer
        scratch(shard / f".{stem}.{uuid.uuid4().hex}.blob.json", old=True),  # staged pointer
        scratch(disk.uploads / uuid.uuid4().hex, old=True, directory=True),  # no upload.json
    ]
    fresh = [
        scratch(disk.tmp / "fresh.part", old=False),
        scratch(other / f"{'ab' * 32}.{uuid.uuid4().hex}.blob", old=False),
        scratch(disk.uploads / uuid.uuid4().hex, old=False, directory=True),
    ]
    os.utime(real_blob, (hour_ago, hour_ago))  # old, but the pointer names it

    report = sweep(local)
    assert report.scratch_removed == len(stale)
    assert [p for p in stale if p.exists()] == []
    assert [p for p in fresh if not p.exists()] == []
    assert real_blob.exists()
    assert local.download(done["download_url"]).data == b"a real object"


# -- several sweepers at once ------------------------------------------------------------------


def _twin(h: Harness) -> tuple[Sweeper, Database]:
    """A second sweeper with its own database engine and storage client, as on another
    machine (or process) sharing the same database and storage."""
    settings = h.service.settings
    database = Database(settings.database_url)
    storage = build_storage(
        settings, clock=h.clock, blob_url=lambda token: f"http://localhost/v1/blobs/{token}"
    )
    return Sweeper(settings, MetadataStore(database), storage, h.clock, exclusive=False), database


def _race(sweepers: list[Sweeper]) -> list[SweepReport]:
    reports: list[SweepReport | None] = [None] * len(sweepers)
    start = threading.Barrier(len(sweepers))

    def run(index: int) -> None:
        start.wait()
        reports[index] = sweepers[index].run(GRACE)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(sweepers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(r is not None for r in reports)
    return [r for r in reports if r is not None]


def _expired_files(h: Harness, headers: dict[str, str], count: int) -> list[dict[str, Any]]:
    created = []
    for n in range(count):
        one = h.declare(headers, key=f"race/{n}.txt", expires_in=60)
        assert h.put(one["upload"], b"bytes").status_code == 200
        created.append(one)
    return created


def test_two_sweepers_at_once_handle_each_file_once(h: Harness) -> None:
    acme = h.key()
    files = _expired_files(h, acme, 12)
    for n in range(4):
        put_object(h, f"acme/default/orphans/{n}.txt", b"orphan")
    h.clock.advance(60 + GRACE + 1)
    twin, database = _twin(h)
    try:
        reports = _race([sweeper(h, exclusive=False), twin])
    finally:
        database.dispose()

    assert [r.errors for r in reports] == [0, 0]
    assert sum(r.files_expired for r in reports) == len(files)
    # Both may delete the same orphan (deleting what is gone is fine), and one may find the
    # object of a file the other has just expired, before it deletes it: none is missed.
    assert 4 <= sum(r.orphan_objects_deleted for r in reports) <= 8 + len(files)
    for created in files:
        assert status(h, acme, created["id"]) == ("failed", "upload.expired")
    assert list(h.inventory.iter_objects()) == []
    again = sweep(h)  # the same end state as one sweeper's: nothing left
    assert (again.files_expired, again.orphan_objects_deleted) == (0, 0)


# -- PostgreSQL ----------------------------------------------------------------------------------


@pytest.fixture
def pg(make_harness: Callable[..., Harness], postgres_url: str) -> Harness:
    database = Database(postgres_url)
    with database.engine.begin() as conn:
        conn.execute(
            text("DROP TABLE IF EXISTS files, api_keys, idempotency_keys, alembic_version")
        )
    database.upgrade()
    database.dispose()
    harness = make_harness(BROKER_DATABASE_URL=postgres_url.replace("+psycopg", ""))
    harness.clock.now = float(int(time.time()))
    return harness


def test_postgresql_two_sweepers_claim_each_file_once(pg: Harness) -> None:
    acme = pg.key()
    files = _expired_files(pg, acme, 12)
    pg.clock.advance(60 + GRACE + 1)
    twin, database = _twin(pg)
    try:
        reports = _race([sweeper(pg, exclusive=False), twin])
    finally:
        database.dispose()
    assert [r.errors for r in reports] == [0, 0]
    assert sum(r.files_expired for r in reports) == len(files)
    for created in files:
        assert status(pg, acme, created["id"]) == ("failed", "upload.expired")
        assert pg.storage.head(storage_key(created)) is None


def test_postgresql_a_second_sweeper_skips_while_one_holds_the_lock(pg: Harness) -> None:
    acme = pg.key()
    created = pg.declare(acme, expires_in=60)
    pg.clock.advance(60 + GRACE + 1)
    other = Database(pg.service.settings.database_url)
    try:
        with other.try_lock(SWEEP_LOCK) as got:
            assert got
            report = sweeper(pg).run(GRACE)
            assert (report.skipped, report.files_expired) == (True, 0)
            assert status(pg, acme, created["id"]) == ("pending", None)
    finally:
        other.dispose()
    assert sweep(pg).files_expired == 1  # released: the next pass does the work
    assert status(pg, acme, created["id"]) == ("failed", "upload.expired")


def test_a_dead_files_object_is_an_orphan_and_an_old_layout_files_is_kept(h: Harness) -> None:
    """Each file has its own object; a file declared before migration 0007 keeps its object
    at ``tenant/bucket/key`` (``object_key`` NULL), held for as long as the file lives."""
    acme = h.key()
    now = int(h.clock())
    legacy = FileRecord(
        id=new_id("file"), tenant="acme", bucket="default", key="old/layout.txt",
        name="layout.txt", mime_type="text/plain", size=3, sha256=None, metadata={},
        status=Status.COMPLETE, created_at=now, updated_at=now, expires_at=now + 60,
        completed_at=now,
    )  # fmt: skip
    h.service.store.insert_file(legacy)
    assert legacy.storage_key == "acme/default/old/layout.txt"
    put_object(h, legacy.storage_key, b"old")
    dead = h.declare(acme, key="old/dead.txt")
    assert h.client.delete(f"/v1/files/{dead['id']}", headers=acme).status_code == 200
    assert h.put(dead["upload"], b"dead!").status_code == 200  # writes only its own object
    stored = {o.key: o for o in h.inventory.iter_objects()}
    assert set(stored) == {legacy.storage_key, storage_key(dead)}
    h.clock.now = max(o.modified_at for o in stored.values()) + GRACE + 1

    assert sweep(h).orphan_objects_deleted == 1
    assert {o.key for o in h.inventory.iter_objects()} == {legacy.storage_key}
    content = h.client.get(f"/v1/files/{legacy.id}/content", headers=acme)
    assert content.status_code == 302
    assert h.download(content.headers["Location"]).data == b"old"
