"""Rate limits: per caller (key, or address before authentication), per key, per bucket."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from api.test_forms import form, post_form

from broker.api.limits import SweptMemoryStorage

from support import ADMIN_KEY, Harness, admin_headers, assert_envelope


def _mint(harness: Harness, **fields: object) -> tuple[dict[str, str], dict[str, object]]:
    """A fresh key of tenant acme (with ``fields``, e.g. its own ``rate_limit``)."""
    response = harness.client.post(
        "/v1/keys", json={"tenant": "acme", **fields}, headers=admin_headers()
    )
    assert response.status_code == 201, response.json
    return {"Authorization": f"Bearer {response.json['key']}"}, dict(response.json)


def _statuses(harness: Harness, headers: dict[str, str], count: int) -> list[int]:
    return [harness.client.get("/v1/buckets", headers=headers).status_code for _ in range(count)]


def test_a_key_over_its_limit_gets_429_while_another_key_is_served(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(BROKER_RATE_LIMIT="3/minute;100/hour")
    busy, _ = _mint(harness)
    calm, _ = _mint(harness)
    assert _statuses(harness, busy, 3) == [200, 200, 200]

    refused = harness.client.get("/v1/buckets", headers=busy)
    assert_envelope(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Limit"] == "3"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refused.json["error"]["details"]["retry_after"] == int(refused.headers["Retry-After"])
    # Every keyed route shares the caller's count.
    assert harness.client.post("/v1/files", json={}, headers=busy).status_code == 429

    assert _statuses(harness, calm, 3) == [200, 200, 200]


def test_limits_are_on_by_default(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(BROKER_RATE_LIMIT="")  # unset: the default, 100/second
    key, _ = _mint(harness)
    statuses = _statuses(harness, key, 101)
    assert statuses[:100] == [200] * 100  # well within a second, on this machine
    assert statuses[100] == 429


def test_off_disables_limits(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(BROKER_RATE_LIMIT="off")
    key, _ = _mint(harness, rate_limit="1/minute")  # a key's own limit is off with them
    assert _statuses(harness, key, 150) == [200] * 150


def test_a_keys_own_limit_replaces_the_default(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(BROKER_RATE_LIMIT="5/minute")  # the admin's too: 4 requests here
    tight, created = _mint(harness, rate_limit="1/minute")
    loose, _ = _mint(harness, rate_limit="10/minute")
    plain, _ = _mint(harness)
    assert created["rate_limit"] == "1/minute"
    listed = harness.client.get("/v1/keys", headers=admin_headers()).json["data"]
    assert {k["rate_limit"] for k in listed} == {"1/minute", "10/minute", None}

    assert _statuses(harness, tight, 2) == [200, 429]
    assert _statuses(harness, loose, 8) == [200] * 8
    assert _statuses(harness, plain, 6) == [200] * 5 + [429]


@pytest.mark.parametrize("limit", ["", "0/second", "ten/minute", "1/fortnight", "1/minute\n"])
def test_a_key_refuses_a_limit_that_does_not_parse(harness: Harness, limit: str) -> None:
    response = harness.client.post(
        "/v1/keys", json={"tenant": "acme", "rate_limit": limit}, headers=admin_headers()
    )
    assert_envelope(response, 422, "validation.failed")
    assert "rate_limit" in response.json["error"]["details"]


def test_a_buckets_limit_counts_declares_into_it_per_caller(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    policies = tmp_path / "buckets.json"
    policies.write_text(
        json.dumps({"buckets": {"default": {}, "avatars": {"rate_limit": "2/minute"}}})
    )
    harness = make_harness(BROKER_RATE_LIMIT="100/minute", BROKER_BUCKETS=str(policies))
    alice, _ = _mint(harness)
    bob, _ = _mint(harness)
    harness.declare(alice, bucket="avatars")
    body, content_type = form(b"hello", fields={"bucket": "avatars"})
    uploaded = post_form(harness, alice, body, content_type)  # a form upload is a declare too
    assert uploaded.status_code == 201, uploaded.json

    refused = harness.client.post(
        "/v1/files",
        json={"name": "a.txt", "size": 5, "mime_type": "text/plain", "bucket": "avatars"},
        headers=alice,
    )
    assert_envelope(refused, 429, "rate_limited")
    assert "avatars" in refused.json["error"]["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60

    assert harness.declare(alice)["bucket"] == "default"  # other buckets: the caller's limit
    assert harness.declare(bob, bucket="avatars")["bucket"] == "avatars"  # other callers


def test_failed_authentication_is_limited_by_address(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(BROKER_RATE_LIMIT="3/minute")
    wrong = {"Authorization": "Bearer bk_01JD7000000000000000000000_" + "a" * 43}
    assert _statuses(harness, wrong, 3) == [401, 401, 401]
    assert_envelope(harness.client.get("/v1/buckets", headers=wrong), 429, "rate_limited")
    assert _statuses(harness, {}, 1) == [429]  # no key at all: the same address
    assert _statuses(harness, {"Authorization": f"Bearer {ADMIN_KEY}"}, 1) == [200]


def test_routes_without_a_key_are_not_limited(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(BROKER_RATE_LIMIT="2/minute", BROKER_METRICS="public")
    acme = harness.key("acme")
    created = harness.declare(acme, size=4)
    for _ in range(5):
        assert harness.client.get("/v1/health").status_code == 200
        assert harness.client.get("/metrics").status_code == 200
        assert harness.send("HEAD", created["download_url"], {}).status_code == 409
    assert _statuses(harness, acme, 2) == [200, 429]  # the declare was the key's first
    # The blob PUT is authorised by its signature: stored, though the key is spent.
    assert harness.put(created["upload"], b"data").status_code == 200


def test_cors_preflights_are_not_counted(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(BROKER_RATE_LIMIT="2/minute", BROKER_CORS_ORIGINS="https://app.example")
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    for _ in range(4):
        answer = harness.client.options("/v1/files", headers=preflight)
        assert answer.status_code == 200
        assert answer.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert _statuses(harness, {}, 3) == [401, 401, 429]  # the address's own count is intact


def test_an_unreachable_redis_does_not_take_the_api_down(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(BROKER_RATE_LIMIT="3/minute", BROKER_REDIS_URL="redis://127.0.0.1:1")
    key, _ = _mint(harness)
    # Served, and still limited: counted in this process's memory while Redis is down.
    assert _statuses(harness, key, 4) == [200, 200, 200, 429]


def test_memory_counters_expire_without_a_thread_per_count() -> None:
    storage = SweptMemoryStorage("broker-memory://")
    time.sleep(0.05)  # the one timer limits starts with the storage has run out
    threads = threading.active_count()
    assert [storage.incr("busy", 0.2) for _ in range(50)][-1] == 50
    assert threading.active_count() == threads  # limits' own storage starts one per count
    time.sleep(0.25)
    assert storage.get("busy") == 0  # the window is over
    storage._sweep_at = 0.0  # the next count sweeps what expired meanwhile
    storage.incr("other", 60)
    assert "busy" not in storage.storage
