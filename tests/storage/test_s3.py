"""What only S3 mode has: ``broker s3 setup`` (CORS and lifecycle on the bucket), and an
unreachable endpoint answered as 503 ``storage.unavailable`` without losing anything."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from broker.cli import main

from support import S3_ONLY, Harness, StorageBackend, error_code, free_port


def test_storage_down_is_503_and_loses_nothing(
    make_harness: Callable[..., Harness], moto_s3: Any
) -> None:
    down = make_harness(
        BROKER_STORAGE="s3",
        BROKER_S3_BUCKET="nowhere",
        BROKER_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
    )
    acme = down.key("acme")
    created = down.declare(acme)  # signing needs no round trip to storage
    complete = down.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    assert (complete.status_code, error_code(complete)) == (503, "storage.unavailable")
    health = down.client.get("/v1/health")
    assert (health.status_code, error_code(health)) == (503, "storage.unavailable")
    delete = down.client.delete(f"/v1/files/{created['id']}", headers=acme)
    assert (delete.status_code, error_code(delete)) == (503, "storage.unavailable")
    # Nothing changed in the metadata: the file is still there, still pending.
    assert down.record(created["id"]).status == "pending"


@S3_ONLY
def test_s3_setup_applies_cors_and_lifecycle(
    storage_backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    peer = storage_backend.peer
    bucket = f"setup-{peer.name}"
    for name, value in {
        "BROKER_DATA_DIR": str(tmp_path),
        "BROKER_STORAGE": "s3",
        "BROKER_S3_BUCKET": bucket,
        "BROKER_S3_ENDPOINT_URL": peer.endpoint,
        "BROKER_CORS_ORIGINS": "https://app.example",
    }.items():
        monkeypatch.setenv(name, value)
    first = CliRunner().invoke(main, ["s3", "setup", "--create-bucket"])
    assert first.exit_code == 0, first.output
    assert f"created bucket {bucket}" in first.output
    again = CliRunner().invoke(main, ["s3", "setup", "--create-bucket"])
    assert again.exit_code == 0, again.output
    assert f"bucket {bucket} exists" in again.output
    client = peer.client()
    rule = client.get_bucket_cors(Bucket=bucket)["CORSRules"][0]
    assert rule["AllowedOrigins"] == ["https://app.example"]
    assert {"PUT", "GET"} <= set(rule["AllowedMethods"])
    assert "ETag" in rule["ExposeHeaders"]
    lifecycle = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert lifecycle[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}


def test_s3_setup_needs_s3_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("BROKER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("BROKER_STORAGE", raising=False)
    result = CliRunner().invoke(main, ["s3", "setup"])
    assert result.exit_code != 0
    assert "BROKER_STORAGE=s3" in result.output


@S3_ONLY
def test_listings_walk_every_page(
    make_harness: Callable[..., Harness], storage_backend: StorageBackend
) -> None:
    """The reaper sees every object and open upload, however many pages S3 answers in."""
    harness = make_harness(storage_backend)
    s3 = harness.s3
    s3.listing_page_size = 2
    keys = [f"acme/default/k{n}" for n in range(5)]
    for key in keys:
        storage_backend.put_object(s3, key, b"x")
    uploads = {s3.start_multipart(key, content_type="text/plain"): key for key in keys[:3]}
    assert sorted(found.key for found in s3.iter_objects()) == keys
    assert {found.upload_id: found.key for found in s3.iter_uploads()} == uploads
    for upload_id, key in uploads.items():
        s3.abort_multipart(key, upload_id)
