"""Rate limits under real gunicorn: instances sharing Redis share the counts.

Needs Redis on 127.0.0.1:6379 (``scripts/services.sh`` starts it) and PostgreSQL (both
instances must know the same keys).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .conftest import BrokerServer, expect_error

pytestmark = pytest.mark.e2e

REDIS_URL = "redis://127.0.0.1:6379/0"


def test_limits_hold_across_two_instances_sharing_redis(
    start_broker: Callable[..., BrokerServer], postgres_url: str
) -> None:
    shared = {
        "BROKER_DATABASE_URL": postgres_url,
        "BROKER_AUTO_MIGRATE": "1",
        "BROKER_REDIS_URL": REDIS_URL,
        "BROKER_RATE_LIMIT": "100/minute",
    }
    one, two = start_broker(**shared), start_broker(**shared)
    key = one.create_key("acme", rate_limit="10/minute")["key"]
    clients = [one.client(key), two.client(key)]

    answers = [clients[n % 2].get("/v1/buckets") for n in range(12)]  # six to each

    # Alone, each instance would have allowed all six; together they allow ten.
    assert [a.status_code for a in answers] == [200] * 10 + [429] * 2
    for refused in answers[10:]:
        expect_error(refused, 429, "rate_limited")
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Another key is served by both.
    other = one.new_key("acme")
    assert [s.client(other).get("/v1/buckets").status_code for s in (one, two)] == [200, 200]


def test_an_instance_whose_redis_is_down_still_serves(
    start_broker: Callable[..., BrokerServer],
) -> None:
    server = start_broker(BROKER_REDIS_URL="redis://127.0.0.1:1/0", BROKER_RATE_LIMIT="100/minute")
    tenant = server.tenant()
    created = tenant.declare_raw(name="a.txt", size=5, mime_type="text/plain")
    assert created.status_code == 201, created.text
    assert tenant.http.get(f"/v1/files/{created.json()['id']}").status_code == 200
    assert "falling back to in-memory storage" in server.stderr()
