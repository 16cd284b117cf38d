"""Multipart uploads through the API, on the embedded store, S3 on moto and S3 on LocalStack.

A file above the bucket's ``multipart_threshold`` (or declared with ``"multipart": true``)
gets one signed URL per part, each binding that part's exact length. These tests send the
parts the way a client would, lose some on purpose, resume, and complete; the bytes that
come back must be the bytes that went up, and a failed completion must leave nothing
visible. Enforcement of a part's length is asserted where the server enforces (the embedded
store and LocalStack; moto accepts anything, which is a fact about moto).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broker.config import MiB
from broker.models import StoredPart

from support import ENFORCING, Harness, StorageBackend

PART = 5 * MiB


def _buckets(tmp_path: Path) -> str:
    path = tmp_path / "buckets.json"
    path.write_text(
        json.dumps(
            {
                "buckets": {
                    "default": {"multipart_threshold": PART, "part_size": PART},
                    "big": {"max_size": 5 * 1024 * MiB},
                }
            }
        )
    )
    return str(path)


@pytest.fixture
def mp(
    storage_backend: StorageBackend, make_harness: Callable[..., Harness], tmp_path: Path
) -> Harness:
    """An app on each storage backend whose default bucket goes multipart above one part."""
    return make_harness(storage_backend, BROKER_BUCKETS=_buckets(tmp_path))


def _data(size: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * (64 * 1024 // 32)  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def _put_parts(h: Harness, parts: list[dict[str, Any]], data: bytes) -> list[dict[str, Any]]:
    """PUT each part's slice; return what a client keeps for completion."""
    done = []
    for part in parts:
        body = data[part["offset"] : part["offset"] + part["size"]]
        reply = h.put(part | {"method": "PUT"}, body)
        assert reply.status_code == 200, reply.data[:300]
        done.append({"part_number": part["part_number"], "etag": reply.headers["ETag"]})
    return done


def _complete(h: Harness, key: dict[str, str], file_id: str, parts: Any = None) -> Any:
    body = {} if parts is None else {"parts": parts}
    return h.client.post(f"/v1/files/{file_id}/complete", json=body, headers=key)


def _stored(h: Harness, created: dict[str, Any]) -> bool:
    return h.storage.head(f"acme/{created['bucket']}/{created['id']}/{created['key']}") is not None


def _upload_id(h: Harness, file_id: str) -> str:
    upload_id = h.record(file_id).upload_id
    assert upload_id is not None
    return upload_id


def _open_upload(h: Harness, file_id: str) -> list[StoredPart] | None:
    """The parts storage holds for the file's multipart upload; None once it is closed."""
    return h.multipart.list_parts(h.record(file_id).storage_key, _upload_id(h, file_id))


def _open_uploads(h: Harness) -> list[str]:
    """The ids of the multipart uploads storage holds open (on the embedded store, every
    upload directory, even one half made)."""
    if h.storage.name == "local":
        return os.listdir(h.local.disk.uploads)
    return [upload.upload_id for upload in h.inventory.iter_uploads()]


# -- planning ------------------------------------------------------------------------------


# -- the happy path ------------------------------------------------------------------------


def test_three_parts_round_trip_byte_identical(mp: Harness) -> None:
    acme = mp.key("acme")
    data = _data(2 * PART + 123_457)
    created = mp.declare(
        acme,
        name="big.bin",
        size=len(data),
        mime_type="application/x-test",
        sha256=hashlib.sha256(data).hexdigest(),
    )
    upload = created["upload"]
    assert created["upload_url"] is None
    assert "url" not in upload
    assert upload["part_size"] == PART
    assert [(p["part_number"], p["offset"], p["size"]) for p in upload["parts"]] == [
        (1, 0, PART),
        (2, PART, PART),
        (3, 2 * PART, 123_457),
    ]
    assert all(p["headers"] == {"Content-Length": str(p["size"])} for p in upload["parts"])
    assert created["parts_received"] == []

    received = _put_parts(mp, upload["parts"], data)
    pending = mp.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert pending["status"] == "pending"
    assert pending["offset"] == len(data)
    assert [p["part_number"] for p in pending["parts_received"]] == [1, 2, 3]
    assert not _stored(mp, created)  # parts are not an object until completion

    done = _complete(mp, acme, created["id"], received)
    assert done.status_code == 200, done.json
    assert done.json["status"] == "complete"
    assert done.json["offset"] == len(data)
    assert done.json["parts_received"] is None
    blob = mp.download(done.json["download_url"])
    assert blob.status_code == 200
    assert hashlib.sha256(blob.data).hexdigest() == hashlib.sha256(data).hexdigest()
    assert blob.headers["Content-Type"] == "application/x-test"
    assert _open_upload(mp, created["id"]) is None  # the upload is closed in storage


