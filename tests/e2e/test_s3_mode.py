"""The broker in S3 mode, over real HTTP, against a real S3-compatible server (LocalStack).

The broker runs under gunicorn with ``BROKER_STORAGE=s3`` on a bucket of LocalStack, which
validates SigV4 signatures (``tests/conftest.py``'s ``localstack``; what it enforces is
measured in ``../shared/S3-PEERS.md``). Clients PUT straight to the URLs the broker issued, so
here the lies are refused by S3 itself: a body of another length or type, other bytes than
the declared SHA-256, an expired or altered URL. After every refusal nothing is stored (the
file is pending with ``offset`` 0, completing is 409 ``upload.not_received``, the bucket has
no object) and the honest PUT still works and round-trips byte for byte.

Completion trusts the bucket, not the client: objects written behind the broker's back with
another size, type or content are refused (422), deleted and the file fails. Downloads,
bucket set-up (CORS for browsers, the multipart lifecycle rule) and a storage outage (clean
503s, nothing lost once S3 answers again) are covered too.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import secrets
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from .conftest import (
    LOOPBACK,
    BrokerServer,
    RawConnection,
    S3Bucket,
    Tenant,
    expect_error,
    free_port,
    inherited_env,
    s3_env,
    sha256_hex,
)

pytestmark = pytest.mark.e2e

CONTENT = b"exactly what was declared\n"
APP_ORIGIN, EVIL_ORIGIN = "https://app.example", "https://evil.example"


@pytest.fixture
def tenant(s3_broker: BrokerServer) -> Tenant:
    """A fresh tenant on the shared S3-mode server (its ``s3`` looks into the bucket)."""
    return s3_broker.tenant()


# -- helpers ------------------------------------------------------------------------------


def s3_error(response: httpx.Response, status: int, code: str) -> None:
    """Assert that S3 itself refused the request with this status and S3 error code."""
    assert response.status_code == status, f"expected S3 {status} {code}: {response.text}"
    found = re.search(r"<Code>([^<]+)</Code>", response.text)
    assert found, f"not an S3 error document: {response.text}"
    assert found.group(1) == code, response.text


def with_url(file: Mapping[str, Any], url: str) -> dict[str, Any]:
    """The declared file with its upload URL replaced (to send an altered URL)."""
    return {**file, "upload": {**file["upload"], "url": url}}


def flip_signature(url: str) -> str:
    """The URL with one hex digit of ``X-Amz-Signature`` changed."""
    head, signature = url.split("X-Amz-Signature=", 1)
    changed = ("0" if signature[0] != "0" else "1") + signature[1:]
    return f"{head}X-Amz-Signature={changed}"


def rfc5987_filename(disposition: str) -> str | None:
    """The decoded ``filename*=UTF-8''…`` of a Content-Disposition value, if any."""
    found = re.search(r"filename\*=UTF-8''([^;\s]+)", disposition)
    return unquote(found.group(1), encoding="utf-8") if found else None


def expect_clean(response: httpx.Response, *ok: int) -> None:
    """One of the ``ok`` statuses, or the storage.unavailable envelope: never a 500."""
    if response.status_code not in ok:
        expect_error(response, 503, "storage.unavailable")


# -- 1. lies that S3 itself refuses -------------------------------------------------------


def _short(tenant: Tenant, file: dict[str, Any]) -> httpx.Response:
    return tenant.put(file, CONTENT[:-1])  # Content-Length one smaller than signed


def _long(tenant: Tenant, file: dict[str, Any]) -> httpx.Response:
    return tenant.put(file, CONTENT + b"!")


def _wrong_type(tenant: Tenant, file: dict[str, Any]) -> httpx.Response:
    return tenant.put(file, CONTENT, **{"Content-Type": "text/html"})


def _wrong_bytes(tenant: Tenant, file: dict[str, Any]) -> httpx.Response:
    forged = CONTENT.upper()  # same length, same type, other SHA-256
    assert len(forged) == len(CONTENT)
    return tenant.put(file, forged)


def _tampered_signature(tenant: Tenant, file: dict[str, Any]) -> httpx.Response:
    return tenant.put(with_url(file, flip_signature(file["upload"]["url"])), CONTENT)


def _other_key(tenant: Tenant, file: dict[str, Any]) -> httpx.Response:
    url = file["upload"]["url"].replace("/lies/", "/liez/", 1)
    assert url != file["upload"]["url"]
    response = tenant.put(with_url(file, url), CONTENT)
    assert tenant.s3 is not None
    moved = tenant.storage_key({**file, "key": file["key"].replace("lies/", "liez/", 1)})
    assert tenant.s3.head(moved) is None, "S3 stored the body under the altered key"
    return response


LIES: dict[str, tuple[Callable[[Tenant, dict[str, Any]], httpx.Response], int, str]] = {
    "1-byte-short": (_short, 403, "SignatureDoesNotMatch"),
    "1-byte-long": (_long, 403, "SignatureDoesNotMatch"),
    "wrong-content-type": (_wrong_type, 403, "SignatureDoesNotMatch"),
    "wrong-bytes-declared-sha256": (_wrong_bytes, 400, "BadDigest"),
    "tampered-signature": (_tampered_signature, 403, "SignatureDoesNotMatch"),
    "key-changed-in-path": (_other_key, 403, "SignatureDoesNotMatch"),
}


@pytest.mark.parametrize("lie", list(LIES))
def test_storage_refuses_a_lie_and_keeps_nothing(tenant: Tenant, lie: str) -> None:
    send, status, code = LIES[lie]
    file = tenant.declare(CONTENT, key=f"lies/{lie}.bin")
    assert "x-amz-checksum-sha256" in file["upload"]["headers"]  # the SHA-256 is signed
    s3_error(send(tenant, file), status, code)
    tenant.assert_nothing_stored(file["id"])  # offset 0, 409 not_received, no S3 object
    tenant.assert_recovers(file, CONTENT)  # the honest PUT, complete, identical download


def test_expired_upload_url_is_refused_by_storage(tenant: Tenant) -> None:
    file = tenant.declare(CONTENT, key="lies/expired.bin", expires_in=1)
    # S3 counts X-Amz-Expires from X-Amz-Date in whole seconds: wait one second past it.
    time.sleep(max(0.0, file["upload"]["expires_at"] - time.time()) + 1.1)
    s3_error(tenant.put(file, CONTENT), 403, "AccessDenied")
    tenant.assert_nothing_stored(file["id"])
    # The stale declaration is given up and the same key declared again: that one works.
    assert tenant.http.post(f"/v1/files/{file['id']}/abort", json={}).status_code == 200
    again = tenant.upload(CONTENT, key="lies/expired.bin")
    assert tenant.download(again["id"]) == CONTENT


def test_body_cut_short_by_the_client_is_never_completed(tenant: Tenant) -> None:
    """Headers promise the declared length, the body stops short and the client hangs up.

    No SHA-256 is declared, so only the length protects the object. LocalStack may store the
    truncated body (it does, with 200); then completion must catch it, not the client's word.
    """
    file = tenant.declare(CONTENT, mime_type="text/plain", sha256=None)
    with RawConnection(file["upload"]["url"]) as conn:
        conn.send_head("PUT", file["upload"]["headers"])
        conn.send(CONTENT[:10])
        conn.half_close()
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn.reply()  # whatever S3 answers, the bucket and the broker tell the truth
    assert tenant.s3 is not None
    stored = tenant.s3.head(tenant.storage_key(file))
    if stored is None:
        tenant.assert_nothing_stored(file["id"])
        tenant.assert_recovers(file, CONTENT)
        return
    assert stored["ContentLength"] == 10
    assert tenant.get(file["id"])["offset"] == 10  # what storage holds, honestly reported
    expect_error(tenant.complete(file["id"]), 422, "upload.size_mismatch")
    assert tenant.s3.head(tenant.storage_key(file)) is None, "the truncated object was kept"
    failed = tenant.get(file["id"])
    assert (failed["status"], failed["failure_code"]) == ("failed", "upload.size_mismatch")
    expect_error(tenant.http.get(f"/v1/files/{file['id']}/content"), 409, "upload.not_received")


# -- 2. completion checks what the bucket holds -------------------------------------------

MISMATCHES = {
    "size": (CONTENT + b"!", "application/octet-stream", "upload.size_mismatch"),
    "type": (CONTENT, "text/plain", "upload.type_mismatch"),
    "checksum": (CONTENT.upper(), "application/octet-stream", "upload.checksum_mismatch"),
}


@pytest.mark.parametrize("what", list(MISMATCHES))
def test_complete_refuses_what_storage_holds_instead(tenant: Tenant, what: str) -> None:
    """Someone with bucket access (not the client's URL) wrote another object there."""
    body, content_type, code = MISMATCHES[what]
    file = tenant.declare(CONTENT)  # application/octet-stream, with its SHA-256
    assert tenant.s3 is not None
    where = tenant.storage_key(file)
    assert where == f"{tenant.name}/default/{file['id']}/{file['key']}"
    tenant.s3.put(where, body, content_type)
    if what == "checksum":
        # No SHA-256 was sent with it, so S3 reports none: the broker must hash it itself.
        head = tenant.s3.client.head_object(
            Bucket=tenant.s3.name, Key=where, ChecksumMode="ENABLED"
        )
        assert "ChecksumSHA256" not in head
    expect_error(tenant.complete(file["id"]), 422, code)
    assert tenant.s3.head(where) is None, "the mismatching object was not deleted"
    failed = tenant.get(file["id"])
    assert (failed["status"], failed["failure_code"]) == ("failed", code)
    expect_error(tenant.http.get(f"/v1/files/{file['id']}/content"), 409, "upload.not_received")


# -- 3. round trips, keys, downloads ------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "plain/report.pdf",
        "spaces and+plus/a b+c.txt",
        "percent/100%25 done%.txt",
        "reserved/~tilde=eq&amp;semi,comma:colon@at!$'()*.txt",
        "query?and#hash.txt",
        "unicodé/日本語/ファイル.txt",
    ],
    ids=["plain", "space-plus", "percent", "reserved", "query-hash", "unicode"],
)
def test_keys_round_trip_through_signed_urls(tenant: Tenant, key: str) -> None:
    """The broker's SigV4 presigner encodes every key exactly as S3 canonicalises it."""
    content = key.encode() + b"\n" + bytes(range(256))
    file = tenant.upload(content, key=key, name=key.rsplit("/", 1)[-1])
    assert file["key"] == key
    assert tenant.s3 is not None
    stored = tenant.s3.head(tenant.storage_key(file))
    assert stored is not None
    assert stored["ContentLength"] == len(content)
    assert stored["ContentType"] == "application/octet-stream"
    assert tenant.download(file["id"]) == content


