"""Completion judged on what storage holds, on every backend; and what only S3 mode has.

These tests put other bytes, sizes or types into storage behind the broker's back and
expect completion to refuse, delete the object and fail the file. Where storage did not
verify a checksum (moto; an object written without one), the broker must hash the object
itself rather than trust that anyone checked. The S3-only half: bucket set-up, an
unreachable endpoint, and active content streamed by the broker (S3 cannot add nosniff).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from broker.cli import main

from support import S3_ONLY, Harness, StorageBackend, error_code, free_port


@pytest.fixture
def h(make_harness: Callable[..., Harness], storage_backend: StorageBackend) -> Harness:
    return make_harness(storage_backend)


def _object(harness: Harness, created: dict[str, Any]) -> str:
    return f"acme/{created['bucket']}/{created['key']}"


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


def test_delete_and_abort_remove_the_object(h: Harness) -> None:
    acme = h.key("acme")
    done = h.upload(acme, b"hello")
    h.client.delete(f"/v1/files/{done['id']}", headers=acme)
    assert not _exists(h, _object(h, done))
    created = h.declare(acme)
    assert h.put(created["upload"], b"hello").status_code == 200
    aborted = h.client.post(f"/v1/files/{created['id']}/abort", headers=acme)
    assert aborted.json["status"] == "aborted"
    assert not _exists(h, _object(h, created))


def test_tenants_are_namespaced_in_the_bucket(h: Harness) -> None:
    acme, globex = h.key("acme"), h.key("globex")
    a = h.upload(acme, b"acme", key="same.txt")
    g = h.upload(globex, b"globex", key="same.txt")
    keys = {found.key for found in h.inventory.iter_objects()}
    assert keys == {"acme/default/same.txt", "globex/default/same.txt"}
    assert h.download(a["download_url"]).data == b"acme"
    assert h.download(g["download_url"]).data == b"globex"


def test_storage_down_is_503_and_loses_nothing(
    make_harness: Callable[..., Harness], moto_s3: Any
) -> None:
    down = make_harness(
        BROKER_STORAGE="s3",
        BROKER_S3_BUCKET="nowhere",
        BROKER_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
    )
    acme = down.key("acme")
    created = down.declare(acme)  # signing needs no round trip to storage
    complete = down.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    assert (complete.status_code, error_code(complete)) == (503, "storage.unavailable")
    health = down.client.get("/v1/health")
    assert (health.status_code, error_code(health)) == (503, "storage.unavailable")
    delete = down.client.delete(f"/v1/files/{created['id']}", headers=acme)
    assert (delete.status_code, error_code(delete)) == (503, "storage.unavailable")
    # Nothing changed in the metadata: the file is still there, still pending.
    assert down.record(created["id"]).status == "pending"


@S3_ONLY
def test_s3_setup_applies_cors_and_lifecycle(
    storage_backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    peer = storage_backend.peer
    bucket = f"setup-{peer.name}"
    for name, value in {
        "BROKER_DATA_DIR": str(tmp_path),
        "BROKER_STORAGE": "s3",
        "BROKER_S3_BUCKET": bucket,
        "BROKER_S3_ENDPOINT_URL": peer.endpoint,
        "BROKER_CORS_ORIGINS": "https://app.example",
    }.items():
        monkeypatch.setenv(name, value)
    first = CliRunner().invoke(main, ["s3", "setup", "--create-bucket"])
    assert first.exit_code == 0, first.output
    assert f"created bucket {bucket}" in first.output
    again = CliRunner().invoke(main, ["s3", "setup", "--create-bucket"])
    assert again.exit_code == 0, again.output
    assert f"bucket {bucket} exists" in again.output
    client = peer.client()
    rule = client.get_bucket_cors(Bucket=bucket)["CORSRules"][0]
    assert rule["AllowedOrigins"] == ["https://app.example"]
    assert {"PUT", "GET"} <= set(rule["AllowedMethods"])
    assert "ETag" in rule["ExposeHeaders"]
    lifecycle = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert lifecycle[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}


def test_s3_setup_needs_s3_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("BROKER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("BROKER_STORAGE", raising=False)
    result = CliRunner().invoke(main, ["s3", "setup"])
    assert result.exit_code != 0
    assert "BROKER_STORAGE=s3" in result.output


@S3_ONLY
def test_active_content_is_streamed_by_the_broker_with_nosniff(h: Harness) -> None:
    """S3 cannot add X-Content-Type-Options to its answers, so for HTML, SVG, XML and
    JavaScript the download URL is the broker's own link, which streams with the header."""
    acme = h.key("acme")
    page = b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>" * 40_000  # ~2 MiB
    done = h.upload(acme, page, name="x.svg", mime_type="image/svg+xml")
    assert "/v1/downloads/" in done["download_url"]
    for url in (
        done["download_url"],
        h.client.get(f"/v1/files/{done['id']}/content", headers=acme).headers["Location"],
    ):
        served = h.download(url)
        assert served.status_code == 200
        assert served.data == page
        assert served.headers["X-Content-Type-Options"] == "nosniff"
        assert served.headers["Content-Disposition"] == 'attachment; filename="x.svg"'
        assert served.headers["Content-Type"] == "image/svg+xml"
    # Everything else still goes straight to the bucket.
    plain = h.upload(acme, b"text", name="t.txt")
    assert "/v1/downloads/" not in plain["download_url"]
