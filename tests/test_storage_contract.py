"""The storage contract, written once against the Protocol and run against every adapter.

Each backend brings a Storage and a way to send HTTP to the URLs it signs: the embedded
store (through the Flask app), S3 on moto (in-process, fast) and S3 on LocalStack (a real
server with signature validation). The enforcement half (wrong length, type, checksum,
expired or altered URL) runs on the backends whose server enforces; moto does not, so it is
not asked to (that is a fact about moto, not a skipped test).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from broker.storage import S3Storage, Storage

from support import Harness, path_of

Send = Callable[[str, str, dict[str, str], bytes], tuple[int, Mapping[str, str], bytes]]


@dataclass
class Backend:
    """A storage adapter under test plus the HTTP transport that reaches its URLs."""

    storage: Storage
    send: Send
    advance: Callable[[float], None]
    now: Callable[[], float]
    enforces: bool


def _local(harness: Harness) -> Backend:
    def send(method: str, url: str, headers: dict[str, str], body: bytes) -> Any:
        response = harness.client.open(path_of(url), method=method, headers=headers, data=body)
        return response.status_code, response.headers, response.get_data()

    return Backend(
        storage=harness.service.storage,
        send=send,
        advance=harness.clock.advance,
        now=harness.clock,
        enforces=True,
    )


def _s3(peer: Any) -> Backend:
    storage = S3Storage(
        bucket=peer.new_bucket(), endpoint_url=peer.endpoint, region="us-east-1", clock=time.time
    )

    def send(method: str, url: str, headers: dict[str, str], body: bytes) -> Any:
        response = httpx.request(method, url, headers=headers, content=body, timeout=30)
        return response.status_code, response.headers, response.content

    return Backend(
        storage=storage, send=send, advance=time.sleep, now=time.time, enforces=peer.enforces
    )


def _make(request: pytest.FixtureRequest) -> Backend:
    if request.param == "local":
        return _local(request.getfixturevalue("harness"))
    return _s3(request.getfixturevalue({"moto": "moto_s3"}.get(request.param, request.param)))


@pytest.fixture(params=["local", "moto", "localstack"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return _make(request)


@pytest.fixture(params=["local", "localstack"])
def enforcing(request: pytest.FixtureRequest) -> Backend:
    """Only backends whose server checks signatures, lengths, types, checksums, expiry."""
    made = _make(request)
    assert made.enforces
    return made


def _put(
    backend: Backend,
    key: str,
    declared: bytes,
    *,
    content_type: str = "application/octet-stream",
    sha256: str | None = None,
    send_body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Presign for ``declared`` and send it, optionally lying with other headers or body."""
    upload = backend.storage.presign_put(
        key,
        size=len(declared),
        content_type=content_type,
        sha256=sha256,
        expires_at=int(backend.now()) + 300,
    )
    body = declared if send_body is None else send_body
    return backend.send(upload.method, upload.url, {**upload.headers, **(headers or {})}, body)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- what every adapter does -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "body"),
    [
        ("t/b/plain.txt", b"hello"),
        ("t/b/empty", b""),
        ("t/b/dir/with spaces/ünïcødé ☃.bin", bytes(range(256)) * 9),
        ("t/b/large.bin", bytes(range(251)) * 12_000),  # ~3 MiB: crosses chunk boundaries
    ],
)
def test_put_then_head_and_read_round_trip(backend: Backend, key: str, body: bytes) -> None:
    status, _, _ = _put(backend, key, body, content_type="application/x-test")
    assert status == 200
    info = backend.storage.head(key)
    assert info is not None
    assert (info.key, info.size, info.content_type) == (key, len(body), "application/x-test")
    assert info.sha256 in (None, _sha(body))
    assert b"".join(backend.storage.iter_bytes(key)) == body


def test_head_of_missing_key_is_none_and_read_raises(backend: Backend) -> None:
    assert backend.storage.head("t/b/never-written") is None
    with pytest.raises(FileNotFoundError):
        b"".join(backend.storage.iter_bytes("t/b/never-written"))


def test_presigned_get_serves_bytes_with_type_and_disposition(backend: Backend) -> None:
    body = b"<svg xmlns='http://www.w3.org/2000/svg'/>"
    assert _put(backend, "t/b/logo.svg", body, content_type="image/svg+xml")[0] == 200
    url = backend.storage.presign_get(
        "t/b/logo.svg",
        filename="lögo.svg",
        content_type="image/svg+xml",
        attachment=True,
        expires_at=int(backend.now()) + 60,
    )
    status, headers, data = backend.send("GET", url, {}, b"")
    assert (status, data) == (200, body)
    assert headers["Content-Type"] == "image/svg+xml"
    assert headers["Content-Disposition"].startswith("attachment")
    assert "filename*=UTF-8''l%C3%B6go.svg" in headers["Content-Disposition"]