def test_a_large_object_round_trips_and_delete_and_abort_free_the_bucket(
    tenant: Tenant,
) -> None:
    content = bytes(range(256)) * (12 * 1024)  # 3 MiB: the broker hashes it in chunks
    file = tenant.upload(content, name="big.bin")
    assert tenant.download(file["id"]) == content
    assert tenant.s3 is not None
    where = tenant.storage_key(file)
    assert tenant.s3.head(where) is not None
    assert tenant.http.delete(f"/v1/files/{file['id']}").status_code == 200
    assert tenant.s3.head(where) is None, "DELETE left the object in the bucket"
    expect_error(tenant.http.delete(f"/v1/files/{file['id']}"), 404, "file.not_found")

    pending = tenant.declare(CONTENT)
    assert tenant.put(pending, CONTENT).status_code == 200
    aborted = tenant.http.post(f"/v1/files/{pending['id']}/abort", json={})
    assert aborted.status_code == 200, aborted.text
    assert aborted.json()["status"] == "aborted"
    assert tenant.s3.head(tenant.storage_key(pending)) is None, "abort left the object"


def test_download_url_serves_nothing_before_complete(tenant: Tenant) -> None:
    """API.md: ``download_url`` only serves bytes once the file is complete."""
    file = tenant.declare(CONTENT, mime_type="text/plain")
    early = httpx.get(file["download_url"], trust_env=False)
    assert early.status_code >= 400, "the download URL served bytes before any upload"
    assert tenant.put(file, CONTENT).status_code == 200
    before = httpx.get(file["download_url"], trust_env=False)
    assert before.status_code >= 400, (
        f"download_url from the declare answer served the bytes before complete "
        f"(HTTP {before.status_code}): anyone holding it reads bytes the broker has not checked"
    )
    assert CONTENT not in before.content
    assert tenant.complete(file["id"]).status_code == 200
    after = httpx.get(file["download_url"], trust_env=False, follow_redirects=True)
    assert after.content == CONTENT


