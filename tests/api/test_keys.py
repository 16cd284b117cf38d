"""Keys and tenancy: no anonymous access, hashed keys, scopes, and tenants that never meet."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from support import (
    ADMIN_KEY,
    Client,
    Harness,
    StorageBackend,
    admin_headers,
    error_code,
    on_backends,
)

BODY = b"tenant data"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/files"),
        ("GET", "/v1/files/file_01JD7000000000000000000000"),
        ("GET", "/v1/buckets"),
        ("GET", "/v1/buckets/default/files"),
        ("GET", "/v1/keys"),
        ("POST", "/v1/keys"),
    ],
)
def test_no_key_is_401(client: Client, method: str, path: str) -> None:
    response = client.open(path, method=method, json={})
    assert (response.status_code, error_code(response)) == (401, "auth.missing_key")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer nope"},
        {"Authorization": "Bearer bk_01JD7000000000000000000000_" + "a" * 43},
        {"x-api-key": ADMIN_KEY + "x"},
        {"Authorization": "Basic " + ADMIN_KEY},
    ],
)
def test_unknown_key_is_401(client: Client, headers: dict[str, str]) -> None:
    response = client.get("/v1/buckets", headers=headers)
    assert response.status_code == 401
    assert error_code(response) in ("auth.invalid_key", "auth.missing_key")


def test_key_works_in_either_header(harness: Harness) -> None:
    bearer = harness.key("acme")
    secret = bearer["Authorization"].removeprefix("Bearer ")
    assert harness.client.get("/v1/buckets", headers={"x-api-key": secret}).status_code == 200
    assert harness.client.get("/v1/buckets", headers=bearer).status_code == 200


def test_keys_are_stored_only_as_hashes(harness: Harness) -> None:
    created = harness.client.post("/v1/keys", json={"tenant": "acme"}, headers=admin_headers()).json
    with sqlite3.connect(harness.data_dir / "broker.sqlite3") as db:
        rows = db.execute("SELECT * FROM api_keys").fetchall()
    dump = repr(rows)
    assert created["key"] not in dump
    secret = created["key"].split("_", 2)[2]  # bk_<id>_<secret>; the secret may hold "_"
    assert len(secret) == 43
    assert secret not in dump
    assert hashlib.sha256(created["key"].encode()).hexdigest() in dump


def test_listing_keys_never_shows_secrets(harness: Harness) -> None:
    created = harness.client.post(
        "/v1/keys", json={"tenant": "acme", "name": "ci"}, headers=admin_headers()
    ).json
    listed = harness.client.get("/v1/keys", headers=admin_headers()).json
    assert [k["id"] for k in listed["data"]] == [created["id"]]
    assert "key" not in listed["data"][0]
    assert created["key"] not in repr(listed)
    only_other = harness.client.get("/v1/keys?tenant=other", headers=admin_headers()).json
    assert only_other["data"] == []


def test_revoked_key_stops_working_at_once(harness: Harness) -> None:
    created = harness.client.post("/v1/keys", json={"tenant": "acme"}, headers=admin_headers()).json
    headers = {"Authorization": f"Bearer {created['key']}"}
    assert harness.client.get("/v1/buckets", headers=headers).status_code == 200
    revoked = harness.client.delete(f"/v1/keys/{created['id']}", headers=admin_headers())
    assert revoked.status_code == 200
    assert revoked.json["revoked_at"] == int(harness.clock())
    response = harness.client.get("/v1/buckets", headers=headers)
    assert (response.status_code, error_code(response)) == (401, "auth.invalid_key")
    unknown = harness.client.delete("/v1/keys/key_nope", headers=admin_headers())
    assert (unknown.status_code, error_code(unknown)) == (404, "key.not_found")


def test_key_management_needs_admin_scope(harness: Harness) -> None:
    tenant = harness.key("acme")
    for method, path in (("POST", "/v1/keys"), ("GET", "/v1/keys"), ("DELETE", "/v1/keys/x")):
        response = harness.client.open(path, method=method, json={"tenant": "acme"}, headers=tenant)
        assert (response.status_code, error_code(response)) == (403, "auth.forbidden")


def test_read_only_key_cannot_write(harness: Harness) -> None:
    writer = harness.key("acme")
    reader = harness.key("acme", scopes=["files:read"])
    done = harness.upload(writer, BODY)
    assert harness.client.get(f"/v1/files/{done['id']}", headers=reader).status_code == 200
    for method, path in (
        ("POST", "/v1/files"),
        ("POST", f"/v1/files/{done['id']}/complete"),
        ("DELETE", f"/v1/files/{done['id']}"),
    ):
        response = harness.client.open(
            path,
            method=method,
            headers=reader,
            json={"name": "a", "size": 1, "mime_type": "text/plain"},
        )
        assert (response.status_code, error_code(response)) == (403, "auth.forbidden")
    assert harness.download(done["download_url"]).data == BODY


def test_admin_key_created_via_api_can_mint_keys(harness: Harness) -> None:
    ops = harness.key("ops", scopes=["admin"])
    response = harness.client.post("/v1/keys", json={"tenant": "acme"}, headers=ops)
    assert response.status_code == 201


def test_invalid_key_requests_are_422(harness: Harness) -> None:
    for body in (
        {},
        {"tenant": "Bad Tenant"},
        {"tenant": "a", "scopes": ["root"]},
        {"tenant": "a", "scopes": []},
    ):
        response = harness.client.post("/v1/keys", json=body, headers=admin_headers())
        assert (response.status_code, error_code(response)) == (422, "validation.failed")


def test_other_tenants_files_are_404_everywhere(harness: Harness) -> None:
    acme, globex = harness.key("acme"), harness.key("globex")
    done = harness.upload(acme, BODY, key="shared/name.txt")
    file_id = done["id"]
    for method, path in (
        ("GET", f"/v1/files/{file_id}"),
        ("GET", f"/v1/files/{file_id}/content"),
        ("POST", f"/v1/files/{file_id}/complete"),
        ("POST", f"/v1/files/{file_id}/abort"),
        ("DELETE", f"/v1/files/{file_id}"),
        ("GET", "/v1/buckets/default/files/shared/name.txt"),
        ("DELETE", "/v1/buckets/default/files/shared/name.txt"),
    ):
        response = harness.client.open(path, method=method, headers=globex)
        assert (response.status_code, error_code(response)) == (404, "file.not_found"), path
    listing = harness.client.get("/v1/buckets/default/files", headers=globex).json
    assert listing["data"] == []
    counts = {
        b["name"]: b["file_count"]
        for b in harness.client.get("/v1/buckets", headers=globex).json["data"]
    }
    assert counts["default"] == 0
    # The owner still has everything, bytes included.
    assert harness.client.get(f"/v1/files/{file_id}", headers=acme).status_code == 200
    assert harness.download(done["download_url"]).data == BODY


def test_tenants_may_use_the_same_key_without_colliding(harness: Harness) -> None:
    acme, globex = harness.key("acme"), harness.key("globex")
    a = harness.upload(acme, b"acme's", key="logo.png", mime_type="image/png")
    g = harness.upload(globex, b"globex's", key="logo.png", mime_type="image/png")
    assert harness.download(a["download_url"]).data == b"acme's"
    assert harness.download(g["download_url"]).data == b"globex's"


def test_anonymous_access_only_when_configured(
    make_harness: Callable[..., Harness], storage_backend: StorageBackend
) -> None:
    closed = make_harness(storage_backend)
    assert closed.client.get("/v1/buckets").status_code == 401
    open_ = make_harness(storage_backend, BROKER_ALLOW_ANONYMOUS="1")
    assert open_.client.get("/v1/buckets").status_code == 200
    created = open_.client.post(
        "/v1/files", json={"name": "a", "size": 1, "mime_type": "text/plain"}
    )
    assert created.status_code == 201
    keys = open_.client.get("/v1/keys")
    assert (keys.status_code, error_code(keys)) == (403, "auth.forbidden")


def test_the_revoking_process_forgets_the_key_at_once(harness: Harness) -> None:
    headers = harness.key("acme")
    assert harness.client.get("/v1/buckets", headers=headers).status_code == 200
    key_id = harness.client.get("/v1/keys", headers=admin_headers()).json["data"][-1]["id"]
    assert harness.client.delete(f"/v1/keys/{key_id}", headers=admin_headers()).status_code == 200
    assert harness.client.get("/v1/buckets", headers=headers).status_code == 401


def test_tenants_are_namespaced_in_the_bucket(harness: Harness) -> None:
    acme, globex = harness.key("acme"), harness.key("globex")
    a = harness.upload(acme, b"acme", key="same.txt")
    g = harness.upload(globex, b"globex", key="same.txt")
    keys = {found.key for found in harness.inventory.iter_objects()}
    assert keys == {f"acme/default/{a['id']}/same.txt", f"globex/default/{g['id']}/same.txt"}
    assert harness.download(a["download_url"]).data == b"acme"
    assert harness.download(g["download_url"]).data == b"globex"


_ACTIONS: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "declare": ("POST", "/v1/files", {"name": "b.txt", "size": 1, "mime_type": "text/plain"}),
    "complete": ("POST", "/v1/files/{id}/complete", None),
    "abort": ("POST", "/v1/files/{pending}/abort", None),
    "mint a token": ("POST", "/v1/tokens", {"bucket": "default"}),
    "read": ("GET", "/v1/files/{id}", None),
    "download": ("GET", "/v1/files/{id}/content", None),
    "read by key": ("GET", "/v1/buckets/default/files/{key}", None),
    "list": ("GET", "/v1/buckets/default/files", None),
    "buckets": ("GET", "/v1/buckets", None),
    "delete": ("DELETE", "/v1/files/{id}", None),
    "delete by key": ("DELETE", "/v1/buckets/default/files/{key}", None),
    "list keys": ("GET", "/v1/keys", None),
}
_GRANTS = {
    "files:read": {"read", "download", "read by key", "list", "buckets"},
    "files:write": {"declare", "complete", "abort", "mint a token"},
    "files:delete": {"delete", "delete by key"},
    "admin": set(_ACTIONS),
}


@on_backends("local")
@pytest.mark.parametrize("scopes", [["files:read"], ["files:write"], ["files:delete"], ["admin"],
                                    ["files:read", "files:delete"]])  # fmt: skip
@pytest.mark.parametrize("action", list(_ACTIONS))
def test_each_scope_grants_its_actions_and_no_other(
    harness: Harness, scopes: list[str], action: str
) -> None:
    """Scopes are any subset: each action needs its own (admin holds them all)."""
    owner = harness.key("acme")
    done = harness.upload(owner, BODY, key="k/done.txt")
    pending = harness.declare(owner)
    method, path, body = _ACTIONS[action]
    url = path.format(id=done["id"], key=done["key"], pending=pending["id"])
    response = harness.client.open(
        url, method=method, json=body, headers=harness.key("acme", scopes)
    )
    if action in set().union(*(_GRANTS[s] for s in scopes)):
        assert response.status_code < 400, response.json
    else:
        assert (response.status_code, error_code(response)) == (403, "auth.forbidden")
    deleted = action.startswith("delete") and response.status_code == 200
    assert (
        harness.client.get(f"/v1/files/{done['id']}", headers=owner).status_code == 404
    ) is deleted


def test_a_key_made_without_scopes_keeps_what_keys_could_always_do(harness: Harness) -> None:
    """Before scopes were split, files:write also deleted: a key made the old way still does."""
    created = harness.client.post("/v1/keys", json={"tenant": "acme"}, headers=admin_headers())
    assert created.json["scopes"] == ["files:read", "files:write", "files:delete"]
    assert created.json["expires_at"] is None
    headers = {"Authorization": f"Bearer {created.json['key']}"}
    done = harness.upload(headers, BODY)
    assert harness.client.delete(f"/v1/files/{done['id']}", headers=headers).status_code == 200


@on_backends("local")
def test_an_expired_key_is_401_expired_key(harness: Harness) -> None:
    expires_at = int(harness.clock()) + 60
    created = harness.client.post(
        "/v1/keys", json={"tenant": "acme", "expires_at": expires_at}, headers=admin_headers()
    )
    assert created.status_code == 201, created.json
    assert created.json["expires_at"] == expires_at
    listed = harness.client.get("/v1/keys", headers=admin_headers()).json["data"]
    assert [k["expires_at"] for k in listed] == [expires_at]
    headers = {"Authorization": f"Bearer {created.json['key']}"}
    assert harness.client.get("/v1/buckets", headers=headers).status_code == 200
    harness.clock.advance(60)  # verified (and cached) a moment ago: refused all the same
    response = harness.client.get("/v1/buckets", headers=headers)
    assert (response.status_code, error_code(response)) == (401, "auth.expired_key")
    assert response.json["error"]["message"] == "The API key has expired."
    past = harness.client.post(
        "/v1/keys", json={"tenant": "acme", "expires_at": int(harness.clock())},
        headers=admin_headers(),
    )  # fmt: skip
    assert (past.status_code, error_code(past)) == (422, "validation.failed")
    assert list(past.json["error"]["details"]) == ["expires_at"]