def test_multipart_on_request_below_the_threshold(mp: Harness) -> None:
    acme = mp.key("acme")
    data = _data(1000)
    created = mp.declare(acme, name="s.txt", size=len(data), multipart=True)
    assert [p["size"] for p in created["upload"]["parts"]] == [1000]
    _put_parts(mp, created["upload"]["parts"], data)
    done = _complete(mp, acme, created["id"])  # no parts listed: storage's own list is used
    assert done.status_code == 200, done.json
    assert mp.download(done.json["download_url"]).data == data


def test_small_files_stay_single_put(mp: Harness) -> None:
    created = mp.declare(mp.key("acme"), size=5)
    assert created["upload"]["url"] == created["upload_url"]
    assert "parts" not in created["upload"]
    assert created["parts_received"] is None


def test_an_empty_file_cannot_go_in_parts(mp: Harness) -> None:
    reply = mp.client.post(
        "/v1/files",
        json={"name": "e", "size": 0, "mime_type": "text/plain", "multipart": True},
        headers=mp.key("acme"),
    )
    assert reply.status_code == 422
    assert reply.json["error"]["details"] == {
        "multipart": ["An empty file cannot be sent in parts."]
    }


# -- lies and losses -----------------------------------------------------------------------


@ENFORCING
def test_a_part_of_the_wrong_length_is_refused_by_storage(mp: Harness) -> None:
    acme = mp.key("acme")
    data = _data(PART + 10)
    created = mp.declare(
        acme, name="b", size=len(data), mime_type="application/x-test", multipart=True
    )
    last = created["upload"]["parts"][1]  # 10 bytes: small lies (a server that refuses
    assert last["size"] == 10  # before reading may not drain a large body)
    for body in (data[PART : PART + 9], data[PART:] + b"x"):  # short, long
        reply = mp.put(last | {"method": "PUT"}, body, **{"Content-Length": str(len(body))})
        assert reply.status_code in (400, 403, 422), reply.status_code
    assert _open_upload(mp, created["id"]) == []
    pending = mp.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert (pending["offset"], pending["parts_received"]) == (0, [])


def test_a_missing_part_fails_complete_and_keeps_it_resumable(mp: Harness) -> None:
    acme = mp.key("acme")
    data = _data(2 * PART + 99)
    created = mp.declare(acme, name="m.bin", size=len(data), mime_type="application/x-test")
    parts = created["upload"]["parts"]

    nothing = _complete(mp, acme, created["id"])  # before any part: as for a single PUT
    assert nothing.status_code == 409
    assert nothing.json["error"]["code"] == "upload.not_received"
    received = _put_parts(mp, [parts[0], parts[2]], data)
    listed = _complete(mp, acme, created["id"], received)  # the client forgot part 2
    assert listed.status_code == 409
    assert listed.json["error"]["code"] == "upload.part_missing"
    assert listed.json["error"]["details"] == {"missing_parts": [2]}
    claimed = [*received, {"part_number": 2, "etag": received[0]["etag"]}]
    lied = _complete(mp, acme, created["id"], claimed)  # claims part 2 storage never got
    assert lied.status_code == 409
    assert lied.json["error"]["code"] == "upload.part_missing"
    assert not _stored(mp, created)
    assert mp.client.get(f"/v1/files/{created['id']}", headers=acme).json["status"] == "pending"

    # Resume: GET offers only the missing part; send it and complete.
    again = mp.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert again["offset"] == parts[0]["size"] + parts[2]["size"]
    assert [p["part_number"] for p in again["parts_received"]] == [1, 3]
    assert [p["part_number"] for p in again["upload"]["parts"]] == [2]
    received += _put_parts(mp, again["upload"]["parts"], data)
    done = _complete(mp, acme, created["id"], sorted(received, key=lambda p: p["part_number"]))
    assert done.status_code == 200, done.json
    assert mp.download(done.json["download_url"]).data == data


