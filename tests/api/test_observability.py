"""Observability: one log line per request (text or JSON) that never carries a secret,
token or signed URL; /metrics as BROKER_METRICS allows; WWW-Authenticate on every 401."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest

from broker.api.access_log import JsonFormatter

from support import ADMIN_KEY, Harness, on_backends, path_of

METRICS_TOKEN = "metrics-token-0123456789"


def test_every_401_challenges_with_bearer(harness: Harness) -> None:
    missing = harness.client.get("/v1/buckets")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="broker"'
    wrong = harness.client.get("/v1/buckets", headers={"Authorization": "Bearer nope-nope"})
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="broker", error="invalid_token"'


def test_metrics_are_not_served_by_default(harness: Harness) -> None:
    assert harness.client.get("/metrics").status_code == 404


def test_metrics_token_guards_the_endpoint(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(BROKER_METRICS_TOKEN=METRICS_TOKEN)
    harness.upload(harness.key(), b"abc")
    bare = harness.client.get("/metrics")
    assert bare.status_code == 401
    assert bare.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = harness.client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 24})
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    ok = harness.client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert ok.status_code == 200
    text = ok.get_data(as_text=True)
    for name in (
        'broker_urls_issued_total{kind="upload"}',
        'broker_urls_issued_total{kind="download_link"}',
        'broker_upload_completions_total{result="complete"}',
        "broker_bytes_validated_total",
        'broker_db_transaction_duration_seconds_count{kind="write"}',
        'broker_db_transaction_duration_seconds_count{kind="read"}',
    ):
        assert name in text, name


def test_metrics_off_and_public(make_harness: Callable[..., Harness]) -> None:
    off = make_harness(BROKER_METRICS="off", BROKER_METRICS_TOKEN=METRICS_TOKEN)
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    assert off.client.get("/metrics", headers=headers).status_code == 404
    assert make_harness(BROKER_METRICS="public").client.get("/metrics").status_code == 200


@on_backends("local")  # blob PUTs and GETs through the broker itself
def test_one_log_line_per_request_without_secrets(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    key = harness.key()
    secret = harness.service.settings.secret_key
    with caplog.at_level(logging.INFO, logger="broker"):
        caplog.clear()
        created = harness.declare(key, size=3)
        upload_url = created["upload"]["url"]
        assert harness.put(created["upload"], b"abc").status_code == 200
        done = harness.client.post(f"/v1/files/{created['id']}/complete", headers=key)
        assert done.status_code == 200
        content = harness.client.get(f"/v1/files/{created['id']}/content", headers=key)
        download_url = content.headers["Location"]
        assert harness.download(download_url).data == b"abc"
        harness.client.get(path_of(created["download_url"]))
        harness.client.get("/v1/buckets", headers={"Authorization": "Bearer wrong-key-123"})
    access = [r for r in caplog.records if r.name == "broker.access"]
    routes = [(r.fields["method"], r.fields["route"]) for r in access]  # type: ignore[attr-defined]
    assert routes[:3] == [
        ("POST", "/v1/files"),
        ("PUT", "/v1/blobs/<token>"),
        ("POST", "/v1/files/<file_id>/complete"),
    ]
    assert len(access) == 7
    formatter = JsonFormatter()
    tokens = [
        key["Authorization"].split()[1],
        ADMIN_KEY,
        secret,
        "wrong-key-123",
        path_of(upload_url).rsplit("/", 1)[1],
        path_of(download_url).rsplit("/", 1)[1].split("?")[0],
        path_of(created["download_url"]).rsplit("/", 1)[1],
    ]
    for record in caplog.records:
        for line in (record.getMessage(), formatter.format(record)):
            for token in tokens:
                assert token not in line
    put = json.loads(formatter.format(access[1]))
    assert put["status"] == 200
    assert put["bytes_in"] == 3
    assert put["request_id"].startswith("req_")
    assert put["duration_ms"] >= 0
    first = json.loads(formatter.format(access[0]))
    assert first["tenant"] == "acme"
    assert first["status"] == 201
