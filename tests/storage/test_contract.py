"""The storage contract, written once against the Protocol and run against every adapter.

Each backend brings a Storage and a way to send HTTP to the URLs it signs: the embedded
store (through the Flask app), S3 on moto (in-process, fast) and S3 on LocalStack (a real
server with signature validation). The enforcement half (wrong length, type, checksum,
expired or altered URL) runs on the backends whose server enforces; moto does not, so it is
not asked to (that is a fact about moto, not a skipped test).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from broker.errors import BrokerError
from broker.models import UploadInstructions
from broker.parts import MIN_PART_SIZE
from broker.storage import (
    Expected,
    InventoryStorage,
    LocalStorage,
    MultipartStorage,
    S3Storage,
    ScratchStorage,
    SelfServedStorage,
    Storage,
    StreamingStorage,
)

from support import ENFORCING, Harness, StorageBackend, on_backends, path_of

Send = Callable[[str, str, dict[str, str], bytes], tuple[int, Mapping[str, str], bytes]]


@dataclass
class Backend:
    """A storage adapter under test plus the HTTP transport that reaches its URLs."""

    storage: Storage
    send: Send
    advance: Callable[[float], None]
    now: Callable[[], float]
    enforces: bool

    @property
    def multipart(self) -> MultipartStorage:
        """The adapter's multipart ability (both adapters have it)."""
        assert isinstance(self.storage, MultipartStorage)
        return self.storage

    @property
    def streaming(self) -> StreamingStorage:
        """The adapter's ability to take a stream (both adapters have it)."""
        assert isinstance(self.storage, StreamingStorage)
        return self.storage


@pytest.fixture
def backend(storage_backend: StorageBackend, request: pytest.FixtureRequest) -> Backend:
    """The adapter of each backend: the embedded store behind the Flask app (its frozen
    clock moved by the tests), or S3 on a fresh bucket of the peer (real time)."""
    if storage_backend.peer is None:
        harness: Harness = request.getfixturevalue("harness")

        def send_local(method: str, url: str, headers: dict[str, str], body: bytes) -> Any:
            response = harness.client.open(path_of(url), method=method, headers=headers, data=body)
            return response.status_code, response.headers, response.get_data()

        return Backend(
            storage=harness.service.storage,
            send=send_local,
            advance=harness.clock.advance,
            now=harness.clock,
            enforces=True,
        )
    storage = S3Storage(
        bucket=storage_backend.env["BROKER_S3_BUCKET"],
        endpoint_url=storage_backend.peer.endpoint,
        region="us-east-1",
        clock=time.time,
    )

    def send(method: str, url: str, headers: dict[str, str], body: bytes) -> Any:
        response = httpx.request(method, url, headers=headers, content=body, timeout=30)
        return response.status_code, response.headers, response.content

    return Backend(
        storage=storage,
        send=send,
        advance=time.sleep,
        now=time.time,
        enforces=storage_backend.enforces,
    )


@pytest.fixture
def enforcing(backend: Backend) -> Backend:
    """A backend whose server checks signatures, lengths, types, checksums and expiry: the
    tests taking it run ``@ENFORCING`` only."""
    assert backend.enforces
    return backend


def _put(
    backend: Backend,
    key: str,
    declared: bytes,
    *,
    content_type: str = "application/octet-stream",
    sha256: str | None = None,
    send_body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Mapping[str, str], bytes]:
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


def test_each_adapter_has_exactly_its_abilities(backend: Backend) -> None:
    """Both adapters take parts, streams and inventory; only the embedded store keeps
    scratch of its own and has the broker serve its signed URLs."""
    storage = backend.storage
    for ability in (Storage, MultipartStorage, StreamingStorage, InventoryStorage):
        assert isinstance(storage, ability), ability.__name__
    local = storage.name == "local"
    assert isinstance(storage, ScratchStorage) is local
    assert isinstance(storage, SelfServedStorage) is local
    assert hasattr(storage, "sweep_scratch") is local  # S3 no longer pretends to have scratch


