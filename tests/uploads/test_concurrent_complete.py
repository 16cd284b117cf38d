"""Many completes of one file at once (issue #9): every answer is the completed file (200)
or 409 ``upload.in_progress`` while another request joins the parts, never a wrong
``upload.not_received``; the parts are joined exactly once and the bytes are right.

Runs on the embedded store and on LocalStack (the S3 peer that enforces), 50 threads each
with its own Flask test client, released together by a barrier.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from broker.config import MiB
from broker.errors import BrokerError
from broker.models import StoredPart
from broker.storage import LocalStorage
from broker.storage.base import ObjectInfo
from broker.storage.disk import locked
from broker.uploads import multipart

from support import Harness, StorageBackend, client_of, on_backends

PART = 5 * MiB
CALLERS = 50


def _data(size: int) -> bytes:
    block = hashlib.sha256(b"concurrent").digest() * (64 * 1024 // 32)
    return (block * (size // len(block) + 1))[:size]


@pytest.fixture
def mp(
    storage_backend: StorageBackend, make_harness: Callable[..., Harness], tmp_path: Path
) -> Harness:
    """An app whose default bucket goes multipart above one part; the bulkhead is wide
    enough for 50 callers (this test is about the join, not about shedding load)."""
    path = tmp_path / "buckets.json"
    path.write_text(
        json.dumps({"buckets": {"default": {"multipart_threshold": PART, "part_size": PART}}})
    )
    return make_harness(
        storage_backend, BROKER_BUCKETS=str(path), BROKER_STORAGE_CONCURRENCY=str(2 * CALLERS)
    )


def _put_parts(h: Harness, created: dict[str, Any], data: bytes) -> None:
    """PUT each planned part of ``data`` to its own signed URL; storage takes every one."""
    for part in created["upload"]["parts"]:
        body = data[part["offset"] : part["offset"] + part["size"]]
        assert h.put(part | {"method": "PUT"}, body).status_code == 200


def _complete_together(h: Harness, key: dict[str, str], path: str) -> list[tuple[int, Any]]:
    """POST ``path`` from CALLERS threads at once; each answer's status and JSON body."""
    start = threading.Barrier(CALLERS)

    def call(_: int) -> tuple[int, Any]:
        client = client_of(h.app)
        start.wait()
        answer = client.post(path, json={}, headers=key)
        return answer.status_code, answer.json

    with ThreadPoolExecutor(max_workers=CALLERS) as pool:
        return list(pool.map(call, range(CALLERS)))


