"""gunicorn's own refusals (requests it cannot frame) answer in the contract's envelope, and
a chunked JSON body over the cap is 413 like one with a Content-Length."""

from __future__ import annotations

import json

from .conftest import BrokerServer, RawConnection, Tenant, expect_error


def _raw(broker: BrokerServer, head: bytes) -> object:
    with RawConnection(f"{broker.url}/v1/health") as conn:
        conn.send(head)
        return conn.reply()


def test_a_request_line_over_the_limit_is_414_in_the_envelope(broker: BrokerServer) -> None:
    reply = _raw(broker, b"GET /v1/health?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    expect_error(reply, 414, "request.uri_too_long")  # type: ignore[arg-type]


def test_too_large_headers_are_431_in_the_envelope(broker: BrokerServer) -> None:
    reply = _raw(
        broker, b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    )
    expect_error(reply, 431, "request.headers_too_large")  # type: ignore[arg-type]


def test_a_malformed_request_line_is_400_in_the_envelope(broker: BrokerServer) -> None:
    reply = _raw(broker, b"GET\x01 / HTTP/1.1\r\nHost: x\r\n\r\n")
    expect_error(reply, 400, "request.malformed")  # type: ignore[arg-type]


def test_a_chunked_json_body_over_the_cap_is_413(broker: BrokerServer, tenant: Tenant) -> None:
    body = json.dumps({"name": "a", "size": 1, "mime_type": "text/plain"}).encode()
    body = body[:-1] + b" " * (1024 * 1024 + 10) + b"}"
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    reply = tenant.http.post(
        "/v1/files",
        content=chunks,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )
    expect_error(reply, 413, "request.too_large")
