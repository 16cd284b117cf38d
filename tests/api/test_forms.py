"""``POST /v1/files`` with ``multipart/form-data``: the proxied, streaming upload.

Each behaviour runs on the embedded store and on S3 (moto in-process, LocalStack with
signature validation). What a user relies on: the bytes come back identical, a lie (size,
checksum, type, limit) is refused with the contract's code and leaves nothing in storage
(no object, no open multipart upload, no temp file) and no pending or complete file.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.api.forms import READ_SIZE
from broker.errors import BrokerError
from broker.models import Principal
from broker.parts import MIN_PART_SIZE
from broker.sweep import Sweeper

from support import Harness, StorageBackend, assert_envelope, fail_os_call, on_backends

MiB = 1024 * 1024
SMALL_LIMIT = 64 * 1024


@pytest.fixture
def server(
    storage_backend: StorageBackend, make_harness: Callable[..., Harness], tmp_path: Path
) -> Harness:
    """An app with a default bucket, a small one and an images-only one, on each storage."""
    policy = {
        "buckets": {
            "default": {},
            "small": {"max_size": SMALL_LIMIT},
            "images": {"allowed_mime_types": ["image/*"]},
        }
    }
    path = tmp_path / "buckets.json"
    path.write_text(json.dumps(policy))
    harness = make_harness(storage_backend, BROKER_BUCKETS=str(path))
    if storage_backend.peer is not None:
        # The smallest part S3 allows, so a 12 MiB body goes up in three parts.
        harness.s3.stream_part_size = MIN_PART_SIZE
    return harness


@pytest.fixture
def acme(server: Harness) -> dict[str, str]:
    return server.key("acme")


# -- helpers -----------------------------------------------------------------------------------


def form(
    data: bytes | None,
    *,
    fields: dict[str, str] | None = None,
    filename: str | None = "report.bin",
    part_type: str | None = "application/x-test",
    after: dict[str, str] | None = None,
) -> tuple[bytes, str]:
    """A multipart/form-data body: ``fields``, then ``file`` (unless None), then ``after``."""
    boundary = f"----broker{secrets.token_hex(8)}"
    out = b""
    for name, value in (fields or {}).items():
        out += _field(boundary, name, value)
    if data is not None:
        disposition = 'form-data; name="file"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if part_type is not None:
            head += f"Content-Type: {part_type}\r\n"
        out += head.encode() + b"\r\n" + data + b"\r\n"
    for name, value in (after or {}).items():
        out += _field(boundary, name, value)
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def _field(boundary: str, name: str, value: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
    ).encode()


def post_form(
    harness: Harness, headers: dict[str, str], body: bytes, content_type: str, **more: str
) -> Any:
    return harness.client.post(
        "/v1/files", data=body, content_type=content_type, headers={**headers, **more}
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code(response: Any) -> str:
    return str(response.json["error"]["code"])


def leftovers(harness: Harness) -> list[str]:
    """Everything storage holds: objects, open multipart uploads and (local) temp files."""
    if harness.storage.name == "local":
        blobs = harness.data_dir / "blobs"
        found = [p.name for p in (blobs / "objects").rglob("*") if p.is_file()]
        found += [f"tmp/{p.name}" for p in (blobs / "tmp").iterdir()]
        return found
    client, bucket = harness.s3.client, harness.s3.bucket
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return keys + [f"upload:{u['Key']}" for u in uploads]


def failed_files(harness: Harness, headers: dict[str, str], bucket: str = "default") -> list[Any]:
    """Every file of the tenant in ``bucket``, asserting none is pending or complete."""
    listed = harness.client.get(f"/v1/buckets/{bucket}/files", headers=headers).json["data"]
    assert all(f["status"] == "failed" for f in listed), listed
    return list(listed)


class CountingStream(io.RawIOBase):
    """A request body of ``length`` bytes produced on demand (maybe fewer: a client that
    hangs up), counting how much of it the server read."""

    def __init__(self, parts: Iterator[bytes], length: int) -> None:
        self._parts = parts
        self._pending = b""
        self._length = length
        self._position = 0  # what the test client's length probe (tell/seek) sees
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._position = self._length + offset if whence == io.SEEK_END else offset
        return self._position

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            self._pending = next(self._parts, b"")
            if not self._pending:
                return 0
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        self.consumed += count
        return count


# -- what a user relies on ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"hello, broker\n", b"", bytes(range(256)) * 4096 * 12 + b"tail"],  # 12 MiB + 4: 3 parts
    ids=["small", "empty", "12MiB"],
)
def test_round_trip_is_byte_identical(server: Harness, acme: dict[str, str], data: bytes) -> None:
    body, content_type = form(data, fields={"key": "docs/report.bin", "sha256": sha(data)})
    response = post_form(server, acme, body, content_type)
    assert response.status_code == 201, response.json
    file = response.json
    assert file["status"] == "complete"
    assert (file["key"], file["name"], file["size"]) == ("docs/report.bin", "report.bin", len(data))
    assert (file["mime_type"], file["sha256"], file["offset"]) == (
        "application/x-test",
        sha(data),
        len(data),
    )
    assert file["completed_at"] is not None
    assert file["upload"] is None
    downloaded = server.download(file["download_url"])
    assert downloaded.status_code == 200
    assert downloaded.data == data
    assert downloaded.headers["Content-Type"] == "application/x-test"
    again = server.client.get(f"/v1/files/{file['id']}", headers=acme).json
    assert (again["status"], again["size"], again["sha256"]) == ("complete", len(data), sha(data))
    if server.storage.name == "s3" and len(data) > MIN_PART_SIZE:
        info = server.storage.head(f"acme/default/{file['id']}/{file['key']}")
        assert info is not None
        assert info.etag.endswith("-3"), info  # went up as a three-part multipart upload


def test_defaults_name_type_and_key_and_records_the_checksum(
    server: Harness, acme: dict[str, str]
) -> None:
    body, content_type = form(b"\x89PNG...", filename="ünï ☃.png", part_type="Image/PNG")
    response = post_form(server, acme, body, content_type)
    assert response.status_code == 201, response.json
    file = response.json
    assert (file["name"], file["mime_type"]) == ("ünï ☃.png", "image/png")
    assert file["key"].endswith(".png")
    assert file["sha256"] == sha(b"\x89PNG...")
    # No part type and no mime_type field: octet-stream. Fields override the part.
    body, content_type = form(b"x", part_type=None, filename="x")
    assert post_form(server, acme, body, content_type).json["mime_type"] == (
        "application/octet-stream"
    )
    body, content_type = form(b"x", fields={"name": "n.txt", "mime_type": "text/plain"})
    named = post_form(server, acme, body, content_type).json
    assert (named["name"], named["mime_type"]) == ("n.txt", "text/plain")


@pytest.mark.parametrize("size", ["12", "13", "11"])
def test_declared_size_is_checked(server: Harness, acme: dict[str, str], size: str) -> None:
    data = b"twelve bytes"
    body, content_type = form(data, fields={"size": size})
    response = post_form(server, acme, body, content_type)
    if size == "12":
        assert response.status_code == 201, response.json
        return
    assert response.status_code == 422, response.json
    assert code(response) == "upload.size_mismatch"
    assert leftovers(server) == []
    [failed] = failed_files(server, acme)
    assert failed["failure_code"] == "upload.size_mismatch"


@pytest.mark.parametrize("size", [100, 12 * MiB], ids=["one-part", "multipart"])
def test_wrong_checksum_is_refused_and_nothing_is_kept(
    server: Harness, acme: dict[str, str], size: int
) -> None:
    data = secrets.token_bytes(size)
    body, content_type = form(data, fields={"key": "k.bin", "sha256": sha(b"other")})
    response = post_form(server, acme, body, content_type)
    assert response.status_code == 422, response.json
    assert code(response) == "upload.checksum_mismatch"
    assert leftovers(server) == []
    [failed] = failed_files(server, acme)
    assert (failed["key"], failed["failure_code"]) == ("k.bin", "upload.checksum_mismatch")
    # The key is free again: an honest upload under it succeeds.
    body, content_type = form(data, fields={"key": "k.bin", "sha256": sha(data)})
    assert post_form(server, acme, body, content_type).status_code == 201


def test_over_the_bucket_limit_is_413_without_reading_the_body(
    server: Harness, acme: dict[str, str]
) -> None:
    body, content_type = form(b"", fields={"bucket": "small"})
    head, tail = body.split(b"\r\n\r\n\r\n", 1)  # cut where the (empty) file would go
    total = 8 * MiB
    stream = CountingStream(
        iter([head + b"\r\n\r\n", *(b"\0" * MiB for _ in range(total // MiB)), b"\r\n" + tail]),
        length=len(head) + 4 + total + 2 + len(tail),
    )
    response = server.client.post(
        "/v1/files", input_stream=stream, headers={**acme, "Content-Type": content_type}
    )
    assert response.status_code == 413, response.json
    assert code(response) == "upload.size_exceeds_limit"
    assert response.headers["Connection"] == "close"
    assert stream.consumed <= SMALL_LIMIT + 2 * READ_SIZE, stream.consumed  # not 8 MiB
    assert leftovers(server) == []
    failed_files(server, acme, "small")


def test_declared_size_over_the_limit_is_413_before_the_file(
    server: Harness, acme: dict[str, str]
) -> None:
    body, content_type = form(b"x" * 10, fields={"bucket": "small", "size": str(SMALL_LIMIT + 1)})
    response = post_form(server, acme, body, content_type)
    assert response.status_code == 413
    assert code(response) == "upload.size_exceeds_limit"
    assert leftovers(server) == []
    assert failed_files(server, acme, "small") == []  # refused before any file was recorded


@pytest.mark.parametrize(
    ("fields", "part_type"),
    [({"bucket": "images"}, "text/html"), ({"bucket": "images", "mime_type": "text/plain"}, None)],
)
def test_type_the_bucket_does_not_allow_is_422(
    server: Harness, acme: dict[str, str], fields: dict[str, str], part_type: str | None
) -> None:
    body, content_type = form(b"<p>hi</p>", fields=fields, part_type=part_type)
    response = post_form(server, acme, body, content_type)
    assert response.status_code == 422
    assert code(response) == "upload.mime_type_not_allowed"
    assert leftovers(server) == []


def test_key_exists_is_409_and_invalid_key_is_422(server: Harness, acme: dict[str, str]) -> None:
    body, content_type = form(b"first", fields={"key": "same/key.txt"})
    first = post_form(server, acme, body, content_type)
    assert first.status_code == 201
    body, content_type = form(b"second", fields={"key": "same/key.txt"})
    response = post_form(server, acme, body, content_type)
    assert response.status_code == 409
    assert code(response) == "file.key_exists"
    assert server.download(first.json["download_url"]).data == b"first"
    for bad in ("../escape", "a//b", "/abs"):
        body, content_type = form(b"x", fields={"key": bad})
        response = post_form(server, acme, body, content_type)
        assert (response.status_code, code(response)) == (422, "key.invalid"), bad


def test_auth_scope_and_bucket(server: Harness) -> None:
    body, content_type = form(b"x")
    response = post_form(server, {}, body, content_type)
    assert (response.status_code, code(response)) == (401, "auth.missing_key")
    assert response.headers["Connection"] == "close"  # the body was never read
    reader = server.key("acme", scopes=["files:read"])
    response = post_form(server, reader, body, content_type)
    assert (response.status_code, code(response)) == (403, "auth.forbidden")
    body, content_type = form(b"x", fields={"bucket": "nope"})
    response = post_form(server, server.key("acme"), body, content_type)
    assert (response.status_code, code(response)) == (404, "bucket.not_found")
    assert leftovers(server) == []


@pytest.mark.parametrize(
    ("body_fields", "status", "error", "field"),
    [
        ({"name": "a.txt"}, 422, "validation.failed", "file"),  # no file part at all
        ({"colour": "blue"}, 422, "validation.failed", "colour"),  # unknown field
        ({"size": "-1"}, 422, "validation.failed", "size"),
        ({"sha256": "abc"}, 422, "validation.failed", "sha256"),
    ],
)
def test_malformed_declarations_are_422(
    server: Harness,
    acme: dict[str, str],
    body_fields: dict[str, str],
    status: int,
    error: str,
    field: str,
) -> None:
    data = None if field == "file" else b"x"
    body, content_type = form(data, fields=body_fields)
    response = post_form(server, acme, body, content_type)
    assert (response.status_code, code(response)) == (status, error)
    assert field in response.json["error"]["details"]
    assert leftovers(server) == []


def test_a_field_after_file_is_400_and_nothing_is_kept(
    server: Harness, acme: dict[str, str]
) -> None:
    body, content_type = form(b"data", after={"key": "late.txt"})
    response = post_form(server, acme, body, content_type)
    assert (response.status_code, code(response)) == (400, "request.malformed")
    assert "last field" in response.json["error"]["message"]
    assert leftovers(server) == []
    failed_files(server, acme)


@pytest.mark.parametrize("size", [1000, 12 * MiB], ids=["one-part", "multipart"])
def test_a_cut_off_body_leaves_nothing(server: Harness, acme: dict[str, str], size: int) -> None:
    body, content_type = form(secrets.token_bytes(size), fields={"key": "cut.bin"})
    # The client hangs up half-way: fewer bytes than Content-Length arrive.
    response = server.client.post(
        "/v1/files",
        input_stream=CountingStream(iter([body[: len(body) // 2]]), length=len(body)),
        headers={**acme, "Content-Type": content_type},
    )
    assert (response.status_code, code(response)) == (400, "request.malformed")
    # A body that ends without the closing boundary is cut off too.
    response = post_form(server, acme, body[: -len(b"--\r\n") - 40], content_type)
    assert (response.status_code, code(response)) == (400, "request.malformed")
    assert leftovers(server) == []
    assert [f["key"] for f in failed_files(server, acme)] == ["cut.bin", "cut.bin"]


@on_backends("local")
@pytest.mark.parametrize(
    ("call", "code_"),
    [("fsync", errno.EIO), ("fsync", errno.ENOSPC), ("rename", errno.EIO)],
    ids=["body-fsync", "body-fsync-full", "blob-rename"],
)
def test_a_failing_disk_is_503_and_leaves_nothing(
    server: Harness, acme: dict[str, str], monkeypatch: pytest.MonkeyPatch, call: str, code_: int
) -> None:
    """The same disk failure answers as on a PUT to a signed URL: 503, never a 500."""
    data = secrets.token_bytes(1000)
    body, content_type = form(data, fields={"key": "disk.bin"})
    with monkeypatch.context() as patched:
        fail_os_call(patched, call, 1, code_)
        response = post_form(server, acme, body, content_type)
    assert_envelope(response, 503, "storage.unavailable")
    assert server.service.storage.head("acme/default/disk.bin") is None
    assert leftovers(server) == []
    [failed] = failed_files(server, acme)
    assert failed["failure_code"] == "storage.unavailable"
    # The disk is back: the same upload succeeds under the freed key.
    assert post_form(server, acme, body, content_type).status_code == 201


def test_not_a_form_boundary_is_400(server: Harness, acme: dict[str, str]) -> None:
    response = server.client.post(
        "/v1/files", data=b"x", content_type="multipart/form-data", headers=acme
    )
    assert (response.status_code, code(response)) == (400, "request.malformed")


def test_idempotency_key_replays_the_completed_file(server: Harness, acme: dict[str, str]) -> None:
    data = b"once only"
    body, content_type = form(data, fields={"sha256": sha(b"a lie")})
    first = post_form(server, acme, body, content_type, **{"Idempotency-Key": "up-1"})
    assert code(first) == "upload.checksum_mismatch"
    # A failed attempt does not bind the key: the honest retry is a fresh attempt...
    body, content_type = form(data, fields={"sha256": sha(data)})
    second = post_form(server, acme, body, content_type, **{"Idempotency-Key": "up-1"})
    assert (second.status_code, code(second)) == (422, "idempotency.mismatch")
    body, content_type = form(data, fields={"sha256": sha(b"a lie")})
    retry = post_form(server, acme, body, content_type, **{"Idempotency-Key": "up-1"})
    assert code(retry) == "upload.checksum_mismatch"
    body, content_type = form(data, fields={"sha256": sha(data)})
    done = post_form(server, acme, body, content_type, **{"Idempotency-Key": "up-2"})
    assert done.status_code == 201
    assert "Idempotent-Replayed" not in done.headers
    # ... and a completed one answers the same file again, without storing anything new.
    replay = post_form(server, acme, body, content_type, **{"Idempotency-Key": "up-2"})
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert (replay.json["id"], replay.json["status"]) == (done.json["id"], "complete")
    listed = server.client.get("/v1/buckets/default/files", headers=acme).json["data"]
    assert [f["status"] for f in listed].count("complete") == 1


def test_another_tenant_cannot_see_the_file(server: Harness, acme: dict[str, str]) -> None:
    body, content_type = form(b"mine", fields={"key": "private.txt"})
    file = post_form(server, acme, body, content_type).json
    other = server.key("globex")
    response = server.client.get(f"/v1/files/{file['id']}", headers=other)
    assert (response.status_code, code(response)) == (404, "file.not_found")
    # The same key in another tenant is another object.
    body, content_type = form(b"theirs", fields={"key": "private.txt"})
    theirs = post_form(server, other, body, content_type).json
    assert server.download(theirs["download_url"]).data == b"theirs"
    assert server.download(file["download_url"]).data == b"mine"


def test_a_slow_upload_keeps_its_file_from_expiring(server: Harness, acme: dict[str, str]) -> None:
    """While bytes keep coming, the pending file's expiry moves out (the sweeper leaves it)."""
    body, content_type = form(b"", fields={"key": "slow.bin"})
    head, tail = body.split(b"\r\n\r\n\r\n", 1)
    started = server.clock()

    def trickle() -> Iterator[bytes]:
        yield head + b"\r\n\r\n"
        for _ in range(4):
            server.clock.advance(600)  # 40 minutes in all: far past the 15-minute upload TTL
            yield b"\1" * MiB
        yield b"\r\n" + tail

    stream = CountingStream(trickle(), length=len(head) + 4 + 4 * MiB + 2 + len(tail))
    response = server.client.post(
        "/v1/files", input_stream=stream, headers={**acme, "Content-Type": content_type}
    )
    assert response.status_code == 201, response.json
    stored = server.client.get(f"/v1/files/{response.json['id']}", headers=acme).json
    assert stored["status"] == "complete"
    assert stored["expires_at"] > started + 1800  # pushed out as the bytes arrived


