"""A browser upload token end to end over real gunicorn, on the embedded store and on S3
(LocalStack, enforcing signatures): the server mints it with its key; a page holding only
the token declares, PUTs, completes and downloads its file, and can do nothing else."""

from __future__ import annotations

import pytest

from .conftest import BrokerServer, Tenant, expect_error

pytestmark = pytest.mark.e2e

ORIGIN = "https://app.example"
AVATAR = b"\x89PNG\r\n\x1a\n not really a png, but bytes all the same"


@pytest.fixture(params=["local", "s3"])
def server(request: pytest.FixtureRequest) -> BrokerServer:
    """The shared server of each storage mode (LocalStack starts only when s3 is selected)."""
    found: BrokerServer = request.getfixturevalue(
        {"local": "broker", "s3": "s3_broker"}[request.param]
    )
    return found


def test_a_page_holding_only_a_token_uploads_and_reads_its_file(server: BrokerServer) -> None:
    backend: Tenant = server.tenant()
    minted = backend.http.post(
        "/v1/tokens",
        json={"bucket": "default", "key_prefix": "users/42/", "max_size": 1024,
              "mime_types": ["image/*"], "max_files": 1, "metadata": {"user": "42"},
              "origin": ORIGIN, "ttl": 300},
    )  # fmt: skip
    assert minted.status_code == 201, minted.text
    page = server.client()
    page.headers.update({"Authorization": f"Bearer {minted.json()['token']}", "Origin": ORIGIN})

    declared = page.post(
        "/v1/files", json={"name": "me.png", "size": len(AVATAR), "mime_type": "image/png"}
    )
    assert declared.status_code == 201, declared.text
    file = declared.json()
    assert file["key"].startswith("users/42/")
    assert file["metadata"] == {"user": "42"}
    backend.put(file, AVATAR).raise_for_status()
    done = page.post(f"/v1/files/{file['id']}/complete", json={})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "complete"
    redirect = page.get(f"/v1/files/{file['id']}/content")
    assert redirect.status_code == 302
    assert backend.blobs.get(redirect.headers["Location"]).content == AVATAR

    # Nothing else: its one file is used up, and every other route is closed to it.
    expect_error(
        page.post("/v1/files", json={"name": "b.png", "size": 1, "mime_type": "image/png"}),
        403, "token.max_files_reached",
    )  # fmt: skip
    expect_error(page.get("/v1/buckets/default/files"), 403, "auth.forbidden")
    expect_error(page.delete(f"/v1/files/{file['id']}"), 403, "auth.forbidden")
    expect_error(page.post("/v1/tokens", json={"bucket": "default"}), 403, "auth.forbidden")
    other = backend.upload(b"the server's own", name="own.txt", mime_type="text/plain")
    expect_error(page.get(f"/v1/files/{other['id']}"), 404, "file.not_found")
    # From another page, the same token is refused.
    stolen = server.client(minted.json()["token"])
    stolen.headers["Origin"] = "https://evil.example"
    expect_error(stolen.get(f"/v1/files/{file['id']}"), 403, "auth.forbidden")
    assert backend.download(file["id"]) == AVATAR
