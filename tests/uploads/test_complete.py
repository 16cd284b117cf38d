"""Completion judged on what storage holds, on every backend.

These tests put other bytes, sizes or types into storage behind the broker's back and
expect completion to refuse, delete the object and fail the file. Where storage did not
verify a checksum (moto; an object written without one), the broker must hash the object
itself rather than trust that anyone checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from support import Harness, StorageBackend, error_code


@pytest.fixture
def h(make_harness: Callable[..., Harness], storage_backend: StorageBackend) -> Harness:
    return make_harness(storage_backend)


def _object(harness: Harness, created: dict[str, Any]) -> str:
    return f"acme/{created['bucket']}/{created['id']}/{created['key']}"


def _exists(harness: Harness, key: str) -> bool:
    return harness.storage.head(key) is not None


def test_round_trip_with_checksum(h: Harness) -> None:
    acme = h.key("acme")
    data = bytes(range(256)) * 4096  # 1 MiB
    created = h.declare(
        acme,
        name="blob.bin",
        size=len(data),
        mime_type="application/x-test",
        sha256=hashlib.sha256(data).hexdigest(),
    )
    if h.backend.peer is not None:
        assert "x-amz-checksum-sha256" in created["upload"]["headers"]
    assert h.put(created["upload"], data).status_code == 200
    pending = h.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert (pending["status"], pending["offset"]) == ("pending", len(data))
    done = h.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    assert done.status_code == 200, done.json
    assert done.json["status"] == "complete"
    redirect = h.client.get(f"/v1/files/{created['id']}/content", headers=acme)
    assert redirect.status_code == 302
    blob = h.download(redirect.headers["Location"])
    assert blob.data == data
    assert blob.headers["Content-Type"] == "application/x-test"
    if h.backend.peer is not None:
        assert blob.headers["Content-Disposition"] == 'inline; filename="blob.bin"'
    else:  # werkzeug quotes the name only where it must
        assert blob.headers["Content-Disposition"] == "inline; filename=blob.bin"


def test_complete_before_upload_is_409(h: Harness) -> None:
    acme = h.key("acme")
    created = h.declare(acme)
    response = h.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    assert (response.status_code, error_code(response)) == (409, "upload.not_received")


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        (b"hello world", "text/plain", "upload.size_mismatch"),
        (b"hello", "text/html", "upload.type_mismatch"),
        (b"HELLO", "text/plain", "upload.checksum_mismatch"),
    ],
)
def test_completion_checks_what_the_bucket_holds(
    h: Harness, body: bytes, content_type: str, code: str
) -> None:
    acme = h.key("acme")
    created = h.declare(acme, sha256=hashlib.sha256(b"hello").hexdigest())
    # Storage holds something else than declared (written around the signed URL): no
    # checksum was sent, so storage reports none and the broker must hash it itself.
    h.backend.put_object(h.storage, _object(h, created), body, content_type)
    response = h.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    assert (response.status_code, error_code(response)) == (422, code)
    assert not _exists(h, _object(h, created))
    failed = h.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert (failed["status"], failed["failure_code"]) == ("failed", code)


def test_a_wrong_body_never_completes(h: Harness) -> None:
    """Whoever catches it (LocalStack at the PUT, the broker's own hash on moto), a body
    whose SHA-256 differs from the declaration never becomes a complete file."""
    acme = h.key("acme")
    created = h.declare(acme, sha256=hashlib.sha256(b"hello").hexdigest())
    put = h.put(created["upload"], b"HELLO")
    response = h.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    if h.backend.enforces:  # storage itself refused (S3: BadDigest)
        assert put.status_code == (422 if h.backend.peer is None else 400)
        assert error_code(response) == "upload.not_received"
    else:
        assert put.status_code == 200  # moto stores anything
        assert error_code(response) == "upload.checksum_mismatch"
    assert not _exists(h, _object(h, created))
