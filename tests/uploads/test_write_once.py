"""Write-once objects, through the API on every backend: once a file is complete nothing the
broker signed changes the bytes its download URL serves, and a URL dies with its file (each
file writes its own object, so an old URL cannot reach a file declared later at its key).

Refusing a second write is storage's job (``@ENFORCING``: the embedded store and LocalStack;
moto is not asked to); keeping files apart is the broker's, so those tests run on moto too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from support import ENFORCING, S3_ONLY, Harness, StorageBackend, error_code


@pytest.fixture
def h(make_harness: Callable[..., Harness], storage_backend: StorageBackend) -> Harness:
    return make_harness(storage_backend)


def _complete(h: Harness, headers: dict[str, str], created: dict[str, Any]) -> Any:
    return h.client.post(f"/v1/files/{created['id']}/complete", headers=headers)


def _content(h: Harness, headers: dict[str, str], file_id: str) -> bytes:
    """The bytes ``GET /v1/files/{id}/content`` leads to."""
    answer = h.client.get(f"/v1/files/{file_id}/content", headers=headers)
    assert answer.status_code == 302, answer.json
    reply = h.download(answer.headers["Location"])
    assert reply.status_code == 200
    return reply.data


def _refused_by_storage(reply: Any) -> None:
    """412: the embedded store's envelope, or S3's own PreconditionFailed."""
    assert reply.status_code == 412, reply.data[:300]
    if reply.headers.get("Content-Type", "").startswith("application/json"):
        assert error_code(reply) == "upload.already_stored"
    else:
        assert b"PreconditionFailed" in reply.data


@ENFORCING
def test_a_re_put_after_complete_is_refused_and_downloads_serve_the_validated_bytes(
    h: Harness,
) -> None:
    acme = h.key()
    created = h.declare(acme, size=10)  # no sha256: only write-once protects the bytes
    assert h.put(created["upload"], b"AAAAAAAAAA").status_code == 200
    done = _complete(h, acme, created)
    assert done.status_code == 200, done.json
    _refused_by_storage(h.put(created["upload"], b"BBBBBBBBBB"))
    assert h.download(done.json["download_url"]).data == b"AAAAAAAAAA"
    assert _content(h, acme, created["id"]) == b"AAAAAAAAAA"
    again = h.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert (again["status"], h.download(again["download_url"]).data) == ("complete", b"AAAAAAAAAA")


@ENFORCING
def test_a_re_put_before_complete_is_refused_too(h: Harness) -> None:
    """The first body to arrive is the one judged: a later one cannot swap it."""
    acme = h.key()
    created = h.declare(acme, size=5)
    assert h.put(created["upload"], b"first").status_code == 200
    _refused_by_storage(h.put(created["upload"], b"later"))
    assert _complete(h, acme, created).status_code == 200
    assert _content(h, acme, created["id"]) == b"first"


@pytest.mark.parametrize("end", ["delete", "abort"])
def test_a_dead_files_upload_url_cannot_touch_a_new_file_at_its_key(h: Harness, end: str) -> None:
    acme = h.key()
    old = h.declare(acme, key="reused.txt")
    if end == "delete":
        assert h.client.delete(f"/v1/files/{old['id']}", headers=acme).status_code == 200
    else:
        assert h.client.post(f"/v1/files/{old['id']}/abort", headers=acme).status_code == 200
    new = h.declare(acme, key="reused.txt")
    assert new["upload"]["url"] != old["upload"]["url"]
    h.put(old["upload"], b"evil!")  # whatever storage answers, it is not the new file's

    early = _complete(h, acme, new)
    assert (early.status_code, error_code(early)) == (409, "upload.not_received")
    assert h.put(new["upload"], b"good!").status_code == 200
    done = _complete(h, acme, new)
    assert done.status_code == 200, done.json
    assert h.download(done.json["download_url"]).data == b"good!"


def test_a_stale_download_url_does_not_serve_a_new_pending_files_bytes(h: Harness) -> None:
    acme = h.key()
    old = h.upload(acme, b"old!!", key="reused.txt")
    stale = old["download_url"]
    assert h.download(stale).data == b"old!!"
    assert h.client.delete(f"/v1/files/{old['id']}", headers=acme).status_code == 200
    new = h.declare(acme, key="reused.txt")
    assert h.put(new["upload"], b"new!!").status_code == 200  # pending: nobody checked it

    reply = h.download(stale)
    assert reply.status_code in (403, 404), reply.data[:300]
    assert b"new!!" not in reply.data


@ENFORCING
def test_completing_parts_over_a_stored_object_is_refused(h: Harness) -> None:
    acme = h.key()
    created = h.declare(acme, size=10, multipart=True)
    part = created["upload"]["parts"][0]
    assert h.put({"method": "PUT", **part}, b"0123456789").status_code == 200
    where = h.record(created["id"]).storage_key
    h.backend.put_object(h.storage, where, b"behind the broker's back")

    refused = _complete(h, acme, created)
    assert (refused.status_code, error_code(refused)) == (412, "upload.already_stored")
    assert b"".join(h.storage.iter_bytes(where)) == b"behind the broker's back"
    status = h.client.get(f"/v1/files/{created['id']}", headers=acme).json["status"]
    assert status == "pending"


@S3_ONLY
@pytest.mark.parametrize("mime_type", ["text/plain", "image/svg+xml"])  # redirected, streamed
def test_in_a_versioned_bucket_downloads_serve_the_version_completion_validated(
    h: Harness, mime_type: str
) -> None:
    s3 = h.s3
    s3.client.put_bucket_versioning(Bucket=s3.bucket, VersioningConfiguration={"Status": "Enabled"})
    acme = h.key()
    done = h.upload(acme, b"<svg>validated</svg>", mime_type=mime_type)
    record = h.record(done["id"])
    assert record.version_id is not None
    # Someone with bucket access writes over it (a service without conditional writes).
    h.backend.put_object(h.storage, record.storage_key, b"<svg>replaced!</svg>", mime_type)
    assert b"".join(h.storage.iter_bytes(record.storage_key)) == b"<svg>replaced!</svg>"
    assert _content(h, acme, done["id"]) == b"<svg>validated</svg>"
    again = h.client.get(f"/v1/files/{done['id']}", headers=acme).json
    assert h.download(again["download_url"]).data == b"<svg>validated</svg>"
