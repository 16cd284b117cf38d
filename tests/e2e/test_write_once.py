"""Write-once objects over real HTTP (gunicorn), on the embedded store and on LocalStack:
a signed URL writes its file's object once, two racing PUTs have one winner, and a dead
file's URLs cannot reach a file declared later at its key."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from .conftest import BrokerServer, Tenant, expect_error

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["local", "s3"])
def tenant(request: pytest.FixtureRequest) -> Tenant:
    """A fresh tenant on the shared server of each storage mode."""
    server: BrokerServer = request.getfixturevalue(
        {"local": "broker", "s3": "s3_broker"}[request.param]
    )
    return server.tenant()


def _refused_by_storage(response: httpx.Response) -> None:
    """412: the embedded store's envelope, or S3's own ``PreconditionFailed``."""
    assert response.status_code == 412, response.text[:300]
    if response.headers.get("Content-Type", "").startswith("application/json"):
        assert response.json()["error"]["code"] == "upload.already_stored"
    else:
        assert "PreconditionFailed" in response.text


def test_a_re_put_after_complete_is_refused_and_the_download_is_unchanged(tenant: Tenant) -> None:
    file = tenant.declare(b"AAAAAAAAAA", sha256=None)  # no checksum: only write-once guards it
    assert "If-None-Match" in file["upload"]["headers"] or tenant.s3 is None
    assert tenant.put(file, b"AAAAAAAAAA").status_code == 200
    done = tenant.complete(file["id"])
    assert done.status_code == 200, done.text
    _refused_by_storage(tenant.put(file, b"BBBBBBBBBB"))
    assert tenant.download(file["id"]) == b"AAAAAAAAAA"
    assert tenant.blobs.get(done.json()["download_url"], follow_redirects=True).content == (
        b"AAAAAAAAAA"
    )


def test_a_put_without_the_signed_if_none_match_is_refused_by_s3(s3_broker: BrokerServer) -> None:
    tenant = s3_broker.tenant()  # the embedded store signs no header: its token binds the write
    file = tenant.declare(b"abc", sha256=None)
    assert file["upload"]["headers"]["If-None-Match"] == "*"
    upload = file["upload"]
    headers = {k: v for k, v in upload["headers"].items() if k not in ("If-None-Match",)}
    headers.pop("Content-Length", None)
    response = tenant.blobs.request("PUT", upload["url"], content=b"abc", headers=headers)
    assert response.status_code == 403, response.text[:300]
    tenant.assert_nothing_stored(file["id"])


def test_two_racing_puts_have_exactly_one_winner(tenant: Tenant) -> None:
    size = 4 * 1024 * 1024
    bodies = [b"A" * size, b"B" * size]
    file = tenant.declare(bodies[0], sha256=None)
    start = threading.Barrier(len(bodies))
    statuses: dict[bytes, httpx.Response] = {}

    def send(body: bytes) -> None:
        start.wait()
        statuses[body] = tenant.put(file, body)

    threads = [threading.Thread(target=send, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(response.status_code for response in statuses.values())
    assert codes == [200, 412], {b[:1]: r.text[:200] for b, r in statuses.items()}
    (winner,) = [body for body, response in statuses.items() if response.status_code == 200]
    done = tenant.complete(file["id"])
    assert done.status_code == 200, done.text
    assert tenant.download(file["id"]) == winner


def test_a_deleted_files_urls_cannot_reach_a_new_file_at_its_key(tenant: Tenant) -> None:
    old: dict[str, Any] = tenant.upload(b"old!!", key="reused.bin", sha256=None)
    stale_download = old["download_url"]
    pending_old = tenant.declare(b"later", key="other.bin", sha256=None)
    assert tenant.http.delete(f"/v1/files/{old['id']}").status_code == 200
    assert tenant.http.delete(f"/v1/files/{pending_old['id']}").status_code == 200

    new = tenant.declare(b"new!!", key="reused.bin", sha256=None)
    assert tenant.put(new, b"new!!").status_code == 200  # pending: nobody has checked it
    stale = tenant.blobs.get(stale_download, follow_redirects=True)
    assert stale.status_code in (403, 404), stale.text[:300]
    assert b"new!!" not in stale.content

    later = tenant.declare(b"good!", key="other.bin", sha256=None)
    tenant.put(pending_old, b"evil!")  # the dead file's URL: whatever storage says, not later's
    expect_error(tenant.complete(later["id"]), 409, "upload.not_received")
    tenant.assert_recovers(later, b"good!")
