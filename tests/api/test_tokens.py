"""Browser upload tokens: a token uploads within its grant, reads what it uploaded, and does
nothing else; it dies at its expiry and with its key.

The round trip runs on every storage backend; the grant's checks happen before storage is
involved, so those tests run on the embedded store only."""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from support import Harness, StorageBackend, admin_headers, assert_envelope, on_backends

LOCAL = on_backends("local")
"""The grant is checked before storage is asked anything: one backend shows it."""
ORIGIN = "https://app.example"


@pytest.fixture
def harness(
    make_harness: Callable[..., Harness], storage_backend: StorageBackend, tmp_path: Path
) -> Harness:
    """An app with the default bucket and an images-only one, ``avatars``."""
    path = tmp_path / "buckets.json"
    policy = {"default": {}, "avatars": {"allowed_mime_types": ["image/*"], "max_size": 4096}}
    path.write_text(json.dumps({"buckets": policy}))
    return make_harness(storage_backend, BROKER_BUCKETS=str(path))


@pytest.fixture
def acme(harness: Harness) -> dict[str, str]:
    return harness.key("acme")


def mint(harness: Harness, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    """POST /v1/tokens (bucket ``default`` unless given); the 201 body."""
    body.setdefault("bucket", "default")
    response = harness.client.post("/v1/tokens", json=body, headers=headers)
    assert response.status_code == 201, response.json
    return dict(response.json)


def bearer(token: dict[str, Any], origin: str | None = None) -> dict[str, str]:
    """Headers a browser holding ``token`` sends (with its page's Origin)."""
    headers = {"Authorization": f"Bearer {token['token']}"}
    if origin is not None:
        headers["Origin"] = origin
    return headers


def test_a_token_uploads_within_its_grant_and_reads_its_file(
    harness: Harness, acme: dict[str, str]
) -> None:
    minted = mint(
        harness, acme, bucket="avatars", key_prefix="users/42/", max_size=1024,
        mime_types=["image/*"], max_files=2, metadata={"user": "42"}, origin=ORIGIN,
    )  # fmt: skip
    now = int(harness.clock())
    assert minted["token"].startswith("bt_")
    assert minted["id"].startswith("tok_")
    assert minted["expires_at"] == now + 600  # the default ttl
    assert {k: v for k, v in minted.items() if k not in ("token", "id", "expires_at")} == {
        "object": "browser_token", "bucket": "avatars", "key_prefix": "users/42/",
        "max_size": 1024, "mime_types": ["image/*"], "max_files": 2,
        "metadata": {"user": "42"}, "origin": ORIGIN,
    }  # fmt: skip
    browser = bearer(minted, ORIGIN)
    body = b"\x89PNG avatar"
    created = harness.declare(
        browser, bucket="avatars", name="me.png", mime_type="image/png", size=len(body),
        metadata={"user": "666", "app": "web"},
    )  # fmt: skip
    assert created["key"].startswith("users/42/")
    assert created["key"].endswith("/me.png")
    assert created["metadata"] == {"user": "42", "app": "web"}  # the token's wins
    assert harness.put(created["upload"], body).status_code == 200
    done = harness.client.post(f"/v1/files/{created['id']}/complete", headers=browser)
    assert done.status_code == 200, done.json
    got = harness.client.get(f"/v1/files/{created['id']}", headers=browser)
    assert (got.status_code, got.json["status"]) == (200, "complete")
    content = harness.client.get(f"/v1/files/{created['id']}/content", headers=browser)
    assert content.status_code == 302
    assert harness.download(content.headers["Location"]).data == body
    # The key that minted it sees the file like any other, stamped metadata included.
    seen = harness.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert seen["metadata"] == {"user": "42", "app": "web"}


@LOCAL
def test_a_token_cannot_exceed_any_limit(harness: Harness, acme: dict[str, str]) -> None:
    browser = bearer(
        mint(
            harness, acme, bucket="avatars", key_prefix="users/42/", max_size=100,
            mime_types=["image/png"], max_files=2,
        )
    )  # fmt: skip
    image = {"bucket": "avatars", "name": "a.png", "mime_type": "image/png", "size": 10}
    refused = [
        ({**image, "bucket": "default"}, 403, "auth.forbidden"),
        ({**image, "key": "users/43/a.png"}, 403, "auth.forbidden"),
        ({**image, "key": "users/42"}, 403, "auth.forbidden"),
        ({**image, "key": "users/42/../43/a.png"}, 422, "key.invalid"),
        ({**image, "size": 101}, 413, "upload.size_exceeds_limit"),
        ({**image, "mime_type": "image/gif"}, 422, "upload.mime_type_not_allowed"),
    ]
    for body, status, code in refused:
        response = harness.client.post("/v1/files", json=body, headers=browser)
        assert_envelope(response, status, code)
    first = harness.declare(browser, **{**image, "key": "users/42/chosen.png"})
    assert first["key"] == "users/42/chosen.png"
    second = harness.declare(browser, **image)
    # Giving a file up does not give its place back: max_files counts what was declared.
    assert (
        harness.client.post(f"/v1/files/{second['id']}/abort", headers=browser).status_code == 200
    )
    third = harness.client.post("/v1/files", json=image, headers=browser)
    assert_envelope(third, 403, "token.max_files_reached")
    # The key is not bound by its token's limits.
    assert harness.client.post("/v1/files", json=image, headers=acme).status_code == 201


@LOCAL
def test_a_form_upload_with_a_token_keeps_to_its_grant(
    harness: Harness, acme: dict[str, str]
) -> None:
    browser = bearer(mint(harness, acme, key_prefix="forms/", max_size=8, metadata={"user": "7"}))
    ok = harness.client.post(
        "/v1/files", headers=browser, content_type="multipart/form-data",
        data={"mime_type": "text/plain", "file": (io.BytesIO(b"12345678"), "a.txt")},
    )  # fmt: skip
    assert ok.status_code == 201, ok.json
    assert ok.json["key"].startswith("forms/")
    assert ok.json["metadata"] == {"user": "7"}
    assert harness.download(ok.json["download_url"]).data == b"12345678"
    over = harness.client.post(
        "/v1/files", headers=browser, content_type="multipart/form-data",
        data={"mime_type": "text/plain", "file": (io.BytesIO(b"123456789"), "b.txt")},
    )  # fmt: skip
    assert_envelope(over, 413, "upload.size_exceeds_limit")


@LOCAL
def test_a_token_re_signs_the_parts_of_its_own_upload(
    harness: Harness, acme: dict[str, str]
) -> None:
    browser = bearer(mint(harness, acme))
    created = harness.declare(browser, size=5, multipart=True)
    again = harness.client.post(f"/v1/files/{created['id']}/parts", headers=browser)
    assert again.status_code == 200, again.json
    assert [p["part_number"] for p in again.json["upload"]["parts"]] == [1]


def _other_files(harness: Harness, acme: dict[str, str]) -> list[str]:
    """A file the key declared and one another token of the same key declared."""
    by_key = harness.declare(acme)["id"]
    by_other_token = harness.declare(bearer(mint(harness, acme)))["id"]
    return [by_key, by_other_token]


@LOCAL
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/files/{id}"),
        ("GET", "/v1/files/{id}/content"),
        ("POST", "/v1/files/{id}/complete"),
        ("POST", "/v1/files/{id}/parts"),
        ("POST", "/v1/files/{id}/abort"),
    ],
)
def test_a_token_sees_no_file_it_did_not_declare(
    harness: Harness, acme: dict[str, str], method: str, path: str
) -> None:
    """Like another tenant's file: 404, so a token cannot tell which ids exist."""
    browser = bearer(mint(harness, acme))
    for file_id in _other_files(harness, acme):
        response = harness.client.open(path.format(id=file_id), method=method, headers=browser)
        assert_envelope(response, 404, "file.not_found")
        assert harness.record(file_id).status.value == "pending"  # left alone


