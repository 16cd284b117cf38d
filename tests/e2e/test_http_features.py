"""Download and API features over real HTTP: ranges, caching, disposition, redirects,
metrics, the OpenAPI document, idempotent creates and cursor pagination.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from .conftest import METRICS_TOKEN, BrokerServer, RawConnection, Tenant, expect_error

pytestmark = pytest.mark.e2e

CONTENT = b"0123456789abcdefghij"


@pytest.fixture(scope="module")
def owner(broker: BrokerServer) -> Tenant:
    """One tenant for the module's read-only checks."""
    return broker.tenant()


@pytest.fixture(scope="module")
def stored(owner: Tenant) -> dict[str, Any]:
    """A complete plain-text file."""
    return owner.upload(CONTENT, name="digits.txt", mime_type="text/plain")


def signed_get(tenant: Tenant, file: dict[str, Any], **headers: str) -> httpx.Response:
    """GET the file's fresh signed download URL (no API key: the URL is the authority)."""
    return tenant.blobs.get(tenant.get(file["id"])["download_url"], headers=headers)


# -- downloads ----------------------------------------------------------------------------


def test_range_request(owner: Tenant, stored: dict[str, Any]) -> None:
    response = signed_get(owner, stored, Range="bytes=2-5")
    assert response.status_code == 206
    assert response.content == CONTENT[2:6]
    assert response.headers["content-range"] == f"bytes 2-5/{len(CONTENT)}"
    assert response.headers["content-length"] == "4"


def test_if_none_match_with_the_etag(owner: Tenant, stored: dict[str, Any]) -> None:
    first = signed_get(owner, stored)
    assert first.status_code == 200
    assert first.content == CONTENT
    etag = first.headers["etag"]
    again = signed_get(owner, stored, **{"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    changed = signed_get(owner, stored, **{"If-None-Match": '"something-else"'})
    assert changed.status_code == 200
    assert changed.content == CONTENT


def test_head_has_headers_and_no_body(owner: Tenant, stored: dict[str, Any]) -> None:
    url = owner.get(stored["id"])["download_url"]
    response = owner.blobs.head(url)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(CONTENT))
    assert response.headers["content-type"] == "text/plain"
    assert response.content == b""


def test_non_ascii_name_uses_rfc_6266_filename_star(owner: Tenant) -> None:
    name = "résumé 2026 ✓.txt"
    file = owner.upload(b"bonjour\n", name=name, mime_type="text/plain")
    response = signed_get(owner, file)
    assert response.status_code == 200
    disposition = response.headers["content-disposition"]
    assert f"filename*=UTF-8''{quote(name, safe='')}" in disposition, disposition
    disposition.encode("ascii")  # the header itself stays ASCII


def test_active_content_is_an_attachment_with_nosniff(owner: Tenant) -> None:
    page = b"<html><script>alert(document.cookie)</script></html>"
    file = owner.upload(page, name="page.html", mime_type="text/html")
    response = signed_get(owner, file)
    assert response.status_code == 200
    assert response.content == page
    assert response.headers["content-disposition"].startswith("attachment")
    assert "page.html" in response.headers["content-disposition"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_content_redirects_to_a_url_that_serves_the_bytes(
    broker: BrokerServer, owner: Tenant, stored: dict[str, Any]
) -> None:
    response = owner.http.get(f"/v1/files/{stored['id']}/content")
    assert response.status_code == 302
    assert response.headers["cache-control"] == "no-store"
    location = response.headers["location"]
    assert location.startswith(f"{broker.url}/v1/blobs/")
    download = owner.blobs.get(location)
    assert download.status_code == 200
    assert download.content == CONTENT


def test_content_of_a_pending_file_is_not_received(owner: Tenant) -> None:
    file = owner.declare(CONTENT)
    expect_error(owner.http.get(f"/v1/files/{file['id']}/content"), 409, "upload.not_received")


# -- operational endpoints ----------------------------------------------------------------


def test_metrics(broker: BrokerServer, owner: Tenant, stored: dict[str, Any]) -> None:
    owner.get(stored["id"])
    refused = broker.client().get("/metrics")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer realm="broker"'
    response = broker.client().get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "broker_http_requests_total{" in response.text


def test_openapi_document(broker: BrokerServer) -> None:
    response = broker.client().get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert "/v1/files" in document["paths"]
    assert "post" in document["paths"]["/v1/files"]


# -- idempotent creates -------------------------------------------------------------------


def test_idempotency_key_replays_the_first_answer(tenant: Tenant) -> None:
    body = {"name": "once.txt", "size": 4, "mime_type": "text/plain"}
    headers = {"Idempotency-Key": "create-once-1"}
    first = tenant.http.post("/v1/files", json=body, headers=headers)
    again = tenant.http.post("/v1/files", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers.get("idempotent-replayed") == "true"
    listing = tenant.http.get("/v1/buckets/default/files").json()
    assert [f["id"] for f in listing["data"]] == [first.json()["id"]]

    other = tenant.http.post("/v1/files", json={**body, "size": 5}, headers=headers)
    expect_error(other, 422, "idempotency.mismatch")


# -- listing ------------------------------------------------------------------------------


def test_cursor_pagination_newest_first(tenant: Tenant) -> None:
    created = [tenant.declare(f"file {i}".encode(), name=f"f{i}.txt")["id"] for i in range(5)]
    seen: list[str] = []
    pages = 0
    params: dict[str, Any] = {"limit": 2}
    while True:
        response = tenant.http.get("/v1/buckets/default/files", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        pages += 1
        assert len(page["data"]) <= 2
        seen += [f["id"] for f in page["data"]]
        if not page["has_more"]:
            break
        params["after"] = page["next_cursor"]
    assert pages == 3
    assert seen == created[::-1]  # each exactly once, newest first


# -- connections --------------------------------------------------------------------------


def test_a_connection_serves_the_next_request_after_a_put(tenant: Tenant) -> None:
    """The blob PUT reads its body in the pieces the socket gives (not through gunicorn's
    re-slicing reader) and must still leave the keep-alive connection exactly at the next
    request: two PUTs and a GET on one connection, each answered, the bytes intact."""
    first = bytes(range(256)) * 12_289  # ~3 MiB: many socket reads
    second = b"second body"
    files = [tenant.declare(first), tenant.declare(second)]
    with RawConnection(files[0]["upload"]["url"]) as conn:
        for file, content in zip(files, (first, second), strict=True):
            upload = file["upload"]
            path = httpx.URL(upload["url"]).raw_path.decode("ascii")
            conn.send_head("PUT", upload["headers"], path=path)
            conn.send(content)
            reply = conn.reply()
            assert reply is not None
            assert reply.status_code == 200, reply.text
            assert reply.json()["sha256"] == hashlib.sha256(content).hexdigest()
        conn.send_head("GET", {}, path="/v1/health")
        health = conn.reply()
        assert health is not None
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
    for file, content in zip(files, (first, second), strict=True):
        assert tenant.complete(file["id"]).status_code == 200
        assert tenant.download(file["id"]) == content