def _served(tenant: Tenant, file_id: str, *, via_broker: bool = False) -> httpx.Response:
    """``GET /content``: a 302 to the bucket (or, for active content, to the broker's own
    link, because S3 cannot add ``nosniff``); then that answer."""
    redirect = tenant.http.get(f"/v1/files/{file_id}/content")
    assert redirect.status_code == 302, redirect.text
    assert tenant.s3 is not None
    location = redirect.headers["location"]
    if via_broker:
        assert "/v1/downloads/" in location
    else:
        assert f"/{tenant.s3.name}/" in location  # straight to S3, the broker carries no bytes
    served = tenant.blobs.get(location)
    assert served.status_code == 200, served.text
    return served


def test_download_headers_come_from_storage(tenant: Tenant) -> None:
    name = "Résumé 2026 «final» 日本.pdf"
    content = b"%PDF-1.7 not really\n"
    pdf = tenant.upload(content, name=name, mime_type="application/pdf")
    served = _served(tenant, pdf["id"])
    assert served.content == content
    assert served.headers["content-type"] == "application/pdf"
    disposition = served.headers["content-disposition"]
    assert disposition.startswith("inline;"), disposition
    assert rfc5987_filename(disposition) == name, disposition
    assert re.search(r'filename="[\x20-\x7e]+"', disposition), disposition  # ASCII fallback

    page = tenant.upload(b"<script>alert(1)</script>", name="page.html", mime_type="text/html")
    served = _served(tenant, page["id"], via_broker=True)
    assert served.content == b"<script>alert(1)</script>"
    assert served.headers["content-type"] == "text/html"
    assert served.headers["content-disposition"].startswith("attachment;"), served.headers