@LOCAL
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/buckets", None),
        ("GET", "/v1/buckets/default/files", None),
        ("GET", "/v1/buckets/default/files/{key}", None),
        ("DELETE", "/v1/buckets/default/files/{key}", None),
        ("DELETE", "/v1/files/{id}", None),
        ("GET", "/v1/keys", None),
        ("POST", "/v1/keys", {"tenant": "acme"}),
        ("DELETE", "/v1/keys/{key_id}", None),
        ("POST", "/v1/tokens", {"bucket": "default"}),
    ],
)
def test_a_token_can_do_nothing_else(
    harness: Harness, acme: dict[str, str], method: str, path: str, body: Any
) -> None:
    """No listing, no deleting (not even its own files), no keys, no tokens: 403."""
    browser = bearer(mint(harness, acme))
    own = harness.declare(browser)
    key_id = harness.client.get("/v1/keys", headers=admin_headers()).json["data"][0]["id"]
    url = path.format(id=own["id"], key=own["key"], key_id=key_id)
    response = harness.client.open(url, method=method, json=body, headers=browser)
    assert_envelope(response, 403, "auth.forbidden")
    assert harness.record(own["id"]).status.value == "pending"
    assert harness.client.get("/v1/buckets", headers=acme).status_code == 200  # key unharmed