@on_backends("local", "localstack")
def test_fifty_concurrent_completes_of_a_multipart_file(
    mp: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The join is quick: the others wait for it and all answer the completed file."""
    outcomes = _fifty_completes(mp, monkeypatch)
    assert outcomes == {(200, "complete")}


@on_backends("local")
def test_fifty_concurrent_completes_of_a_slow_join(
    mp: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The join outlasts the wait: the others answer 409 upload.in_progress, never
    upload.not_received, and one answers the completed file."""
    monkeypatch.setattr(multipart, "JOIN_WAIT", 0.05)
    outcomes = _fifty_completes(mp, monkeypatch, join_takes=1.0)
    assert (409, "upload.in_progress") in outcomes


def _fifty_completes(
    mp: Harness, monkeypatch: pytest.MonkeyPatch, join_takes: float = 0.0
) -> set[tuple[int, str]]:
    """Upload a 3-part file, complete it from CALLERS threads at once; assert that every
    answer is 200 or 409 upload.in_progress, that the parts were joined once and that the
    file is complete with its bytes. The set of outcomes (status, status or code)."""
    acme = mp.key("acme")
    data = _data(2 * PART + 77_777)
    created = mp.declare(
        acme,
        name="race.bin",
        size=len(data),
        mime_type="application/x-test",
        sha256=hashlib.sha256(data).hexdigest(),
    )
    _put_parts(mp, created, data)

    storage = mp.multipart
    joins: list[ObjectInfo] = []
    finish = storage.finish_multipart

    def counted(key: str, upload_id: str, parts: list[StoredPart]) -> ObjectInfo:
        time.sleep(join_takes)
        info = finish(key, upload_id, parts)
        joins.append(info)
        return info

    monkeypatch.setattr(storage, "finish_multipart", counted)

    answers = _complete_together(mp, acme, f"/v1/files/{created['id']}/complete")

    outcomes = {
        (status, body["status"] if status == 200 else body["error"]["code"])
        for status, body in answers
    }
    assert outcomes <= {(200, "complete"), (409, "upload.in_progress")}, outcomes
    assert any(status == 200 for status, _ in answers)
    assert len(joins) == 1, f"the parts were joined {len(joins)} times"
    for status, body in answers:
        if status == 200:
            assert body["id"] == created["id"]
            assert body["size"] == len(data)

    done = mp.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert done["status"] == "complete"
    assert mp.download(done["download_url"]).data == data
    if isinstance(storage, LocalStorage):  # one object: one pointer and one blob
        shard = storage.disk.pointer_path(mp.record(created["id"]).storage_key).parent
        assert sorted(p.suffix for p in shard.iterdir()) == [".blob", ".json"]
        assert list(storage.disk.uploads.iterdir()) == []
    return outcomes


@on_backends("local")
def test_a_join_held_elsewhere_is_in_progress_then_reports_the_joined_object(
    mp: Harness,
) -> None:
    """Across processes only the embedded store's lock serialises joins: a complete that
    finds the upload locked (another worker joining it) answers 409 upload.in_progress
    after a short wait; one that finds it joined reports the object joined from it."""
    acme = mp.key("acme")
    data = _data(PART + 1)
    created = mp.declare(acme, name="held.bin", size=len(data), mime_type="application/x-test")
    _put_parts(mp, created, data)
    record = mp.record(created["id"])
    assert record.upload_id is not None
    local = mp.local
    parts = local.list_parts(record.storage_key, record.upload_id)
    assert parts is not None
    path = f"/v1/files/{created['id']}/complete"

    with locked(local.disk.uploads / record.upload_id):  # "another worker is joining"
        held = mp.client.post(path, json={}, headers=acme)
    assert held.status_code == 409, held.json
    assert held.json["error"]["code"] == "upload.in_progress"
    pending = mp.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert pending["status"] == "pending"

    joined = local.finish_multipart(record.storage_key, record.upload_id, parts)
    again = local.finish_multipart(record.storage_key, record.upload_id, parts)
    assert again == joined  # the second join reports the first's object, not "not received"
    done = mp.client.post(path, json={}, headers=acme)
    assert done.status_code == 200, done.json
    assert done.json["status"] == "complete"
    assert mp.download(done.json["download_url"]).data == data


@on_backends("local", "localstack")
def test_a_join_under_way_in_another_process_is_in_progress_not_missing(mp: Harness) -> None:
    """On S3 nothing in this process knows of a join another worker has under way: while
    its CompleteMultipartUpload runs, storage shows the upload closed and no object yet.
    The file's joining mark (set by that worker in the database) makes a complete then
    answer 409 upload.in_progress; once the mark is older than any join can take, the same
    state is reported truthfully as not received."""
    acme = mp.key("acme")
    data = _data(PART + 1)
    created = mp.declare(acme, name="elsewhere.bin", size=len(data), mime_type="x/test")
    _put_parts(mp, created, data)
    record = mp.record(created["id"])
    assert record.upload_id is not None
    assert record.joining_since is None
    store, now = mp.service.store, int(mp.clock())
    # Another worker marks the file and starts joining; storage closes the upload.
    assert store.transition("acme", record.id, record.status, record.status, joining_since=now)
    mp.multipart.abort_multipart(record.storage_key, record.upload_id)
    path = f"/v1/files/{created['id']}/complete"

    during = mp.client.post(path, json={}, headers=acme)
    assert during.status_code == 409, during.json
    assert during.json["error"]["code"] == "upload.in_progress"

    mp.clock.advance(multipart.join_bound(mp.service.ctx) + 1)
    after = mp.client.post(path, json={}, headers=acme)
    assert after.status_code == 409, after.json
    assert after.json["error"]["code"] == "upload.not_received"


@on_backends("local")
def test_a_join_storage_refuses_clears_the_mark(
    mp: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A complete whose join storage refuses leaves no mark behind, so the next complete
    is answered on its own merits at once."""
    acme = mp.key("acme")
    data = _data(PART + 1)
    created = mp.declare(acme, name="refused.bin", size=len(data), mime_type="x/test")
    _put_parts(mp, created, data)

    def refuse(*_: object) -> ObjectInfo:
        raise BrokerError("upload.part_missing", "Storage refused the parts (InvalidPart).")

    monkeypatch.setattr(mp.multipart, "finish_multipart", refuse)
    path = f"/v1/files/{created['id']}/complete"
    refused = mp.client.post(path, json={}, headers=acme)
    assert refused.status_code == 409, refused.json
    assert refused.json["error"]["code"] == "upload.part_missing"
    assert mp.record(created["id"]).joining_since is None
    monkeypatch.undo()
    done = mp.client.post(path, json={}, headers=acme)
    assert done.status_code == 200, done.json
    assert mp.download(done.json["download_url"]).data == data