def test_active_content_is_served_with_nosniff(tenant: Tenant) -> None:
    """API.md: active content is always an attachment *with* ``X-Content-Type-Options: nosniff``."""
    page = tenant.upload(b"<svg onload=alert(1)>", name="x.svg", mime_type="image/svg+xml")
    served = _served(tenant, page["id"], via_broker=True)
    assert served.content == b"<svg onload=alert(1)>"
    assert served.headers["content-disposition"].startswith("attachment;")
    sniffing = served.headers.get("x-content-type-options")
    assert sniffing == "nosniff", f"S3 served image/svg+xml with X-Content-Type-Options {sniffing}"


# -- 4. bucket set-up: CORS for browsers, the multipart lifecycle rule --------------------


def _setup_bucket(env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``broker s3 setup --create-bucket``, the console script next to this interpreter."""
    command = [str(Path(sys.executable).with_name("broker")), "s3", "setup", "--create-bucket"]
    return subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_s3_setup_lets_the_app_origin_upload_from_a_browser(
    localstack: Any, start_broker: Callable[..., BrokerServer], tmp_path: Path
) -> None:
    bucket = S3Bucket(name=f"cors-{secrets.token_hex(6)}", client=localstack.client())
    settings = {**s3_env(localstack.endpoint, bucket.name), "BROKER_CORS_ORIGINS": APP_ORIGIN}
    env = {**inherited_env(), **settings, "BROKER_DATA_DIR": str(tmp_path / "cli-data")}
    done = _setup_bucket(env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"created bucket {bucket.name}" in done.stdout
    assert f"CORS: PUT/GET/HEAD from {APP_ORIGIN} with headers" in done.stdout
    assert "lifecycle: abort incomplete multipart uploads after 1 day(s)" in done.stdout
    again = _setup_bucket(env, tmp_path)  # a release step runs it on every deploy
    assert again.returncode == 0, again.stderr
    assert f"bucket {bucket.name} exists" in again.stdout

    rules = bucket.client.get_bucket_lifecycle_configuration(Bucket=bucket.name)["Rules"]
    assert [r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] for r in rules] == [1]
    assert rules[0]["Status"] == "Enabled"

    server = start_broker(s3=bucket, **settings)
    assert "storage CORS" not in server.stderr()  # the rule admits the origin: no warning
    tenant = server.tenant()
    file = tenant.declare(CONTENT, mime_type="text/plain")
    url = file["upload"]["url"]
    sent = {k: v for k, v in file["upload"]["headers"].items() if k.lower() != "content-length"}
    asked = ", ".join(sorted(name.lower() for name in sent))  # a browser sends these names

    def preflight(origin: str) -> httpx.Response:
        return tenant.blobs.options(
            url,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": asked,
            },
        )

    allowed = preflight(APP_ORIGIN)
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "PUT" in allowed.headers["access-control-allow-methods"]
    refused = preflight(EVIL_ORIGIN)
    assert "access-control-allow-origin" not in refused.headers, refused.headers

    put = tenant.blobs.put(url, content=CONTENT, headers={**sent, "Origin": APP_ORIGIN})
    assert put.status_code == 200, put.text
    assert put.headers["access-control-allow-origin"] == APP_ORIGIN
    exposed = [h.strip().lower() for h in put.headers["access-control-expose-headers"].split(",")]
    assert "etag" in exposed  # the browser can read the ETag (multipart completes with it)
    assert put.headers["etag"]
    assert tenant.complete(file["id"]).status_code == 200
    assert tenant.download(file["id"]) == CONTENT


def test_a_bucket_without_the_cors_rule_is_reported_at_start_and_in_health(
    localstack: Any, start_broker: Callable[..., BrokerServer]
) -> None:
    """The issue's finding: a bucket lacking CORS used to look healthy while every browser
    upload failed. Now the master says so at start, and health says so (still 200)."""
    bucket = S3Bucket(name=localstack.new_bucket(), client=localstack.client())
    settings = {**s3_env(localstack.endpoint, bucket.name), "BROKER_CORS_ORIGINS": APP_ORIGIN}
    server = start_broker(s3=bucket, **settings)
    assert "storage CORS missing: the bucket has no CORS rules" in server.stderr()
    health = httpx.get(f"{server.url}/v1/health", timeout=10, trust_env=False)
    assert health.status_code == 200
    assert health.json()["checks"]["storage_cors"] == "missing: the bucket has no CORS rules"


# -- 5. storage outage --------------------------------------------------------------------


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)


class StorageOutage:
    """A loopback port that stands for S3's endpoint: closed (connection refused) until
    ``restore()`` forwards it byte for byte to the real peer (so signed Host headers hold)."""

    def __init__(self, target: str) -> None:
        url = httpx.URL(target)
        assert url.host == LOOPBACK
        self.target = (LOOPBACK, url.port or 80)
        self.endpoint = f"http://{LOOPBACK}:{free_port()}"
        self._server: socketserver.ThreadingTCPServer | None = None

    def restore(self) -> None:
        target = self.target

        class Forward(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with socket.create_connection(target) as upstream:
                    back = threading.Thread(target=_pump, args=(upstream, self.request))
                    back.start()
                    _pump(self.request, upstream)
                    back.join()

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server((LOOPBACK, httpx.URL(self.endpoint).port or 80), Forward)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def outage(localstack: Any) -> Iterator[StorageOutage]:
    down = StorageOutage(localstack.endpoint)
    yield down
    down.close()


def test_storage_outage_answers_503_and_loses_nothing(
    localstack: Any, start_broker: Callable[..., BrokerServer], outage: StorageOutage
) -> None:
    bucket = S3Bucket(name=localstack.new_bucket(), client=localstack.client())
    server = start_broker(healthy=False, s3=bucket, **s3_env(outage.endpoint, bucket.name))
    anonymous = server.client()
    expect_error(anonymous.get("/v1/health"), 503, "storage.unavailable")
    tenant = server.tenant()

    # Declaring only signs URLs (no storage call): it still works.
    declared = tenant.declare_raw(
        name="a.txt", size=len(CONTENT), mime_type="text/plain", sha256=sha256_hex(CONTENT)
    )
    assert declared.status_code == 201, declared.text
    file = declared.json()
    assert file["status"] == "pending"
    assert file["upload"]["url"].startswith(outage.endpoint)

    expect_error(tenant.complete(file["id"]), 503, "storage.unavailable")
    expect_clean(tenant.http.get(f"/v1/files/{file['id']}"), 200)
    expect_clean(tenant.http.get("/v1/buckets/default/files"), 200)
    content = tenant.http.get(f"/v1/files/{file['id']}/content")
    expect_error(content, 409, "upload.not_received")
    expect_error(tenant.http.delete(f"/v1/files/{file['id']}"), 503, "storage.unavailable")
    assert "Traceback" not in server.stderr()

    # S3 answers again: same server, same file, nothing lost. A worker whose breaker opened
    # during the outage probes storage again after BROKER_STORAGE_BREAKER_COOLDOWN (5 s).
    outage.restore()
    restored = time.monotonic()
    while anonymous.get("/v1/health").status_code != 200:
        assert time.monotonic() - restored < 8.0, "storage is back but health stays 503"
        time.sleep(0.2)
    again = tenant.get(file["id"])
    assert (again["status"], again["offset"]) == ("pending", 0)
    tenant.assert_recovers(file, CONTENT)