@LOCAL
def test_a_token_bound_to_an_origin_is_refused_from_any_other(
    harness: Harness, acme: dict[str, str]
) -> None:
    minted = mint(harness, acme, origin="https://App.Example")
    assert minted["origin"] == ORIGIN
    for origin in (None, "https://evil.example", "null", "https://app.example:444"):
        response = harness.client.post(
            "/v1/files", json={"name": "a", "size": 1, "mime_type": "text/plain"},
            headers=bearer(minted, origin),
        )  # fmt: skip
        assert_envelope(response, 403, "auth.forbidden")
    harness.declare(bearer(minted, ORIGIN))
    harness.declare({"x-api-key": minted["token"], "Origin": ORIGIN})  # either header


@LOCAL
def test_a_token_expires(harness: Harness, acme: dict[str, str]) -> None:
    minted = mint(harness, acme, ttl=60)
    assert minted["expires_at"] == int(harness.clock()) + 60
    browser = bearer(minted)
    created = harness.declare(browser)
    harness.clock.advance(59)
    assert harness.client.get(f"/v1/files/{created['id']}", headers=browser).status_code == 200
    harness.clock.advance(1)  # cached as verified a second ago: refused all the same
    response = harness.client.get(f"/v1/files/{created['id']}", headers=browser)
    assert_envelope(response, 401, "auth.expired_key")


@LOCAL
def test_a_token_dies_with_its_key(harness: Harness) -> None:
    created = harness.client.post("/v1/keys", json={"tenant": "acme"}, headers=admin_headers())
    key = {"Authorization": f"Bearer {created.json['key']}"}
    browser = bearer(mint(harness, key))
    file_id = harness.declare(browser)["id"]
    assert harness.client.get(f"/v1/files/{file_id}", headers=browser).status_code == 200
    revoked = harness.client.delete(f"/v1/keys/{created.json['id']}", headers=admin_headers())
    assert revoked.status_code == 200
    response = harness.client.get(f"/v1/files/{file_id}", headers=browser)
    assert_envelope(response, 401, "auth.invalid_key")


@LOCAL
def test_a_token_never_outlives_its_key(harness: Harness) -> None:
    expires_at = int(harness.clock()) + 100
    created = harness.client.post(
        "/v1/keys", json={"tenant": "acme", "expires_at": expires_at}, headers=admin_headers()
    )
    key = {"Authorization": f"Bearer {created.json['key']}"}
    minted = mint(harness, key, ttl=3600)
    assert minted["expires_at"] == expires_at
    harness.clock.advance(100)
    response = harness.client.post("/v1/files", json={}, headers=bearer(minted))
    assert_envelope(response, 401, "auth.expired_key")


@LOCAL
def test_an_altered_token_is_401(harness: Harness, acme: dict[str, str]) -> None:
    token = mint(harness, acme)["token"]
    for forged in (token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), "bt_nope", token[3:]):
        response = harness.client.get("/v1/buckets", headers={"Authorization": f"Bearer {forged}"})
        assert_envelope(response, 401, "auth.invalid_key")


@LOCAL
def test_minting_checks_the_key_and_the_bucket(harness: Harness, acme: dict[str, str]) -> None:
    reader = harness.key("acme", scopes=["files:read"])
    refused = [
        (reader, {"bucket": "default"}, 403, "auth.forbidden"),
        (acme, {"bucket": "nope"}, 404, "bucket.not_found"),
        (acme, {"bucket": "avatars", "max_size": 4097}, 413, "upload.size_exceeds_limit"),
        (acme, {"bucket": "avatars", "mime_types": ["text/*"]}, 422, "validation.failed"),
        (acme, {"bucket": "avatars", "mime_types": ["*/*"]}, 422, "validation.failed"),
        (acme, {"bucket": "default", "ttl": 3601}, 422, "validation.failed"),
        (acme, {"bucket": "default", "key_prefix": "a/../"}, 422, "validation.failed"),
        # No room for a generated key under it within S3's 1,024 bytes.
        (acme, {"bucket": "default", "key_prefix": "\U0001f600" * 250}, 422, "validation.failed"),
        (acme, {"bucket": "default", "origin": "https://a.example/path"}, 422, "validation.failed"),
        # Too much to send in a header once signed (random text: zlib cannot shrink it).
        (acme, {"bucket": "default", "metadata": {
            f"k{i}": secrets.token_urlsafe(384) for i in range(16)}}, 422, "validation.failed"),
    ]  # fmt: skip
    for headers, body, status, code in refused:
        response = harness.client.post("/v1/tokens", json=body, headers=headers)
        assert_envelope(response, status, code)
    assert mint(harness, acme, bucket="avatars", mime_types=["image/png"])["mime_types"] == [
        "image/png"
    ]
    assert mint(harness, acme, ttl=3600)["expires_at"] == int(harness.clock()) + 3600