def test_inventory_lists_objects_and_open_uploads(backend: Backend) -> None:
    storage = backend.storage
    assert isinstance(storage, InventoryStorage)
    assert isinstance(storage, MultipartStorage)
    assert _put(backend, "t/b/listed ü", b"abc")[0] == 200
    upload_id = storage.start_multipart("t/b/open", content_type="text/plain")
    assert {(o.key, o.size) for o in storage.iter_objects()} == {("t/b/listed ü", 3)}
    assert [(u.key, u.upload_id) for u in storage.iter_uploads()] == [("t/b/open", upload_id)]
    storage.abort_multipart("t/b/open", upload_id)
    assert list(storage.iter_uploads()) == []


# -- what storage itself must refuse -----------------------------------------------------------


def _assert_refused(backend: Backend, key: str, status: int) -> None:
    assert status in (400, 403, 411, 422), status
    assert backend.storage.head(key) is None, "a refused upload must leave nothing visible"


@ENFORCING
def test_refuses_a_shorter_body(enforcing: Backend) -> None:
    status, _, _ = _put(
        enforcing,
        "t/b/short",
        b"0123456789",
        send_body=b"012345678",
        headers={"Content-Length": "9"},
    )
    _assert_refused(enforcing, "t/b/short", status)


@ENFORCING
def test_refuses_a_longer_body(enforcing: Backend) -> None:
    status, _, _ = _put(
        enforcing,
        "t/b/long",
        b"0123456789",
        send_body=b"0123456789X",
        headers={"Content-Length": "11"},
    )
    _assert_refused(enforcing, "t/b/long", status)


@ENFORCING
def test_refuses_another_content_type(enforcing: Backend) -> None:
    status, _, _ = _put(
        enforcing,
        "t/b/type",
        b"%PDF-1.7",
        content_type="application/pdf",
        headers={"Content-Type": "text/html"},
    )
    _assert_refused(enforcing, "t/b/type", status)


@ENFORCING
def test_refuses_a_body_whose_checksum_differs(enforcing: Backend) -> None:
    declared = b"the real bytes"
    status, _, _ = _put(
        enforcing, "t/b/sum", declared, sha256=_sha(declared), send_body=b"the fake bytes"
    )
    _assert_refused(enforcing, "t/b/sum", status)


@ENFORCING
def test_accepts_a_body_whose_checksum_matches(enforcing: Backend) -> None:
    body = b"the real bytes"
    assert _put(enforcing, "t/b/sum-ok", body, sha256=_sha(body))[0] == 200
    assert b"".join(enforcing.storage.iter_bytes("t/b/sum-ok")) == body


@ENFORCING
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


@ENFORCING
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


@ENFORCING
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


# -- write-once: an object, once stored, is never replaced through storage ----------------------


def _signed(backend: Backend, key: str, size: int) -> UploadInstructions:
    return backend.storage.presign_put(
        key,
        size=size,
        content_type="application/octet-stream",
        sha256=None,
        expires_at=int(backend.now()) + 300,
    )


@ENFORCING
def test_a_second_put_to_the_same_url_is_refused_and_the_first_bytes_stay(
    enforcing: Backend,
) -> None:
    upload = _signed(enforcing, "t/b/once", 10)
    assert enforcing.send("PUT", upload.url, upload.headers, b"AAAAAAAAAA")[0] == 200
    status, _, _ = enforcing.send("PUT", upload.url, upload.headers, b"BBBBBBBBBB")
    assert status == 412
    assert b"".join(enforcing.storage.iter_bytes("t/b/once")) == b"AAAAAAAAAA"
    assert _put(enforcing, "t/b/once", b"another URL")[0] == 412  # any URL for the key


@on_backends("localstack")
def test_a_put_that_drops_the_signed_if_none_match_is_refused(enforcing: Backend) -> None:
    upload = _signed(enforcing, "t/b/unconditional", 3)
    assert upload.headers["If-None-Match"] == "*"
    headers = {k: v for k, v in upload.headers.items() if k != "If-None-Match"}
    status, _, _ = enforcing.send("PUT", upload.url, headers, b"abc")
    assert status == 403
    assert enforcing.storage.head("t/b/unconditional") is None


