"""Every lie a client can tell is refused over real HTTP, and leaves nothing behind.

A rejected PUT must not store a byte: the file stays pending with ``offset`` 0, completing it
is 409 ``upload.not_received``, and the honest PUT to the same URL still works afterwards.
Every refusal comes in the contract's JSON envelope with the request id echoed in a header.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    BrokerServer,
    RawConnection,
    Tenant,
    expect_error,
    raw_request,
)

pytestmark = pytest.mark.e2e

CONTENT = b"exactly what was declared\n"


def flip(text: str, index: int) -> str:
    """``text`` with the character at ``index`` replaced by a different, URL-safe one."""
    replacement = "B" if text[index] == "A" else "A"
    return text[:index] + replacement + text[index + 1 :]


def tamper(url: str) -> str:
    """Alter one character in the signed payload of a blob URL (before the signature)."""
    base, token = url.rsplit("/", 1)
    payload, _, _signature = token.partition(".")
    return f"{base}/{flip(token, len(payload) // 2)}"


def rejected_then_recovers(tenant: Tenant, file: dict[str, Any]) -> None:
    """What every rejected PUT must leave: nothing stored, and the honest PUT still works."""
    tenant.assert_nothing_stored(file["id"])
    tenant.assert_recovers(file, CONTENT)


# -- length -------------------------------------------------------------------------------


def test_content_length_shorter_than_declared(tenant: Tenant) -> None:
    file = tenant.declare(CONTENT)
    expect_error(tenant.put(file, CONTENT[:-1]), 422, "upload.size_mismatch")
    rejected_then_recovers(tenant, file)


def test_body_ends_before_its_content_length(tenant: Tenant) -> None:
    """Headers promise the declared length, the body stops short and the client hangs up."""
    file = tenant.declare(CONTENT)
    with RawConnection(file["upload"]["url"]) as conn:
        conn.send_head("PUT", file["upload"]["headers"])
        conn.send(CONTENT[:10])
        conn.half_close()
        reply = conn.reply()
    if reply is not None:  # the server may also just close the connection
        expect_error(reply, 422, "upload.size_mismatch")
    rejected_then_recovers(tenant, file)


def test_content_length_longer_than_declared(tenant: Tenant) -> None:
    file = tenant.declare(CONTENT)
    expect_error(tenant.put(file, CONTENT + b"!"), 422, "upload.size_mismatch")
    rejected_then_recovers(tenant, file)


def test_chunked_body_longer_than_declared(tenant: Tenant) -> None:
    """No Content-Length to check up front: the store must stop reading past the size."""
    file = tenant.declare(CONTENT)
    headers = {
        "Content-Type": file["upload"]["headers"]["Content-Type"],
        "Transfer-Encoding": "chunked",
    }

    def chunks() -> Iterator[bytes]:
        for piece in (CONTENT, b"and then some more"):
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        yield b"0\r\n\r\n"

    reply = raw_request(file["upload"]["url"], "PUT", headers, chunks())
    assert reply is not None, "the server hung up without an answer"
    expect_error(reply, 422, "upload.size_mismatch")
    rejected_then_recovers(tenant, file)


# -- type and checksum --------------------------------------------------------------------


def test_wrong_content_type(tenant: Tenant) -> None:
    file = tenant.declare(CONTENT, mime_type="text/plain")
    put = tenant.put(file, CONTENT, **{"Content-Type": "application/octet-stream"})
    expect_error(put, 422, "upload.type_mismatch")
    rejected_then_recovers(tenant, file)


def test_wrong_bytes_with_declared_checksum(tenant: Tenant) -> None:
    file = tenant.declare(CONTENT)
    forged = CONTENT.upper()  # same length, other bytes
    assert len(forged) == len(CONTENT)
    expect_error(tenant.put(file, forged), 422, "upload.checksum_mismatch")
    rejected_then_recovers(tenant, file)


# -- signed URLs --------------------------------------------------------------------------


def test_expired_upload_url(tenant: Tenant) -> None:
    file = tenant.declare(CONTENT, expires_in=1)
    # Wait just past the signed expiry (whole Unix seconds), no longer.
    time.sleep(max(0.0, file["upload"]["expires_at"] - time.time()) + 0.1)
    expect_error(tenant.put(file, CONTENT), 403, "blob.expired")
    tenant.assert_nothing_stored(file["id"])


def test_tampered_upload_url(tenant: Tenant) -> None:
    file = tenant.declare(CONTENT)
    forged = {**file, "upload": {**file["upload"], "url": tamper(file["upload"]["url"])}}
    expect_error(tenant.put(forged, CONTENT), 403, "blob.bad_signature")
    rejected_then_recovers(tenant, file)


def test_download_url_cannot_be_used_to_upload(tenant: Tenant) -> None:
    file = tenant.declare(CONTENT)
    # The create answer's download link is the broker's own: it only ever redirects.
    forged = {**file, "upload": {**file["upload"], "url": file["download_url"]}}
    expect_error(tenant.put(forged, CONTENT), 405, "method.not_allowed")
    # A signed blob GET URL (a complete file's) cannot be turned into an upload either.
    other = tenant.upload(b"another file\n")
    forged = {**file, "upload": {**file["upload"], "url": other["download_url"]}}
    expect_error(tenant.put(forged, CONTENT), 403, "blob.bad_signature")
    rejected_then_recovers(tenant, file)


def test_complete_before_upload(tenant: Tenant) -> None:
    file = tenant.declare(CONTENT)
    expect_error(tenant.complete(file["id"]), 409, "upload.not_received")
    assert tenant.get(file["id"])["status"] == "pending"
    tenant.assert_recovers(file, CONTENT)


# -- keys that try to escape their namespace ----------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["../x", "/abs", "a/../b", "a//b", "a\u0000b", "a\\b", "k" * 1025],
    ids=["dotdot", "absolute", "inner-dotdot", "empty-segment", "nul", "backslash", "1025-bytes"],
)
def test_traversal_keys_are_refused(tenant: Tenant, key: str) -> None:
    response = tenant.declare_raw(name="x.txt", size=1, mime_type="text/plain", key=key)
    expect_error(response, 422, "key.invalid")
    listing = tenant.http.get("/v1/buckets/default/files")
    assert listing.status_code == 200
    assert listing.json()["data"] == []  # nothing was declared


# -- bucket policy ------------------------------------------------------------------------


@pytest.fixture
def strict_bucket(start_broker: Any, tmp_path: Path) -> BrokerServer:
    """A server whose default bucket takes at most 1 KiB of text or PNG."""
    policy = tmp_path / "buckets.json"
    policy.write_text(
        json.dumps(
            {
                "buckets": {
                    "default": {"max_size": 1024, "allowed_mime_types": ["text/*", "image/png"]}
                }
            }
        )
    )
    server: BrokerServer = start_broker(BROKER_BUCKETS=str(policy))
    return server


def test_bucket_policy_refuses_size_and_type(strict_bucket: BrokerServer) -> None:
    tenant = strict_bucket.tenant()
    too_big = tenant.declare_raw(name="big.txt", size=1025, mime_type="text/plain")
    expect_error(too_big, 413, "upload.size_exceeds_limit")
    wrong_type = tenant.declare_raw(name="a.pdf", size=10, mime_type="application/pdf")
    expect_error(wrong_type, 422, "upload.mime_type_not_allowed")
    assert tenant.http.get("/v1/buckets/default/files").json()["data"] == []
    # The limit itself is allowed, with a type that matches a pattern.
    at_limit = b"x" * 1024
    file = tenant.upload(at_limit, name="ok.txt", mime_type="text/plain")
    assert tenant.download(file["id"]) == at_limit


# -- API keys and tenants -----------------------------------------------------------------


def test_missing_and_wrong_keys(broker: BrokerServer) -> None:
    anonymous = broker.client()
    expect_error(anonymous.get("/v1/buckets/default/files"), 401, "auth.missing_key")
    wrong = broker.client("bk_not_a_real_key_at_all_0123456789")
    expect_error(wrong.get("/v1/buckets/default/files"), 401, "auth.invalid_key")
    for header in ({"x-api-key": "nope"}, {"Authorization": "Bearer nope"}):
        expect_error(anonymous.get("/v1/files/file_x", headers=header), 401, "auth.invalid_key")


def test_revoked_key_is_refused(broker: BrokerServer) -> None:
    """Every worker refuses a revoked key within BROKER_KEY_CACHE_TTL (5 s by default):
    the worker that revoked it at once, another one when its cached verification runs out."""
    created = broker.create_key("revokees")
    client = broker.client(created["key"])
    for _ in range(8):  # requests spread over both workers, so each caches the key
        assert client.get("/v1/buckets/default/files").status_code == 200
    admin = broker.client(broker.admin_key)
    assert admin.delete(f"/v1/keys/{created['id']}").status_code == 200
    revoked_at = time.monotonic()
    while client.get("/v1/buckets/default/files").status_code == 200:
        assert time.monotonic() - revoked_at < 6.0, "a worker still accepts the revoked key"
        time.sleep(0.1)
    for _ in range(8):
        expect_error(client.get("/v1/buckets/default/files"), 401, "auth.invalid_key")
    expect_error(client.post("/v1/files", json={}), 401, "auth.invalid_key")


def test_other_tenants_files_are_invisible(broker: BrokerServer) -> None:
    owner, intruder = broker.tenant(), broker.tenant()
    file = owner.upload(CONTENT, key="secret/plan.txt", mime_type="text/plain")
    by_id, by_key = f"/v1/files/{file['id']}", "/v1/buckets/default/files/secret/plan.txt"
    for path in (by_id, f"{by_id}/content", by_key):
        expect_error(intruder.http.get(path), 404, "file.not_found")
    expect_error(intruder.complete(file["id"]), 404, "file.not_found")
    expect_error(intruder.http.delete(by_id), 404, "file.not_found")
    expect_error(intruder.http.delete(by_key), 404, "file.not_found")
    assert intruder.http.get("/v1/buckets/default/files").json()["data"] == []
    assert owner.download(file["id"]) == CONTENT


# -- malformed requests -------------------------------------------------------------------


def test_unknown_route(tenant: Tenant) -> None:
    expect_error(tenant.http.get("/v1/nowhere"), 404, "route.not_found")
    expect_error(tenant.http.get("/nowhere.html"), 404, "route.not_found")


def test_wrong_method(tenant: Tenant) -> None:
    response = tenant.http.put("/v1/files", json={})
    expect_error(response, 405, "method.not_allowed")
    assert "POST" in response.headers["allow"]


def test_malformed_json(tenant: Tenant) -> None:
    response = tenant.http.post(
        "/v1/files", content=b'{"name": "x", "size": ', headers={"Content-Type": "application/json"}
    )
    expect_error(response, 400, "request.malformed")


HUGE_JSON = json.dumps(
    {"name": "x", "size": 1, "mime_type": "text/plain", "metadata": {"a": "b" * (1 << 20)}}
).encode()


def test_json_body_over_one_mebibyte(broker: BrokerServer, tenant: Tenant) -> None:
    response = tenant.http.post(
        "/v1/files", content=HUGE_JSON, headers={"Content-Type": "application/json"}
    )
    expect_error(response, 413, "request.too_large")
    listing = broker.client(tenant.key).get("/v1/buckets/default/files")
    assert listing.json()["data"] == []


def test_too_large_answer_keeps_its_keep_alive_promise(
    broker: BrokerServer, tenant: Tenant
) -> None:
    """A 413 sent before the body was read must not leave a keep-alive client stranded.

    HTTP/1.1 clients (httpx, requests, browsers) reuse a connection unless the answer says
    ``Connection: close``. If the server answers keep-alive but then drops the connection
    because the unread body is too big to drain, the client's next request fails with
    "server disconnected". Either the answer says close, or the connection must still work.
    """
    with RawConnection(broker.url) as conn:
        conn.send_head(
            "POST",
            {
                "Authorization": f"Bearer {tenant.key}",
                "Content-Type": "application/json",
                "Content-Length": str(len(HUGE_JSON)),
            },
            path="/v1/files",
        )
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.send(HUGE_JSON)
        first = conn.reply()
        assert first is not None, "no answer to the oversized body"
        expect_error(first, 413, "request.too_large")
        if (first.headers.get("Connection") or "").lower() == "close":
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.send_head("GET", {}, path="/v1/health")
        second = conn.reply()
    assert second is not None, (
        "the 413 answer promised keep-alive (no 'Connection: close') but the server "
        "dropped the connection: the client's next request got no answer"
    )
    assert second.status_code == 200