def test_a_wrong_etag_is_refused(mp: Harness) -> None:
    acme = mp.key("acme")
    data = _data(PART + 1)
    created = mp.declare(acme, name="e.bin", size=len(data), mime_type="application/x-test")
    received = _put_parts(mp, created["upload"]["parts"], data)
    received[1] = {"part_number": 2, "etag": '"0123456789abcdef0123456789abcdef"'}
    reply = _complete(mp, acme, created["id"], received)
    assert reply.status_code == 409
    assert reply.json["error"]["code"] == "upload.part_missing"  # S3's InvalidPart
    assert reply.json["error"]["details"] == {"missing_parts": [2]}
    assert not _stored(mp, created)
    bad_number = _complete(mp, acme, created["id"], [*received, {"part_number": 9, "etag": "x"}])
    assert bad_number.status_code == 409  # valid, but not a part of this file's plan
    assert bad_number.json["error"]["code"] == "upload.parts_mismatch"


def test_a_part_of_another_length_is_not_received(mp: Harness) -> None:
    """A part of another length that storage kept anyway (moto does; LocalStack keeps a
    cut-off body) does not count: GET re-offers it, complete answers 422 naming it and
    joins nothing, and sending the part again completes the file."""
    acme = mp.key("acme")
    data = _data(PART + 50)
    created = mp.declare(acme, name="w.bin", size=len(data), mime_type="application/x-test")
    record = mp.record(created["id"])
    # Part 2 goes straight into storage one byte short, as if a peer did not enforce.
    with mp.app.test_request_context():  # signed blob URLs take the request's host
        short = mp.multipart.presign_part(
            record.storage_key, _upload_id(mp, record.id), part_number=2, size=49,
            expires_at=record.expires_at,
        )  # fmt: skip
    _put_parts(mp, [created["upload"]["parts"][0]], data)
    reply = mp.send("PUT", short.url, short.headers, data[PART : PART + 49])
    assert reply.status_code == 200

    state = mp.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert [p["part_number"] for p in state["parts_received"]] == [1]
    assert state["offset"] == PART
    assert [p["part_number"] for p in state["upload"]["parts"]] == [2]
    done = _complete(mp, acme, created["id"])
    assert done.status_code == 409
    assert done.json["error"]["code"] == "upload.part_missing"
    assert done.json["error"]["details"] == {"missing_parts": [2]}
    assert not _stored(mp, created)
    assert mp.client.get(f"/v1/files/{created['id']}", headers=acme).json["status"] == "pending"

    _put_parts(mp, state["upload"]["parts"], data)
    done = _complete(mp, acme, created["id"])
    assert done.status_code == 200, done.json
    assert mp.download(done.json["download_url"]).data == data


def test_a_wrong_checksum_fails_the_file_and_leaves_nothing(mp: Harness) -> None:
    acme = mp.key("acme")
    data = _data(PART + 7)
    created = mp.declare(
        acme,
        name="c.bin",
        size=len(data),
        mime_type="application/x-test",
        sha256=hashlib.sha256(b"other bytes").hexdigest(),
    )
    _put_parts(mp, created["upload"]["parts"], data)
    done = _complete(mp, acme, created["id"])
    assert done.status_code == 422
    assert done.json["error"]["code"] == "upload.checksum_mismatch"
    assert not _stored(mp, created)
    failed = mp.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert failed["status"] == "failed"


# -- resume, abort, delete -----------------------------------------------------------------


def test_reissued_part_urls_resume_after_expiry(mp: Harness) -> None:
    acme = mp.key("acme")
    data = _data(2 * PART + 1)
    created = mp.declare(acme, name="r.bin", size=len(data), expires_in=60)
    parts = created["upload"]["parts"]
    _put_parts(mp, parts[:1], data)
    mp.clock.advance(120)  # the first URLs ran out
    stale = mp.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert stale["upload"] is None
    assert stale["offset"] == PART

    fresh = mp.client.post(f"/v1/files/{created['id']}/parts", json={}, headers=acme)
    assert fresh.status_code == 200, fresh.json
    assert [p["part_number"] for p in fresh.json["upload"]["parts"]] == [2, 3]
    assert fresh.json["expires_at"] > mp.clock()
    assert fresh.json["upload"]["expires_at"] > mp.clock()
    _put_parts(mp, fresh.json["upload"]["parts"], data)
    one = mp.client.post(
        f"/v1/files/{created['id']}/parts", json={"part_numbers": [1]}, headers=acme
    )
    assert [p["part_number"] for p in one.json["upload"]["parts"]] == [1]
    done = _complete(mp, acme, created["id"])
    assert done.status_code == 200, done.json
    assert mp.download(done.json["download_url"]).data == data

    again = mp.client.post(f"/v1/files/{created['id']}/parts", json={}, headers=acme)
    assert again.status_code == 409
    assert again.json["error"]["code"] == "upload.not_pending"


