"""Quotas at grant time: a tenant's pending uploads, by count and by declared bytes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from api.test_forms import form, post_form

from broker.config import GiB, Settings

from support import Harness, Response, assert_envelope


def _declare(harness: Harness, headers: dict[str, str], size: int = 5) -> Response:
    body = {"name": "a.txt", "size": size, "mime_type": "text/plain"}
    return harness.client.post("/v1/files", json=body, headers=headers)


def test_pending_count_is_refused_past_the_quota_until_one_is_completed_or_aborted(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(BROKER_QUOTA_PENDING_FILES="2")
    acme = harness.key("acme")
    first = harness.declare(acme, size=4)
    second = harness.declare(acme)

    refused = _declare(harness, acme)
    assert_envelope(refused, 429, "quota.exceeded")
    details = refused.json["error"]["details"]
    assert (details["pending_files"], details["max_pending_files"]) == (2, 2)
    # Retry when the oldest pending upload expires (the default upload TTL, 900 s).
    wait = first["expires_at"] - int(harness.clock())
    assert refused.headers["Retry-After"] == str(wait)
    assert harness.declare(harness.key("other"))["status"] == "pending"  # other tenants unaffected

    aborted = harness.client.post(f"/v1/files/{second['id']}/abort", headers=acme)
    assert aborted.status_code == 200
    third = harness.declare(acme)  # the aborted upload's place
    assert _declare(harness, acme).status_code == 429

    assert harness.put(first["upload"], b"data").status_code == 200
    done = harness.client.post(f"/v1/files/{first['id']}/complete", headers=acme)
    assert done.status_code == 200
    assert harness.declare(acme)["status"] == "pending"  # the completed upload's place
    assert third["id"] != first["id"]


def test_pending_bytes_are_refused_past_the_quota(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(BROKER_QUOTA_PENDING_BYTES="100")
    acme = harness.key("acme")
    harness.declare(acme, size=60)
    refused = _declare(harness, acme, size=41)
    assert_envelope(refused, 429, "quota.exceeded")
    assert refused.json["error"]["details"]["pending_bytes"] == 60
    assert "Retry-After" in refused.headers
    assert harness.declare(acme, size=40)["size"] == 40  # exactly up to the quota
    assert _declare(harness, acme, size=0).status_code == 201  # no bytes: within it


def test_expired_pending_uploads_do_not_count(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(BROKER_QUOTA_PENDING_FILES="1")
    acme = harness.key("acme")
    harness.declare(acme, expires_in=60)
    assert _declare(harness, acme).status_code == 429
    harness.clock.advance(61)
    assert harness.declare(acme)["status"] == "pending"


def test_a_form_upload_counts_too(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(BROKER_QUOTA_PENDING_FILES="1")
    acme = harness.key("acme")
    harness.declare(acme)
    body, content_type = form(b"hello")
    assert_envelope(post_form(harness, acme, body, content_type), 429, "quota.exceeded")


def test_the_bytes_quota_is_on_by_default_and_off_turns_it_off(
    make_harness: Callable[..., Harness],
) -> None:
    for setting, refused_at in (({}, 20), ({"BROKER_QUOTA_PENDING_BYTES": "off"}, None)):
        harness = make_harness(**setting)
        acme = harness.key("acme")
        statuses = [_declare(harness, acme, size=5 * GiB).status_code for _ in range(21)]
        # 100 GiB by default: twenty 5 GiB uploads fit, the 21st does not.
        expected = [201] * 21 if refused_at is None else [201] * refused_at + [429]
        assert statuses == expected


@pytest.mark.parametrize(
    ("value", "expected"), [(None, 10_000), ("off", None), ("OFF", None), ("3", 3)]
)
def test_the_files_quota_setting(value: str | None, expected: int | None) -> None:
    env = {"BROKER_SECRET_KEY": "s" * 32}
    if value is not None:
        env["BROKER_QUOTA_PENDING_FILES"] = value
    assert Settings.from_env(env).quota_pending_files == expected
