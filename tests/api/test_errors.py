"""Every error, ours or Flask's, comes in the contract's envelope with the request id."""

from __future__ import annotations

from typing import NoReturn

import pytest
from flask import Flask
from sqlalchemy import create_engine

from broker.errors import BrokerError

from support import Client, Harness, admin_headers, assert_envelope, on_backends


def test_unknown_route_is_404_route_not_found(client: Client) -> None:
    assert_envelope(client.get("/nope"), 404, "route.not_found")


def test_wrong_method_is_405_with_allow(client: Client) -> None:
    response = client.put("/v1/health")
    assert_envelope(response, 405, "method.not_allowed")
    assert "GET" in response.headers["Allow"]


def test_malformed_json_is_400(harness: Harness) -> None:
    headers = {**harness.key(), "Content-Type": "application/json"}
    assert_envelope(
        harness.client.post("/v1/files", data="{", headers=headers), 400, "request.malformed"
    )
    assert_envelope(
        harness.client.post("/v1/files", data="[1]", headers=headers), 400, "request.malformed"
    )


@pytest.mark.parametrize("path", ["/v1/files", "/v1/keys", "/v1/files/file_x/complete"])
@pytest.mark.parametrize("nesting", ["[" * 100_000, '{"a":' * 50_000])
def test_json_nested_too_deeply_is_400_not_500(harness: Harness, path: str, nesting: str) -> None:
    """Python's parser gives up on deep nesting with a RecursionError: still the client's
    malformed body, answered in the envelope."""
    headers = {**admin_headers(), "Content-Type": "application/json"}
    response = harness.client.post(path, data=nesting, headers=headers)
    assert_envelope(response, 400, "request.malformed")


def test_wrong_content_type_is_400(harness: Harness) -> None:
    response = harness.client.post(
        "/v1/files", data='{"name": "a"}', headers={**harness.key(), "Content-Type": "text/plain"}
    )
    assert_envelope(response, 400, "request.malformed")


def test_oversized_json_is_413(harness: Harness) -> None:
    blob = '{"name": "' + "a" * (1024 * 1024) + '"}'
    response = harness.client.post(
        "/v1/files", data=blob, headers={**harness.key(), "Content-Type": "application/json"}
    )
    assert_envelope(response, 413, "request.too_large")


def test_unexpected_exception_is_500_without_internals(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail: password=hunter2")

    monkeypatch.setattr(harness.service.files, "buckets", explode)
    response = harness.client.get("/v1/buckets", headers=harness.key())
    assert_envelope(response, 500, "internal")
    assert "hunter2" not in response.get_data(as_text=True)


def test_database_failure_is_503(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database going away mid-life: requests and health answer 503, not 500."""
    headers = harness.key()
    database = harness.service.store.db
    database.engine.dispose()
    monkeypatch.setattr(database, "engine", create_engine("sqlite:////nonexistent/dir/db.sqlite3"))
    response = harness.client.get("/v1/buckets", headers=headers)
    assert_envelope(response, 503, "database.unavailable")
    assert_envelope(harness.client.get("/v1/health"), 503, "database.unavailable")


@on_backends("local")
def test_storage_failure_makes_health_503(harness: Harness) -> None:
    """The embedded store's directory gone (S3 unreachable: tests/storage/test_s3.py)."""
    assert harness.client.get("/v1/health").json == {
        "status": "ok",
        "checks": {"database": "ok", "storage": "ok"},
    }
    (harness.data_dir / "blobs" / "objects").chmod(0o500)
    try:
        import os

        if os.geteuid() == 0:  # root ignores permissions; remove the directory instead
            (harness.data_dir / "blobs" / "objects").chmod(0o700)
            (harness.data_dir / "blobs" / "objects").rmdir()
        assert_envelope(harness.client.get("/v1/health"), 503, "storage.unavailable")
    finally:
        (harness.data_dir / "blobs" / "objects").mkdir(exist_ok=True)
        (harness.data_dir / "blobs" / "objects").chmod(0o700)


def test_incoming_request_id_is_reused_when_well_formed(client: Client) -> None:
    response = client.get("/nope", headers={"X-Request-Id": "abc-123-def-456"})
    assert response.headers["X-Request-Id"] == "abc-123-def-456"
    assert response.json["request_id"] == "abc-123-def-456"
    hostile = client.get("/nope", headers={"X-Request-Id": "<script>"})
    assert hostile.headers["X-Request-Id"].startswith("req_")


def test_success_answers_carry_a_request_id(client: Client) -> None:
    assert client.get("/v1/health").headers["X-Request-Id"].startswith("req_")


def test_broker_error_renders_details(harness: Harness) -> None:
    app: Flask = harness.app

    @app.get("/boom")
    def boom() -> NoReturn:
        raise BrokerError("validation.failed", details={"size": ["too big"]})

    response = harness.client.get("/boom")
    assert_envelope(response, 422, "validation.failed")
    assert response.json["error"]["details"] == {"size": ["too big"]}


def test_admin_headers_helper_is_valid(client: Client) -> None:
    assert client.get("/v1/keys", headers=admin_headers()).status_code == 200