def test_reissue_is_for_pending_multipart_files_of_the_tenant(mp: Harness) -> None:
    acme, other = mp.key("acme"), mp.key("other")
    single = mp.declare(acme, size=5)
    reply = mp.client.post(f"/v1/files/{single['id']}/parts", json={}, headers=acme)
    assert reply.status_code == 409
    assert reply.json["error"]["code"] == "upload.not_multipart"
    multi = mp.declare(acme, name="x", size=PART + 1)
    hidden = mp.client.post(f"/v1/files/{multi['id']}/parts", json={}, headers=other)
    assert hidden.status_code == 404
    bad = mp.client.post(f"/v1/files/{multi['id']}/parts", json={"part_numbers": [3]}, headers=acme)
    assert bad.status_code == 409
    assert bad.json["error"]["code"] == "upload.parts_mismatch"
    reader = mp.key("acme", scopes=["files:read"])
    denied = mp.client.post(f"/v1/files/{multi['id']}/parts", json={}, headers=reader)
    assert denied.status_code == 403


@pytest.mark.parametrize("how", ["abort", "delete"])
def test_abort_and_delete_free_the_parts(mp: Harness, how: str) -> None:
    acme = mp.key("acme")
    data = _data(PART + 3)
    created = mp.declare(acme, name="a.bin", size=len(data))
    _put_parts(mp, created["upload"]["parts"][:1], data)
    assert _open_upload(mp, created["id"]) is not None
    key, upload_id = mp.record(created["id"]).storage_key, _upload_id(mp, created["id"])
    if how == "abort":
        reply = mp.client.post(f"/v1/files/{created['id']}/abort", headers=acme)
        assert reply.status_code == 200
        assert reply.json["status"] == "aborted"
    else:
        reply = mp.client.delete(f"/v1/files/{created['id']}", headers=acme)
        assert reply.status_code == 200
    assert mp.multipart.list_parts(key, upload_id) is None
    assert not _stored(mp, created)
    if mp.storage.name == "local":  # no part file is left
        assert not any(mp.local.disk.uploads.iterdir())
    # The key is free again.
    assert mp.declare(acme, name="a.bin", key=created["key"], size=5)["key"] == created["key"]


def test_a_failed_create_leaves_no_open_upload(mp: Harness) -> None:
    acme = mp.key("acme")
    first = mp.declare(acme, name="k", key="same/key.bin", size=PART + 1)
    clash = mp.client.post(
        "/v1/files",
        json={"name": "k", "key": "same/key.bin", "size": PART + 1, "mime_type": "text/plain"},
        headers=acme,
    )
    assert clash.status_code == 409
    assert _open_uploads(mp) == [_upload_id(mp, first["id"])]


def test_a_create_that_loses_an_idempotency_race_closes_its_upload(
    mp: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two creates with one Idempotency-Key: the second misses the first's answer at its
    start (it was not recorded yet), opens an upload, then finds the key taken. It answers
    the first's file and aborts the upload it opened, so no upload is left for nobody."""
    acme = {**mp.key("acme"), "Idempotency-Key": "race-1"}
    body = {"name": "r.bin", "size": PART + 1, "mime_type": "text/plain", "key": "race.bin"}
    first = mp.client.post("/v1/files", json=body, headers=acme)
    assert first.status_code == 201
    from broker.uploads import declare, idempotency

    real = idempotency.recorded
    calls = []

    def late(*args: Any) -> Any:
        calls.append(args)
        return None if len(calls) == 1 else real(*args)  # the first look misses the answer

    monkeypatch.setattr(declare, "recorded", late)
    second = mp.client.post("/v1/files", json=body, headers=acme)
    assert second.status_code == 201, second.json
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json["id"] == first.json["id"]
    assert len(calls) == 2
    assert _open_uploads(mp) == [_upload_id(mp, first.json["id"])]