def test_a_sweep_during_the_upload_leaves_it_alone(server: Harness, acme: dict[str, str]) -> None:
    """``broker sweep`` does not take a proxied upload in flight (on S3: an open multipart
    upload no row names) for an orphan; the upload completes."""
    service = server.service
    # Storage stamps uploads and temp files with real time: the clock follows it here.
    server.clock.now = time.time()
    body, content_type = form(b"", fields={"key": "swept.bin"})
    head, tail = body.split(b"\r\n\r\n\r\n", 1)
    reports = []

    def with_a_sweep() -> Iterator[bytes]:
        yield head + b"\r\n\r\n"
        for index in range(3):
            yield b"\1" * (4 * MiB)
            if index == 1:  # on S3 a part is up by now: the multipart upload is open
                if service.storage.name == "s3":
                    server.clock.advance(20 * 60)  # it looks older than the sweeper's grace
                # (The embedded store's temp file is written to all along: it stays fresh.)
                sweeper = Sweeper(service.settings, service.store, server.reapable, server.clock)
                reports.append(sweeper.run(objects=True))
        yield b"\r\n" + tail

    stream = CountingStream(with_a_sweep(), length=len(head) + 4 + 12 * MiB + 2 + len(tail))
    response = server.client.post(
        "/v1/files", input_stream=stream, headers={**acme, "Content-Type": content_type}
    )
    assert response.status_code == 201, response.json
    [report] = reports
    assert (report.orphan_uploads_aborted, report.files_expired, report.errors) == (0, 0, 0)
    assert server.download(response.json["download_url"]).data == b"\1" * (12 * MiB)


