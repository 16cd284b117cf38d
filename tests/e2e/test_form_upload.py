"""The proxied upload (``POST /v1/files`` with ``multipart/form-data``) through real gunicorn.

What only a real server shows: curl's own multipart encoding round-trips, a body over the
bucket's limit is answered 413 with ``Connection: close`` before the client has sent it, a
client that hangs up mid-body leaves no object, no temp file and no pending file behind, and
in S3 mode a body larger than one part goes up as a multipart upload.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .conftest import BrokerServer, RawConnection, Tenant, expect_error, sha256_hex

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def _form_head(boundary: str, fields: dict[str, str], filename: str = "f.bin") -> bytes:
    out = b""
    for name, value in fields.items():
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    out += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return out


def _files(tenant: Tenant, bucket: str = "default") -> list[dict[str, object]]:
    listed = tenant.http.get(f"/v1/buckets/{bucket}/files")
    assert listed.status_code == 200, listed.text
    data: list[dict[str, object]] = listed.json()["data"]
    return data


def test_curl_form_round_trip(broker: BrokerServer, tenant: Tenant, tmp_path: Path) -> None:
    content = secrets.token_bytes(3 * MiB + 17)
    source = tmp_path / "report.pdf"
    source.write_bytes(content)
    answer = subprocess.run(
        [
            "curl", "-sS", "--noproxy", "*", "-X", "POST", f"{broker.url}/v1/files",
            "-H", f"Authorization: Bearer {tenant.key}",
            "-F", "key=docs/report.pdf", "-F", f"sha256={sha256_hex(content)}",
            "-F", f"file=@{source};type=application/pdf",
        ],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    file = json.loads(answer.stdout)
    assert file["status"] == "complete", file
    assert (file["key"], file["name"], file["mime_type"]) == (
        "docs/report.pdf",
        "report.pdf",
        "application/pdf",
    )
    assert (file["size"], file["sha256"]) == (len(content), sha256_hex(content))
    assert tenant.download(file["id"]) == content


def test_a_lie_is_refused_and_nothing_is_kept(broker: BrokerServer, tenant: Tenant) -> None:
    content = secrets.token_bytes(2 * MiB)
    response = tenant.http.post(
        "/v1/files",
        data={"key": "lie.bin", "sha256": sha256_hex(b"something else")},
        files={"file": ("lie.bin", content, "application/octet-stream")},
    )
    expect_error(response, 422, "upload.checksum_mismatch")
    assert broker.stored_keys(tenant.name) == []
    assert broker.partial_uploads() == []
    assert [f["status"] for f in _files(tenant)] == ["failed"]


def test_over_the_limit_is_413_before_the_body_is_sent(
    start_broker: Callable[..., BrokerServer], tmp_path: Path
) -> None:
    buckets = tmp_path / "buckets.json"
    buckets.write_text(json.dumps({"buckets": {"default": {}, "small": {"max_size": MiB}}}))
    server = start_broker(BROKER_BUCKETS=str(buckets))
    tenant = server.tenant()
    boundary = f"b{secrets.token_hex(8)}"
    head = _form_head(boundary, {"bucket": "small"})
    total = 256 * MiB  # far more than the server may read
    with RawConnection(server.url + "/v1/files") as conn:
        conn.send_head(
            "POST",
            {
                "Authorization": f"Bearer {tenant.key}",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(len(head) + total),
            },
        )
        conn.send(head)
        sent = 0
        try:
            while sent < total:
                conn.send(b"\0" * MiB)
                sent += MiB
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = conn.reply()
    assert sent < total, "the server read the whole body"
    if reply is not None:  # the answer can be lost in the reset of an unread body
        expect_error(reply, 413, "upload.size_exceeds_limit")
        assert reply.headers["Connection"] == "close"
    assert server.partial_uploads() == []
    assert [f["status"] for f in _files(tenant, "small")] == ["failed"]


def test_a_client_that_hangs_up_leaves_nothing(broker: BrokerServer, tenant: Tenant) -> None:
    boundary = f"b{secrets.token_hex(8)}"
    head = _form_head(boundary, {"key": "cut.bin"})
    with RawConnection(broker.url + "/v1/files") as conn:
        conn.send_head(
            "POST",
            {
                "Authorization": f"Bearer {tenant.key}",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(len(head) + 10 * MiB),
            },
        )
        conn.send(head + secrets.token_bytes(4 * MiB))
        time.sleep(0.3)  # the server is streaming it by now
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        statuses = [f["status"] for f in _files(tenant)]
        if statuses == ["failed"]:
            break
        time.sleep(0.1)
    assert statuses == ["failed"]
    assert broker.stored_keys(tenant.name) == []
    assert broker.partial_uploads() == []
    # The key is free: the whole upload, sent again, completes.
    content = secrets.token_bytes(MiB)
    response = tenant.http.post(
        "/v1/files", data={"key": "cut.bin"}, files={"file": ("cut.bin", content)}
    )
    assert response.status_code == 201, response.text
    assert tenant.download(response.json()["id"]) == content


def _chunked(data: bytes, size: int = 64 * 1024) -> list[bytes]:
    out = [b"%x\r\n%s\r\n" % (len(data[i : i + size]), data[i : i + size]) for i in
           range(0, len(data), size)]  # fmt: skip
    return [*out, b"0\r\n\r\n"]


def test_a_chunked_form_round_trips_and_a_broken_one_leaves_nothing(
    broker: BrokerServer, tenant: Tenant
) -> None:
    boundary = f"b{secrets.token_hex(8)}"
    content = secrets.token_bytes(MiB + 3)
    body = (
        _form_head(boundary, {"key": "chunked.bin"}) + content + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {
        "Authorization": f"Bearer {tenant.key}",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Transfer-Encoding": "chunked",
    }
    with RawConnection(broker.url + "/v1/files") as conn:
        conn.send_head("POST", headers)
        for piece in _chunked(body):
            conn.send(piece)
        reply = conn.reply()
    assert reply is not None
    assert reply.status_code == 201, reply.text
    assert tenant.download(reply.json()["id"]) == content
    # Broken framing half-way through the file: a chunk size that is not hex.
    broken = _form_head(boundary, {"key": "broken.bin"}) + content
    with RawConnection(broker.url + "/v1/files") as conn:
        conn.send_head("POST", headers)
        for piece in _chunked(broken)[:-1]:
            conn.send(piece)
        conn.send(b"zz\r\nnot a chunk\r\n")
        reply = conn.reply()
    assert reply is not None
    expect_error(reply, 400, "request.malformed")
    stored = broker.stored_keys(tenant.name)
    assert len(stored) == 1, stored  # the chunked form's object, and nothing of the broken one
    assert stored[0].endswith("/chunked.bin")
    assert broker.partial_uploads() == []
    assert sorted(str(f["status"]) for f in _files(tenant)) == ["complete", "failed"]


def test_s3_mode_streams_a_multipart_upload(s3_broker: BrokerServer) -> None:
    tenant = s3_broker.tenant()
    assert tenant.s3 is not None
    content = secrets.token_bytes(20 * MiB + 5)  # three 8 MiB parts' worth
    response = tenant.http.post(
        "/v1/files",
        data={"key": "big.bin", "sha256": sha256_hex(content), "size": str(len(content))},
        files={"file": ("big.bin", content, "application/x-test")},
        timeout=httpx.Timeout(60),
    )
    assert response.status_code == 201, response.text
    file = response.json()
    assert (file["status"], file["size"]) == ("complete", len(content))
    stored = tenant.s3.head(tenant.storage_key(file))
    assert stored is not None
    assert stored["ETag"].strip('"').endswith("-3")
    assert tenant.download(file["id"]) == content
    # A lie in S3 mode: nothing stored, no multipart upload left open.
    lie = tenant.http.post(
        "/v1/files",
        data={"key": "lie.bin", "size": str(len(content) - 1)},
        files={"file": ("lie.bin", content, "application/x-test")},
        timeout=httpx.Timeout(60),
    )
    expect_error(lie, 422, "upload.size_mismatch")
    assert tenant.s3.head(f"{tenant.name}/default/lie.bin") is None
    open_uploads = tenant.s3.client.list_multipart_uploads(
        Bucket=tenant.s3.name, Prefix=f"{tenant.name}/"
    )
    assert open_uploads.get("Uploads", []) == []
