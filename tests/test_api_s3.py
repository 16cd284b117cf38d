"""The API in S3 mode, on moto (in-process) and LocalStack (a real, enforcing server).

Completion is judged on what the bucket holds: these tests put other bytes, sizes or types
into the bucket behind the broker's back and expect completion to refuse, delete the object
and fail the file. Where the peer does not verify checksums (moto), the broker must hash the
object itself rather than trust that anyone checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from broker.cli import main

from support import Harness


@pytest.fixture(params=["moto", "localstack"])
def peer(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue({"moto": "moto_s3"}.get(request.param, request.param))


@pytest.fixture
def s3(make_harness: Callable[..., Harness], peer: Any) -> Harness:
    harness = make_harness(
        BROKER_STORAGE="s3",
        BROKER_S3_BUCKET=peer.new_bucket(),
        BROKER_S3_ENDPOINT_URL=peer.endpoint,
    )
    harness.peer = peer  # type: ignore[attr-defined]
    return harness


def _bucket(harness: Harness) -> str:
    return str(harness.service.settings.s3_bucket)


def _object(harness: Harness, created: dict[str, Any]) -> str:
    return f"acme/{created['bucket']}/{created['key']}"


def _exists(harness: Harness, key: str) -> bool:
    return harness.service.storage.head(key) is not None


def _code(response: Any) -> str:
    return response.json["error"]["code"]  # type: ignore[no-any-return]


def test_round_trip_with_checksum(s3: Harness) -> None:
    acme = s3.key("acme")
    data = bytes(range(256)) * 4096  # 1 MiB
    created = s3.declare(
        acme,
        name="blob.bin",
        size=len(data),
        mime_type="application/x-test",
        sha256=hashlib.sha256(data).hexdigest(),
    )
    assert "x-amz-checksum-sha256" in created["upload"]["headers"]
    assert s3.put(created["upload"], data).status_code == 200
    pending = s3.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert (pending["status"], pending["offset"]) == ("pending", len(data))
    done = s3.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    assert done.status_code == 200, done.json
    assert done.json["status"] == "complete"
    redirect = s3.client.get(f"/v1/files/{created['id']}/content", headers=acme)
    assert redirect.status_code == 302
    blob = s3.download(redirect.headers["Location"])
    assert blob.data == data
    assert blob.headers["Content-Type"] == "application/x-test"
    assert blob.headers["Content-Disposition"] == 'inline; filename="blob.bin"'


def test_complete_before_upload_is_409(s3: Harness) -> None:
    acme = s3.key("acme")
    created = s3.declare(acme)
    response = s3.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    assert (response.status_code, _code(response)) == (409, "upload.not_received")


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        (b"hello world", "text/plain", "upload.size_mismatch"),
        (b"hello", "text/html", "upload.type_mismatch"),
        (b"HELLO", "text/plain", "upload.checksum_mismatch"),
    ],
)
def test_completion_checks_what_the_bucket_holds(
    s3: Harness, body: bytes, content_type: str, code: str
) -> None:
    acme = s3.key("acme")
    created = s3.declare(acme, sha256=hashlib.sha256(b"hello").hexdigest())
    # Storage holds something else than declared (written around the signed URL): no
    # checksum was sent, so storage reports none and the broker must hash it itself.
    s3.peer.client().put_object(  # type: ignore[attr-defined]
        Bucket=_bucket(s3), Key=_object(s3, created), Body=body, ContentType=content_type
    )
    response = s3.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    assert (response.status_code, _code(response)) == (422, code)
    assert not _exists(s3, _object(s3, created))
    failed = s3.client.get(f"/v1/files/{created['id']}", headers=acme).json
    assert (failed["status"], failed["failure_code"]) == ("failed", code)


def test_a_wrong_body_never_completes(s3: Harness) -> None:
    """Whoever catches it (LocalStack at the PUT, the broker's own hash on moto), a body
    whose SHA-256 differs from the declaration never becomes a complete file."""
    acme = s3.key("acme")
    created = s3.declare(acme, sha256=hashlib.sha256(b"hello").hexdigest())
    put = s3.put(created["upload"], b"HELLO")
    response = s3.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    if s3.peer.enforces:  # type: ignore[attr-defined]
        assert put.status_code == 400  # BadDigest: storage itself refused
        assert _code(response) == "upload.not_received"
    else:
        assert put.status_code == 200  # moto stores anything
        assert _code(response) == "upload.checksum_mismatch"
    assert not _exists(s3, _object(s3, created))


def test_delete_and_abort_remove_the_object(s3: Harness) -> None:
    acme = s3.key("acme")
    done = s3.upload(acme, b"hello")
    s3.client.delete(f"/v1/files/{done['id']}", headers=acme)
    assert not _exists(s3, _object(s3, done))
    created = s3.declare(acme)
    assert s3.put(created["upload"], b"hello").status_code == 200
    aborted = s3.client.post(f"/v1/files/{created['id']}/abort", headers=acme)
    assert aborted.json["status"] == "aborted"
    assert not _exists(s3, _object(s3, created))


def test_tenants_are_namespaced_in_the_bucket(s3: Harness) -> None:
    acme, globex = s3.key("acme"), s3.key("globex")
    a = s3.upload(acme, b"acme", key="same.txt")
    g = s3.upload(globex, b"globex", key="same.txt")
    keys = {o["Key"] for o in s3.peer.client().list_objects_v2(Bucket=_bucket(s3))["Contents"]}  # type: ignore[attr-defined]
    assert keys == {"acme/default/same.txt", "globex/default/same.txt"}
    assert s3.download(a["download_url"]).data == b"acme"
    assert s3.download(g["download_url"]).data == b"globex"


def test_storage_down_is_503_and_loses_nothing(
    make_harness: Callable[..., Harness], moto_s3: Any
) -> None:
    from conftest import free_port

    down = make_harness(
        BROKER_STORAGE="s3",
        BROKER_S3_BUCKET="nowhere",
        BROKER_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
    )
    acme = down.key("acme")
    created = down.declare(acme)  # signing needs no round trip to storage
    complete = down.client.post(f"/v1/files/{created['id']}/complete", headers=acme)
    assert (complete.status_code, _code(complete)) == (503, "storage.unavailable")
    health = down.client.get("/v1/health")
    assert (health.status_code, _code(health)) == (503, "storage.unavailable")
    delete = down.client.delete(f"/v1/files/{created['id']}", headers=acme)
    assert (delete.status_code, _code(delete)) == (503, "storage.unavailable")
    # Nothing changed in the metadata: the file is still there, still pending.
    record = down.service.store.get_file("acme", created["id"])
    assert record is not None
    assert record.status == "pending"


def test_s3_setup_applies_cors_and_lifecycle(
    peer: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
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


def test_active_content_is_streamed_by_the_broker_with_nosniff(s3: Harness) -> None:
    """S3 cannot add X-Content-Type-Options to its answers, so for HTML, SVG, XML and
    JavaScript the download URL is the broker's own link, which streams with the header."""
    acme = s3.key("acme")
    page = b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>" * 40_000  # ~2 MiB
    done = s3.upload(acme, page, name="x.svg", mime_type="image/svg+xml")
    assert "/v1/downloads/" in done["download_url"]
    for url in (
        done["download_url"],
        s3.client.get(f"/v1/files/{done['id']}/content", headers=acme).headers["Location"],
    ):
        served = s3.download(url)
        assert served.status_code == 200
        assert served.data == page
        assert served.headers["X-Content-Type-Options"] == "nosniff"
        assert served.headers["Content-Disposition"] == 'attachment; filename="x.svg"'
        assert served.headers["Content-Type"] == "image/svg+xml"
    # Everything else still goes straight to the bucket.
    plain = s3.upload(acme, b"text", name="t.txt")
    assert "/v1/downloads/" not in plain["download_url"]
