"""``/v1/files`` through the Flask client: declare, upload, complete, read, abort, delete
(what a download gets: test_downloads.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from support import ENFORCING, Harness, StorageBackend, error_code, on_backends

BODY = b"hello"


@pytest.fixture
def acme(harness: Harness) -> dict[str, str]:
    return harness.key("acme")


def test_declare_answers_the_contract_shape(harness: Harness, acme: dict[str, str]) -> None:
    created = harness.declare(
        acme,
        name="report.pdf",
        size=12345,
        mime_type="application/pdf",
        key="reports/2026/report.pdf",
        metadata={"owner": "u_42"},
        expires_in=600,
    )
    now = int(harness.clock())
    assert created["id"].startswith("file_")
    assert created["object"] == "file"
    assert created["status"] == "pending"
    assert created["offset"] == 0
    assert (created["bucket"], created["key"]) == ("default", "reports/2026/report.pdf")
    assert created["metadata"] == {"owner": "u_42"}
    assert created["sha256"] is None
    assert created["created_at"] == now
    assert created["completed_at"] is None
    assert created["expires_at"] == now + 600
    upload = created["upload"]
    assert upload["method"] == "PUT"
    signed = {"Content-Type": "application/pdf", "Content-Length": "12345"}
    if harness.backend.peer is not None:  # S3: the object is written once (If-None-Match)
        signed["If-None-Match"] = "*"
    assert upload["headers"] == signed
    assert upload["expires_at"] == created["expires_at"]
    assert created["upload_url"] == upload["url"]
    assert created["download_url"].startswith("http://localhost/v1/downloads/")


def test_full_round_trip_with_checksum(harness: Harness, acme: dict[str, str]) -> None:
    data = b"\x00binary\xffpayload" * 1000
    digest = hashlib.sha256(data).hexdigest()
    created = harness.declare(
        acme,
        name="blob.bin",
        size=len(data),
        mime_type="application/octet-stream",
        sha256=digest.upper(),
    )
    assert created["sha256"] == digest  # normalised to lower case
    assert harness.put(created["upload"], data).status_code == 200
    fetched = harness.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert (fetched["status"], fetched["offset"]) == ("pending", len(data))
    done = harness.client.post(f"/v1/files/{created['id']}/complete", headers=acme, json={})
    assert done.status_code == 200
    assert done.json["status"] == "complete"
    assert done.json["completed_at"] == int(harness.clock())
    assert done.json["offset"] == len(data)
    assert harness.download(done.json["download_url"]).data == data
    # The download URL handed out at create works too, now that the bytes are in.
    assert harness.download(created["download_url"]).data == data


@on_backends("local")
def test_the_embedded_store_hashes_only_to_check_a_declared_checksum(
    harness: Harness, acme: dict[str, str]
) -> None:
    """The embedded store's own hashing and ETags (S3 has its own): local only.

    Without a declared SHA-256 the PUT stores the bytes unhashed (hashing would cost
    more CPU than the rest of the PUT); its ETag still changes whenever the bytes do. With
    one, the PUT is hashed and checked, and the answer says so."""
    plain = harness.declare(acme, name="p.txt", size=5, key="plain.txt")
    first = harness.put(plain["upload"], b"hello")
    assert first.status_code == 200
    assert first.json["sha256"] is None
    other = harness.declare(acme, name="o.txt", size=5, key="other.txt")
    second = harness.put(other["upload"], b"hello")  # the same bytes, another object
    assert second.headers["ETag"] != first.headers["ETag"]
    done = harness.client.post(f"/v1/files/{plain['id']}/complete", headers=acme, json={})
    assert done.status_code == 200
    served = harness.download(done.json["download_url"])
    assert served.data == b"hello"
    assert served.headers["ETag"] == first.headers["ETag"]

    data = b"checked"
    checked = harness.declare(
        acme, name="c.txt", size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    reply = harness.put(checked["upload"], data)
    assert reply.json["sha256"] == hashlib.sha256(data).hexdigest()
    assert reply.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()[:32]}"'


def test_completing_twice_returns_the_file_again(harness: Harness, acme: dict[str, str]) -> None:
    done = harness.upload(acme, BODY)
    again = harness.client.post(f"/v1/files/{done['id']}/complete", headers=acme)
    assert again.status_code == 200
    assert again.json["status"] == "complete"
    assert again.json["completed_at"] == done["completed_at"]


def test_complete_before_upload_is_409_and_leaves_it_pending(
    harness: Harness, acme: dict[str, str]
) -> None:
    created = harness.declare(acme)
    response = harness.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    assert response.status_code == 409
    assert error_code(response) == "upload.not_received"
    assert harness.client.get(f"/v1/files/{created['id']}", headers=acme).json["status"] == (
        "pending"
    )
    # ...and the upload still works afterwards.
    assert harness.put(created["upload"], BODY).status_code == 200
    assert (
        harness.client.post(f"/v1/files/{created['id']}/complete", headers=acme).status_code == 200
    )


def test_pending_file_reoffers_its_upload_until_it_expires(
    harness: Harness, acme: dict[str, str]
) -> None:
    created = harness.declare(acme, expires_in=60)
    fetched = harness.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert fetched["upload"]["expires_at"] == created["expires_at"]
    assert harness.put(fetched["upload"], BODY).status_code == 200
    harness.clock.advance(61)
    later = harness.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert later["upload"] is None


@pytest.mark.parametrize(
    ("data", "lying_headers", "code"),
    [
        (b"hell", {}, "upload.size_mismatch"),
        (b"hello!", {}, "upload.size_mismatch"),
        (BODY, {"Content-Type": "text/html"}, "upload.type_mismatch"),
        (b"HELLO", {}, "upload.checksum_mismatch"),
    ],
)
def test_a_lying_put_is_refused_and_stores_nothing(
    harness: Harness,
    acme: dict[str, str],
    data: bytes,
    lying_headers: dict[str, str],
    code: str,
) -> None:
    """A PUT whose length, type or bytes are not the declared ones: storage that enforces
    refuses it (the embedded store with the contract's code, S3 with its own 400 or 403)
    and keeps nothing; moto keeps anything, and completion refuses the lie there."""
    created = harness.declare(acme, sha256=hashlib.sha256(BODY).hexdigest())
    headers = {"Content-Length": str(len(data)), **lying_headers}
    response = harness.put(created["upload"], data, **headers)
    if harness.backend.enforces:
        if harness.backend.name == "local":
            assert response.status_code == 422
            assert error_code(response) == code
            assert not list(harness.local.disk.tmp.iterdir()), "temp file left behind"
        else:
            assert response.status_code in (400, 403), response.data
        fetched = harness.client.get(f"/v1/files/{created['id']}", headers=acme).json
        assert fetched["offset"] == 0
        complete = harness.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
        assert error_code(complete) == "upload.not_received"
    else:
        assert response.status_code == 200  # moto stores anything
        complete = harness.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
        assert (complete.status_code, error_code(complete)) == (422, code)
        failed = harness.client.get(f"/v1/files/{created['id']}", headers=acme).json
        assert (failed["status"], failed["failure_code"]) == ("failed", code)
    assert harness.storage.head(f"acme/default/{created['id']}/{created['key']}") is None


@ENFORCING
def test_expired_upload_url_is_refused(harness: Harness, acme: dict[str, str]) -> None:
    """Storage refuses an upload URL once it expired (moto checks no expiry)."""
    harness.backdate(10)
    created = harness.declare(acme, expires_in=10)
    harness.clock.advance(10)
    response = harness.put(created["upload"], BODY)
    assert response.status_code == 403
    if harness.backend.name == "local":
        assert error_code(response) == "blob.expired"
    assert harness.storage.head(f"acme/default/{created['id']}/{created['key']}") is None


@ENFORCING
def test_tampered_upload_url_is_refused(harness: Harness, acme: dict[str, str]) -> None:
    """Storage refuses an upload URL altered by one character (moto checks no signature)."""
    created = harness.declare(acme)
    url = created["upload"]["url"]
    tampered = url[:-3] + ("x" if url[-3] != "x" else "y") + url[-2:]
    response = harness.put({**created["upload"], "url": tampered}, BODY)
    assert response.status_code == 403
    if harness.backend.name == "local":
        assert error_code(response) == "blob.bad_signature"
    assert harness.storage.head(f"acme/default/{created['id']}/{created['key']}") is None


def test_mismatch_found_at_completion_fails_the_file_and_deletes_the_object(
    harness: Harness, acme: dict[str, str]
) -> None:
    """If storage ever holds other bytes than declared, completion refuses and cleans up."""
    created = harness.declare(acme, sha256=hashlib.sha256(BODY).hexdigest())
    assert harness.put(created["upload"], BODY).status_code == 200
    # Swap the stored bytes behind the broker's back (a storage peer that checks nothing).
    storage = harness.storage
    key = f"acme/default/{created['id']}/{created['key']}"
    storage.delete(key)
    harness.backend.put_object(storage, key, b"HELLO")
    response = harness.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    assert response.status_code == 422
    assert error_code(response) == "upload.checksum_mismatch"
    assert storage.head(key) is None
    fetched = harness.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert (fetched["status"], fetched["failure_code"]) == ("failed", "upload.checksum_mismatch")
    # A failed file frees its key for a new attempt.
    assert (
        harness.client.post(
            "/v1/files",
            headers=acme,
            json={"name": "a.txt", "size": 5, "mime_type": "text/plain", "key": created["key"]},
        ).status_code
        == 201
    )


def test_complete_of_failed_or_aborted_file_is_409(harness: Harness, acme: dict[str, str]) -> None:
    created = harness.declare(acme)
    assert harness.client.post(f"/v1/files/{created['id']}/abort", headers=acme).status_code == 200
    response = harness.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    assert response.status_code == 409
    assert error_code(response) == "upload.not_pending"


def test_abort_frees_storage_and_is_idempotent(harness: Harness, acme: dict[str, str]) -> None:
    created = harness.declare(acme)
    assert harness.put(created["upload"], BODY).status_code == 200
    aborted = harness.client.post(f"/v1/files/{created['id']}/abort", headers=acme)
    assert aborted.status_code == 200
    assert aborted.json["status"] == "aborted"
    assert harness.service.storage.head(f"acme/default/{created['id']}/{created['key']}") is None
    again = harness.client.post(f"/v1/files/{created['id']}/abort", headers=acme)
    assert (again.status_code, again.json["status"]) == (200, "aborted")


def test_abort_of_a_complete_file_is_409(harness: Harness, acme: dict[str, str]) -> None:
    done = harness.upload(acme, BODY)
    response = harness.client.post(f"/v1/files/{done['id']}/abort", headers=acme)
    assert response.status_code == 409
    assert error_code(response) == "upload.already_complete"
    assert harness.download(done["download_url"]).data == BODY


def test_delete_removes_bytes_and_row(harness: Harness, acme: dict[str, str]) -> None:
    done = harness.upload(acme, BODY)
    response = harness.client.delete(f"/v1/files/{done['id']}", headers=acme)
    assert response.status_code == 200
    assert response.json["id"] == done["id"]
    assert response.json["status"] == "complete"  # as it was
    gone = harness.download(done["download_url"])
    assert BODY not in gone.data
    if harness.backend.name == "local":
        assert gone.status_code == 404
        assert not list((harness.data_dir / "blobs" / "objects").rglob("*.blob"))
    else:  # S3 may answer 403 for a key that is not there
        assert gone.status_code in (403, 404)
    assert list(harness.inventory.iter_objects()) == []
    assert harness.client.get(f"/v1/files/{done['id']}", headers=acme).status_code == 404
    second = harness.client.delete(f"/v1/files/{done['id']}", headers=acme)
    assert (second.status_code, error_code(second)) == (404, "file.not_found")


def test_delete_of_a_pending_file_removes_what_was_uploaded(
    harness: Harness, acme: dict[str, str]
) -> None:
    created = harness.declare(acme)
    assert harness.put(created["upload"], BODY).status_code == 200
    assert harness.client.delete(f"/v1/files/{created['id']}", headers=acme).status_code == 200
    assert harness.service.storage.head(f"acme/default/{created['id']}/{created['key']}") is None


def test_client_chosen_key_that_exists_is_409(harness: Harness, acme: dict[str, str]) -> None:
    harness.declare(acme, key="same/key.txt")
    response = harness.client.post(
        "/v1/files",
        headers=acme,
        json={"name": "b.txt", "size": 1, "mime_type": "text/plain", "key": "same/key.txt"},
    )
    assert (response.status_code, error_code(response)) == (409, "file.key_exists")


def test_generated_keys_do_not_collide(harness: Harness, acme: dict[str, str]) -> None:
    keys = {harness.declare(acme, name="same.txt")["key"] for _ in range(20)}
    assert len(keys) == 20
    assert all(key.endswith("/same.txt") for key in keys)


@pytest.mark.parametrize(
    "key",
    [
        "../x",
        "/abs",
        "a/../b",
        "a/./b",
        "a//b",
        "a\u0000b",
        "a\\b",
        "a\nb",
        "",
        "k" * 1025,
        "k" * 897,
        "é" * 513,
    ],
)
def test_traversal_and_unsafe_keys_are_422(
    harness: Harness, acme: dict[str, str], key: str
) -> None:
    response = harness.client.post(
        "/v1/files",
        headers=acme,
        json={"name": "a.txt", "size": 1, "mime_type": "text/plain", "key": key},
    )
    assert response.status_code == 422
    assert error_code(response) in ("key.invalid", "validation.failed")
    if key:
        assert error_code(response) == "key.invalid"


def test_key_is_normalised_to_nfc(harness: Harness, acme: dict[str, str]) -> None:
    created = harness.declare(acme, key="cafe\u0301.txt")
    assert created["key"] == "caf\u00e9.txt"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"size": 1, "mime_type": "text/plain"}, "name"),
        ({"name": "a", "mime_type": "text/plain"}, "size"),
        ({"name": "a", "size": 1}, "mime_type"),
        ({"name": "a", "size": -1, "mime_type": "text/plain"}, "size"),
        ({"name": "a", "size": 1.5, "mime_type": "text/plain"}, "size"),
        ({"name": "a", "size": "1", "mime_type": "text/plain"}, "size"),
        ({"name": "a", "size": True, "mime_type": "text/plain"}, "size"),
        ({"name": "a", "size": 1, "mime_type": "not a type"}, "mime_type"),
        ({"name": "a", "size": 1, "mime_type": "text/plain", "sha256": "abc"}, "sha256"),
        ({"name": "a", "size": 1, "mime_type": "text/plain", "expires_in": 0}, "expires_in"),
        ({"name": "a\r\nX-Injected: 1", "size": 1, "mime_type": "text/plain"}, "name"),
        ({"name": "a", "size": 1, "mime_type": "text/plain", "colour": "red"}, "colour"),
        ({"name": "a", "size": 1, "mime_type": "text/plain", "metadata": {"k": 1}}, "metadata"),
    ],
)
def test_invalid_declarations_name_the_field(
    harness: Harness, acme: dict[str, str], body: dict[str, object], field: str
) -> None:
    response = harness.client.post("/v1/files", headers=acme, json=body)
    assert response.status_code == 422
    assert error_code(response) == "validation.failed"
    assert field in response.json["error"]["details"]
    assert all(isinstance(v, list | dict) for v in response.json["error"]["details"].values())


def test_expires_in_is_capped_by_the_bucket(harness: Harness, acme: dict[str, str]) -> None:
    created = harness.declare(acme, expires_in=10**9)
    assert created["expires_at"] == int(harness.clock()) + 3600  # default max_url_ttl


@pytest.fixture
def policed(
    make_harness: Callable[..., Harness], storage_backend: StorageBackend, tmp_path: Path
) -> Harness:
    policy = {
        "buckets": {
            "default": {},
            "avatars": {
                "max_size": 1024,
                "allowed_mime_types": ["image/*"],
                "max_url_ttl": 120,
            },
        }
    }
    path = tmp_path / "buckets.json"
    path.write_text(json.dumps(policy))
    return make_harness(storage_backend, BROKER_BUCKETS=str(path))


def test_bucket_policy_limits_size_type_and_ttl(policed: Harness) -> None:
    headers = policed.key("acme")
    base = {"name": "me.png", "bucket": "avatars"}
    too_big = policed.client.post(
        "/v1/files", headers=headers, json={**base, "size": 1025, "mime_type": "image/png"}
    )
    assert (too_big.status_code, error_code(too_big)) == (413, "upload.size_exceeds_limit")
    wrong_type = policed.client.post(
        "/v1/files", headers=headers, json={**base, "size": 10, "mime_type": "text/plain"}
    )
    assert (wrong_type.status_code, error_code(wrong_type)) == (422, "upload.mime_type_not_allowed")
    ok = policed.declare(headers, **base, size=1024, mime_type="image/PNG", expires_in=600)
    assert ok["mime_type"] == "image/png"
    assert ok["expires_at"] == int(policed.clock()) + 120


def test_unknown_bucket_is_404(harness: Harness, acme: dict[str, str]) -> None:
    response = harness.client.post(
        "/v1/files",
        headers=acme,
        json={"name": "a", "size": 1, "mime_type": "text/plain", "bucket": "nope"},
    )
    assert (response.status_code, error_code(response)) == (404, "bucket.not_found")


def test_zero_byte_file_round_trips(harness: Harness, acme: dict[str, str]) -> None:
    done = harness.upload(acme, b"", name="empty.txt")
    assert done["size"] == 0
    assert harness.download(done["download_url"]).data == b""


def test_delete_and_abort_remove_the_object(harness: Harness) -> None:
    acme = harness.key("acme")
    done = harness.upload(acme, b"hello")
    harness.client.delete(f"/v1/files/{done['id']}", headers=acme)
    assert harness.storage.head(f"acme/default/{done['id']}/{done['key']}") is None
    created = harness.declare(acme)
    assert harness.put(created["upload"], b"hello").status_code == 200
    aborted = harness.client.post(f"/v1/files/{created['id']}/abort", headers=acme)
    assert aborted.json["status"] == "aborted"
    assert harness.storage.head(f"acme/default/{created['id']}/{created['key']}") is None