def test_a_file_arriving_through_the_broker_offers_no_url_and_cannot_be_completed(
    server: Harness, acme: dict[str, str]
) -> None:
    """Mid-stream, the pending file has no upload section (nobody may PUT a competing body
    to it) and ``complete`` answers 409: it completes itself when its bytes are in."""
    service = server.service
    writer = Principal(tenant="acme", scopes=frozenset({"files:read", "files:write"}))
    body, content_type = form(b"", fields={"key": "mid.bin"})
    head, tail = body.split(b"\r\n\r\n\r\n", 1)
    seen: list[Any] = []

    def with_a_look() -> Iterator[bytes]:
        yield head + b"\r\n\r\n"
        yield b"\2" * MiB
        record = service.store.get_file_by_key("acme", "default", "mid.bin")
        assert record is not None
        seen.append(service.files.get(writer, record.id))
        try:
            service.completions.complete(writer, record.id)
        except BrokerError as exc:
            seen.append(exc.code)
        yield b"\2" * MiB
        yield b"\r\n" + tail

    stream = CountingStream(with_a_look(), length=len(head) + 4 + 2 * MiB + 2 + len(tail))
    response = server.client.post(
        "/v1/files", input_stream=stream, headers={**acme, "Content-Type": content_type}
    )
    assert response.status_code == 201, response.json
    view, code = seen
    assert (view.record.status.value, view.upload, view.offset) == ("pending", None, 0)
    assert code == "upload.not_received"
    assert server.download(response.json["download_url"]).data == b"\2" * (2 * MiB)