@ENFORCING
def test_of_two_racing_puts_exactly_one_wins_whole(enforcing: Backend) -> None:
    size = 2 * 1024 * 1024
    upload = _signed(enforcing, "t/b/race", size)
    bodies = [bytes([letter]) * size for letter in b"AB"]
    start = threading.Barrier(len(bodies))
    statuses: dict[bytes, int] = {}

    def send(body: bytes) -> None:
        start.wait()
        statuses[body] = enforcing.send("PUT", upload.url, upload.headers, body)[0]

    threads = [threading.Thread(target=send, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses.values()) == [200, 412], statuses
    (winner,) = [body for body, status in statuses.items() if status == 200]
    assert b"".join(enforcing.storage.iter_bytes("t/b/race")) == winner


@ENFORCING
def test_joining_parts_over_a_stored_object_is_refused(enforcing: Backend) -> None:
    storage = enforcing.multipart
    upload_id = storage.start_multipart("t/b/joined", content_type="application/octet-stream")
    part = storage.presign_part(
        "t/b/joined", upload_id, part_number=1, size=5, expires_at=int(enforcing.now()) + 300
    )
    assert enforcing.send("PUT", part.url, part.headers, b"parts")[0] == 200
    assert _put(enforcing, "t/b/joined", b"first")[0] == 200
    parts = storage.list_parts("t/b/joined", upload_id)
    assert parts is not None
    with pytest.raises(BrokerError) as refused:
        storage.finish_multipart("t/b/joined", upload_id, parts)
    assert (refused.value.code, refused.value.status) == ("upload.already_stored", 412)
    assert b"".join(enforcing.storage.iter_bytes("t/b/joined")) == b"first"
    storage.abort_multipart("t/b/joined", upload_id)


@ENFORCING
def test_a_stream_over_a_stored_object_is_refused(enforcing: Backend) -> None:
    assert _put(enforcing, "t/b/streamed-once", b"first")[0] == 200
    with pytest.raises(BrokerError) as refused:
        enforcing.streaming.put_stream(
            "t/b/streamed-once",
            [b"second"],
            Expected(content_type="application/octet-stream", max_size=100),
        )
    assert refused.value.code == "upload.already_stored"
    assert b"".join(enforcing.storage.iter_bytes("t/b/streamed-once")) == b"first"


# -- proxied uploads: put_stream ---------------------------------------------------------------


def _streaming(backend: Backend) -> Backend:
    """S3 adapters buffer the smallest part S3 allows, so 12 MiB goes up in three parts."""
    if isinstance(backend.storage, S3Storage):
        backend.storage.stream_part_size = MIN_PART_SIZE
    return backend


def _pieces(data: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _nothing_left(backend: Backend, key: str) -> None:
    """No object, no open multipart upload, no temp file: a refused stream left nothing."""
    storage = backend.storage
    assert backend.storage.head(key) is None
    if isinstance(storage, S3Storage):
        uploads = storage.client.list_multipart_uploads(Bucket=storage.bucket)
        assert uploads.get("Uploads", []) == []
    else:
        assert isinstance(storage, LocalStorage)
        assert list(storage.disk.tmp.iterdir()) == []


@pytest.mark.parametrize(
    "body",
    [b"", b"hello", bytes(range(256)) * 4096 * 12 + b"tail"],  # 12 MiB + 4: multipart on S3
    ids=["empty", "small", "12MiB"],
)
def test_put_stream_round_trip(backend: Backend, body: bytes) -> None:
    streaming = _streaming(backend).streaming
    info = streaming.put_stream(
        "t/b/streamed",
        _pieces(body),
        Expected(
            content_type="application/x-test", max_size=len(body), size=len(body), sha256=_sha(body)
        ),
    )
    assert (info.key, info.size, info.content_type, info.sha256) == (
        "t/b/streamed",
        len(body),
        "application/x-test",
        _sha(body),
    )
    head = backend.storage.head("t/b/streamed")
    assert head is not None
    assert (head.size, head.content_type) == (len(body), "application/x-test")
    assert b"".join(backend.storage.iter_bytes("t/b/streamed")) == body


def test_put_stream_without_declared_size_or_checksum(backend: Backend) -> None:
    streaming = _streaming(backend).streaming
    body = bytes(range(256)) * 100
    info = streaming.put_stream(
        "t/b/undeclared",
        _pieces(body, 1000),
        Expected(content_type="text/plain", max_size=10**9, size=None, sha256=None),
    )
    assert (info.size, info.sha256) == (len(body), _sha(body))
    assert b"".join(backend.storage.iter_bytes("t/b/undeclared")) == body


@pytest.mark.parametrize(
    ("size", "sha256", "max_size", "code"),
    [
        (None, None, 5 * 1024 * 1024, "upload.size_exceeds_limit"),
        (12 * 1024 * 1024 - 1, None, 10**9, "upload.size_mismatch"),  # body is longer
        (12 * 1024 * 1024 + 1, None, 10**9, "upload.size_mismatch"),  # body is shorter
        (None, "0" * 64, 10**9, "upload.checksum_mismatch"),
    ],
    ids=["over-limit", "longer", "shorter", "checksum"],
)
def test_put_stream_refuses_a_lie_and_keeps_nothing(
    backend: Backend, size: int | None, sha256: str | None, max_size: int, code: str
) -> None:
    streaming = _streaming(backend).streaming
    body = bytes(range(256)) * 4096 * 12  # 12 MiB: S3 has sent parts before it knows
    with pytest.raises(BrokerError) as refused:
        streaming.put_stream(
            "t/b/lie",
            _pieces(body),
            Expected(
                content_type="application/octet-stream", max_size=max_size, size=size, sha256=sha256
            ),
        )
    assert refused.value.code == code
    _nothing_left(backend, "t/b/lie")


def test_put_stream_stops_reading_one_byte_past_the_limit(backend: Backend) -> None:
    streaming = _streaming(backend).streaming
    taken = 0

    def endless() -> Iterator[bytes]:
        nonlocal taken
        while True:
            taken += 64 * 1024
            yield b"\0" * (64 * 1024)

    with pytest.raises(BrokerError) as refused:
        streaming.put_stream(
            "t/b/endless",
            endless(),
            Expected(
                content_type="application/octet-stream",
                max_size=1024 * 1024,
                size=None,
                sha256=None,
            ),
        )
    assert refused.value.code == "upload.size_exceeds_limit"
    assert taken <= 1024 * 1024 + 64 * 1024
    _nothing_left(backend, "t/b/endless")


def test_put_stream_keeps_nothing_when_the_source_fails(backend: Backend) -> None:
    streaming = _streaming(backend).streaming
    assert _put(backend, "t/b/kept", b"earlier version")[0] == 200

    def cut_off() -> Iterator[bytes]:
        yield from _pieces(bytes(12 * 1024 * 1024))
        raise ConnectionResetError("the client went away")

    with pytest.raises(ConnectionResetError):
        streaming.put_stream(
            "t/b/kept",
            cut_off(),
            Expected(
                content_type="application/octet-stream", max_size=10**9, size=None, sha256=None
            ),
        )
    assert b"".join(backend.storage.iter_bytes("t/b/kept")) == b"earlier version"
    with pytest.raises(ConnectionResetError):
        streaming.put_stream(
            "t/b/cut",
            cut_off(),
            Expected(
                content_type="application/octet-stream", max_size=10**9, size=None, sha256=None
            ),
        )
    _nothing_left(backend, "t/b/cut")


# -- multipart uploads: every adapter ------------------------------------------------------

_PART = 5 * 1024 * 1024  # S3's smallest part (but the last)


def _send_part(backend: Backend, key: str, upload_id: str, number: int, body: bytes) -> str:
    """PUT one part to its presigned URL; return the ETag storage answered."""
    signed = backend.multipart.presign_part(
        key, upload_id, part_number=number, size=len(body), expires_at=int(backend.now()) + 300
    )
    assert signed.headers == {"Content-Length": str(len(body))}
    status, headers, _ = backend.send(signed.method, signed.url, signed.headers, body)
    assert status == 200
    return headers["ETag"].strip('"')


def test_multipart_parts_are_listed_and_joined_in_order(backend: Backend) -> None:
    key = "t/b/multi/part ü.bin"
    bodies = [bytes([n]) * _PART for n in (1, 2)] + [b"tail"]
    upload_id = backend.multipart.start_multipart(key, content_type="application/x-test")
    assert backend.multipart.list_parts(key, upload_id) == []
    etags = {n: _send_part(backend, key, upload_id, n, bodies[n - 1]) for n in (3, 1, 2)}
    listed = backend.multipart.list_parts(key, upload_id)
    assert listed is not None
    assert [(p.part_number, p.size, p.etag) for p in listed] == [
        (n, len(bodies[n - 1]), etags[n]) for n in (1, 2, 3)
    ]
    assert backend.storage.head(key) is None  # parts are not an object yet

    info = backend.multipart.finish_multipart(key, upload_id, listed)
    assert (info.size, info.content_type) == (2 * _PART + 4, "application/x-test")
    assert info.sha256 in (None, _sha(b"".join(bodies)))
    assert b"".join(backend.storage.iter_bytes(key)) == b"".join(bodies)
    assert backend.multipart.list_parts(key, upload_id) is None  # closed


def test_multipart_part_sent_again_replaces_the_first(backend: Backend) -> None:
    key = "t/b/multi/again"
    upload_id = backend.multipart.start_multipart(key, content_type="text/plain")
    _send_part(backend, key, upload_id, 1, b"first")
    etag = _send_part(backend, key, upload_id, 1, b"second!")
    listed = backend.multipart.list_parts(key, upload_id)
    assert listed is not None
    assert [(p.part_number, p.size, p.etag) for p in listed] == [(1, 7, etag)]
    backend.multipart.finish_multipart(key, upload_id, listed)
    assert b"".join(backend.storage.iter_bytes(key)) == b"second!"


def test_multipart_abort_frees_the_parts_and_is_idempotent(backend: Backend) -> None:
    key = "t/b/multi/abort"
    upload_id = backend.multipart.start_multipart(key, content_type="text/plain")
    _send_part(backend, key, upload_id, 1, b"bytes")
    backend.multipart.abort_multipart(key, upload_id)
    assert backend.multipart.list_parts(key, upload_id) is None
    backend.multipart.abort_multipart(key, upload_id)  # gone already: not an error
    assert backend.storage.head(key) is None


def test_multipart_uploads_of_other_keys_are_not_confused(backend: Backend) -> None:
    first = backend.multipart.start_multipart("t/b/one", content_type="text/plain")
    second = backend.multipart.start_multipart("t/b/two", content_type="text/plain")
    assert first != second
    _send_part(backend, "t/b/one", first, 1, b"one")
    assert backend.multipart.list_parts("t/b/two", second) == []
    one = backend.multipart.list_parts("t/b/one", first)
    assert one is not None
    assert [p.size for p in one] == [3]


@ENFORCING
def test_multipart_refuses_a_part_of_another_length(enforcing: Backend) -> None:
    key = "t/b/multi/lie"
    upload_id = enforcing.multipart.start_multipart(key, content_type="text/plain")
    signed = enforcing.multipart.presign_part(
        key, upload_id, part_number=1, size=10, expires_at=int(enforcing.now()) + 300
    )
    for body in (b"x" * 9, b"x" * 11):
        status, _, _ = enforcing.send(
            signed.method, signed.url, {"Content-Length": str(len(body))}, body
        )
        assert status in (400, 403, 422)
    assert enforcing.multipart.list_parts(key, upload_id) == []


@ENFORCING
def test_multipart_refuses_an_expired_part_url(enforcing: Backend) -> None:
    key = "t/b/multi/late"
    upload_id = enforcing.multipart.start_multipart(key, content_type="text/plain")
    signed = enforcing.multipart.presign_part(
        key, upload_id, part_number=1, size=4, expires_at=int(enforcing.now()) + 1
    )
    enforcing.advance(2.5)
    status, _, _ = enforcing.send(signed.method, signed.url, signed.headers, b"late")
    assert status == 403
    assert enforcing.multipart.list_parts(key, upload_id) == []