def test_second_put_replaces_the_object_whole(backend: Backend) -> None:
    assert _put(backend, "t/b/k", b"first version")[0] == 200
    assert _put(backend, "t/b/k", b"second")[0] == 200
    assert b"".join(backend.storage.iter_bytes("t/b/k")) == b"second"
    info = backend.storage.head("t/b/k")
    assert info is not None
    assert info.size == 6


def test_delete_removes_and_is_idempotent(backend: Backend) -> None:
    assert _put(backend, "t/b/gone", b"bye")[0] == 200
    backend.storage.delete("t/b/gone")
    assert backend.storage.head("t/b/gone") is None
    backend.storage.delete("t/b/gone")  # not an error
    backend.storage.delete("t/b/never-there")


def test_keys_that_differ_only_by_case_or_unicode_stay_apart(backend: Backend) -> None:
    keys = ["t/b/Readme", "t/b/readme", "t/b/re\u0301sume\u0301", "t/b/r\u00e9sum\u00e9"]
    for index, key in enumerate(keys):
        assert _put(backend, key, f"v{index}".encode())[0] == 200
    for index, key in enumerate(keys):
        assert b"".join(backend.storage.iter_bytes(key)) == f"v{index}".encode()


def test_ping_answers(backend: Backend) -> None:
    backend.storage.ping()


# -- what storage itself must refuse -----------------------------------------------------------


def _assert_refused(backend: Backend, key: str, status: int) -> None:
    assert status in (400, 403, 411, 422), status
    assert backend.storage.head(key) is None, "a refused upload must leave nothing visible"


def test_refuses_a_shorter_body(enforcing: Backend) -> None:
    status, _, _ = _put(
        enforcing,
        "t/b/short",
        b"0123456789",
        send_body=b"012345678",
        headers={"Content-Length": "9"},
    )
    _assert_refused(enforcing, "t/b/short", status)


def test_refuses_a_longer_body(enforcing: Backend) -> None:
    status, _, _ = _put(
        enforcing,
        "t/b/long",
        b"0123456789",
        send_body=b"0123456789X",
        headers={"Content-Length": "11"},
    )
    _assert_refused(enforcing, "t/b/long", status)


def test_refuses_another_content_type(enforcing: Backend) -> None:
    status, _, _ = _put(
        enforcing,
        "t/b/type",
        b"%PDF-1.7",
        content_type="application/pdf",
        headers={"Content-Type": "text/html"},
    )
    _assert_refused(enforcing, "t/b/type", status)


def test_refuses_a_body_whose_checksum_differs(enforcing: Backend) -> None:
    declared = b"the real bytes"
    status, _, _ = _put(
        enforcing, "t/b/sum", declared, sha256=_sha(declared), send_body=b"the fake bytes"
    )
    _assert_refused(enforcing, "t/b/sum", status)


def test_accepts_a_body_whose_checksum_matches(enforcing: Backend) -> None:
    body = b"the real bytes"
    assert _put(enforcing, "t/b/sum-ok", body, sha256=_sha(body))[0] == 200
    assert b"".join(enforcing.storage.iter_bytes("t/b/sum-ok")) == body


def test_refuses_an_expired_url(enforcing: Backend) -> None:
    upload = enforcing.storage.presign_put(
        "t/b/late",
        size=3,
        content_type="text/plain",
        sha256=None,
        expires_at=int(enforcing.now()) + 5,
    )
    enforcing.advance(6)
    status, _, _ = enforcing.send("PUT", upload.url, upload.headers, b"abc")
    _assert_refused(enforcing, "t/b/late", status)


def test_refuses_an_altered_url(enforcing: Backend) -> None:
    upload = enforcing.storage.presign_put(
        "t/b/tamper",
        size=3,
        content_type="text/plain",
        sha256=None,
        expires_at=int(enforcing.now()) + 60,
    )
    position = len(upload.url) - 5
    flipped = "A" if upload.url[position] != "A" else "B"
    altered = upload.url[:position] + flipped + upload.url[position + 1 :]
    status, _, _ = enforcing.send("PUT", altered, upload.headers, b"abc")
    _assert_refused(enforcing, "t/b/tamper", status)


def test_a_download_url_cannot_upload(enforcing: Backend) -> None:
    assert _put(enforcing, "t/b/ro", b"original")[0] == 200
    url = enforcing.storage.presign_get(
        "t/b/ro",
        filename="ro",
        content_type="application/octet-stream",
        attachment=False,
        expires_at=int(enforcing.now()) + 60,
    )
    status, _, _ = enforcing.send(
        "PUT",
        url,
        {"Content-Type": "application/octet-stream", "Content-Length": "8"},
        b"replaced",
    )
    assert status in (400, 403, 405)
    assert b"".join(enforcing.storage.iter_bytes("t/b/ro")) == b"original"
