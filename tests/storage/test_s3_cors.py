"""Storage CORS (``storage/s3_cors.py``): what the check finds missing in a bucket's CORS
rules, ``broker s3 check`` against a real bucket, and ``checks.storage_cors`` in health,
cached so a probe does not cost a storage call."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from broker.cli import main
from broker.storage.s3_cors import browser_headers, cors_rule, missing

from support import S3_ONLY, Harness, StorageBackend

APP = "http://app.example"
HEADERS = ("Content-Type", "x-amz-checksum-sha256", "If-None-Match")
GOOD = cors_rule([APP], HEADERS)


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([GOOD], []),
        ([{**GOOD, "AllowedHeaders": ["*"]}], []),
        ([{**GOOD, "AllowedOrigins": ["http://*.example"]}], []),
        ([{**GOOD, "AllowedHeaders": ["content-type", "X-AMZ-*", "if-none-match"]}], []),
        ([], ["the bucket has no CORS rules"]),
        (
            [{**GOOD, "AllowedOrigins": ["http://other.example"]}],
            [f"{APP}: no rule allows this origin"] * 2,
        ),
        (
            [{**GOOD, "AllowedMethods": ["GET"]}],
            [f"{APP}: PUT is not an allowed method"],
        ),
        (
            [{**GOOD, "AllowedHeaders": ["Content-Type"]}],
            [f"{APP}: PUT does not allow the header(s) x-amz-checksum-sha256, If-None-Match"],
        ),
        (
            [
                {**GOOD, "AllowedHeaders": ["Content-Type"]},  # the closest rule is named
                {**GOOD, "AllowedHeaders": ["Content-Type", "x-amz-checksum-sha256"]},
            ],
            [f"{APP}: PUT does not allow the header(s) If-None-Match"],
        ),
        ([{**GOOD, "ExposeHeaders": []}], [f"{APP}: ETag is not exposed"]),
        (  # S3 answers with the first rule that admits the request: its ExposeHeaders count
            [{**GOOD, "ExposeHeaders": ["x-amz-request-id"]}, GOOD],
            [f"{APP}: ETag is not exposed"],
        ),
    ],
)
def test_missing_names_exactly_what_a_browser_would_be_refused(
    rules: list[dict[str, Any]], expected: list[str]
) -> None:
    assert missing(rules, [APP], HEADERS) == expected


def test_origins_match_case_sensitively_and_each_is_checked() -> None:
    other = "http://other.example"
    assert missing([GOOD], [APP, other], HEADERS) == [f"{other}: no rule allows this origin"] * 2
    assert missing([GOOD], ["HTTP://APP.EXAMPLE"], HEADERS)


@S3_ONLY
def test_the_required_headers_are_those_the_broker_signs(
    make_harness: Callable[..., Harness], storage_backend: StorageBackend
) -> None:
    """Derived from the URLs the adapter signs, so the check cannot drift from them."""
    harness = make_harness(storage_backend)
    s3 = harness.s3
    required = {name.lower() for name in browser_headers(s3)}
    until = int(harness.clock()) + 60
    signed = s3.presign_put(
        "k", size=1, content_type="text/plain", sha256="0" * 64, expires_at=until
    )
    assert {name.lower() for name in signed.headers} - {"content-length"} <= required
    assert "if-none-match" in required
    assert "content-length" not in required  # a browser sets it itself


def _cli(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return CliRunner().invoke(main, ["s3", *args])


@S3_ONLY
def test_s3_check_says_what_is_missing_until_setup_writes_the_rule(
    storage_backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    env = {**storage_backend.env, "BROKER_DATA_DIR": str(tmp_path), "BROKER_CORS_ORIGINS": APP}
    bucket = env["BROKER_S3_BUCKET"]
    bare = _cli(env, monkeypatch, "check")
    assert bare.exit_code == 1, bare.output
    assert "CORS missing: the bucket has no CORS rules" in bare.output

    client = storage_backend.peer.client()
    old = {**GOOD, "AllowedHeaders": ["Content-Type", "x-amz-checksum-sha256"], "ExposeHeaders": []}
    client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [old]})
    lacking = _cli(env, monkeypatch, "check")
    assert lacking.exit_code == 1, lacking.output
    assert f"CORS missing: {APP}: PUT does not allow the header(s) If-None-Match" in lacking.output
    assert "broker s3 setup" in lacking.output

    setup = _cli(env, monkeypatch, "setup")
    assert setup.exit_code == 0, setup.output
    assert "If-None-Match" in setup.output
    rule = client.get_bucket_cors(Bucket=bucket)["CORSRules"][0]
    assert "If-None-Match" in rule["AllowedHeaders"]
    assert "ETag" in rule["ExposeHeaders"]
    checked = _cli(env, monkeypatch, "check")
    assert checked.exit_code == 0, checked.output
    assert f"CORS: ok for {APP}" in checked.output


def test_s3_check_needs_s3_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.delenv("BROKER_STORAGE", raising=False)
    result = _cli(
        {"BROKER_DATA_DIR": str(tmp_path), "BROKER_CORS_ORIGINS": APP}, monkeypatch, "check"
    )
    assert result.exit_code != 0
    assert "BROKER_STORAGE=s3" in result.output


@S3_ONLY
def test_health_reports_storage_cors_without_failing_and_caches_it(
    make_harness: Callable[..., Harness],
    storage_backend: StorageBackend,
    caplog: pytest.LogCaptureFixture,
) -> None:
    harness = make_harness(storage_backend, BROKER_CORS_ORIGINS=APP)
    health = harness.client.get("/v1/health")
    assert health.status_code == 200  # server-side clients are still served
    assert health.json["status"] == "ok"
    assert health.json["checks"]["storage_cors"] == "missing: the bucket has no CORS rules"

    client = storage_backend.peer.client()
    bucket = harness.s3.bucket
    client.put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={"CORSRules": [cors_rule([APP], browser_headers(harness.s3))]},
    )
    cached = harness.client.get("/v1/health").json["checks"]["storage_cors"]
    assert cached.startswith("missing:")  # no GetBucketCors per probe
    harness.clock.advance(300)
    assert harness.client.get("/v1/health").json["checks"]["storage_cors"] == "ok"

    client.delete_bucket_cors(Bucket=bucket)
    harness.clock.advance(300)
    check = harness.service.storage_cors
    assert check is not None
    with caplog.at_level(logging.WARNING, logger="broker"):
        check.log_at_start()
    assert "storage CORS missing: the bucket has no CORS rules" in caplog.text


def test_health_has_no_cors_check_without_s3_or_origins(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness(BROKER_CORS_ORIGINS=APP)  # the embedded store answers CORS itself
    assert harness.client.get("/v1/health").json == {
        "status": "ok",
        "checks": {"database": "ok", "storage": "ok"},
    }
