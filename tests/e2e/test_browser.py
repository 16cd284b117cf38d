"""A frontend in real headless Chromium, on its own origin, uploading and downloading
through the broker with ``fetch()``: on S3 (LocalStack, its bucket's CORS rule written by
the broker's own ``broker s3 setup`` code) and on the embedded store.

What a browser adds to the HTTP tests: CORS. The page (``http://localhost:<port>``) is
cross-origin to the broker and to storage (``http://127.0.0.1:<port>``), so every call
passes only if the broker's CORS (``BROKER_CORS_ORIGINS``) and the bucket's CORS rule admit
it, with exactly the headers the broker told the page to send. A redirect to another
origin taints the request (``Origin: null``), which no rule admits: the page downloads
through the JSON form of the download (``?redirect=false``) and fetches its URL itself.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from playwright.sync_api import Browser

from broker.storage import S3Storage
from broker.storage.s3_cors import browser_headers, cors_rule
from broker.storage.s3_setup import setup

from .browser import Frontend, chromium, frontend, page_origin
from .conftest import BrokerServer, S3Bucket, running_broker, s3_env, sha256_hex

pytestmark = pytest.mark.e2e

CONTENT = "bytes a browser sent\n"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for every test here."""
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def app_origin() -> Iterator[str]:
    """The frontend's origin: named in BROKER_CORS_ORIGINS and so in the bucket's rule."""
    with page_origin() as origin:
        yield origin


@pytest.fixture(scope="module")
def stranger_origin() -> Iterator[str]:
    """Another page's origin, named nowhere."""
    with page_origin() as origin:
        yield origin


@pytest.fixture(scope="module")
def s3_server(
    tmp_path_factory: pytest.TempPathFactory, localstack: Any, app_origin: str
) -> Iterator[BrokerServer]:
    """The broker on a LocalStack bucket prepared by ``broker s3 setup``'s own code."""
    bucket = S3Bucket(name=localstack.new_bucket(), client=localstack.client())
    storage = S3Storage(
        bucket=bucket.name, endpoint_url=localstack.endpoint, region="us-east-1", clock=time.time
    )
    setup(storage, create=False, cors_origins=(app_origin,))
    env = {**s3_env(localstack.endpoint, bucket.name), "BROKER_CORS_ORIGINS": app_origin}
    base = tmp_path_factory.mktemp("browser-s3")
    with running_broker(base, healthy=True, s3=bucket, **env) as server:
        yield server


@pytest.fixture(scope="module")
def local_server(
    tmp_path_factory: pytest.TempPathFactory, app_origin: str
) -> Iterator[BrokerServer]:
    """The broker on its embedded store (which answers CORS for its blob URLs itself)."""
    base = tmp_path_factory.mktemp("browser-local")
    with running_broker(base, BROKER_CORS_ORIGINS=app_origin) as server:
        yield server


@pytest.fixture(params=["s3", "local"])
def server(request: pytest.FixtureRequest) -> BrokerServer:
    found: BrokerServer = request.getfixturevalue(f"{request.param}_server")
    return found


@pytest.fixture
def app(browser: Browser, app_origin: str) -> Iterator[Frontend]:
    with frontend(browser, app_origin) as opened:
        yield opened


# -- the flow a frontend runs -------------------------------------------------------------


class Session:
    """The page's calls to one broker with one key: what a frontend's code would do."""

    def __init__(self, page: Frontend, server: BrokerServer, key: str) -> None:
        self.page, self.api = page, server.url
        self.auth = {"Authorization": f"Bearer {key}"}

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> dict[str, Any]:
        sent = {**self.auth, **headers}
        data = None
        if body is not None:
            sent["Content-Type"] = "application/json"
            data = json.dumps(body)
        return self.page.fetch(f"{self.api}{path}", method, sent, data)

    def declare(self, content: str) -> dict[str, Any]:
        answer = self.call(
            "POST",
            "/v1/files",
            {
                "name": "note.txt",
                "size": len(content.encode()),
                "mime_type": "text/plain",
                "sha256": sha256_hex(content.encode()),
            },
        )
        assert answer.get("status") == 201, answer
        file: dict[str, Any] = json.loads(answer["text"])
        return file

    def put(self, file: dict[str, Any], content: str) -> dict[str, Any]:
        """PUT to ``upload.url`` with exactly ``upload.headers`` (a browser sets the length)."""
        upload = file["upload"]
        headers = {k: v for k, v in upload["headers"].items() if k.lower() != "content-length"}
        return self.page.fetch(upload["url"], upload["method"], headers, content)

    def upload(self, content: str) -> dict[str, Any]:
        """Declare, PUT, complete: the file as declared (its ``download_url`` is the link)."""
        file = self.declare(content)
        put = self.put(file, content)
        assert put.get("status") == 200, (put, self.page.console)
        assert put["headers"].get("etag"), put  # exposed: a page can complete parts with it
        done = self.call("POST", f"/v1/files/{file['id']}/complete", {})
        assert done.get("status") == 200, done
        assert json.loads(done["text"])["status"] == "complete"
        return file


def _session(page: Frontend, server: BrokerServer) -> Session:
    return Session(page, server, server.new_key(f"t{secrets.token_hex(6)}"))


# -- tests ----------------------------------------------------------------------------------


def test_a_page_uploads_and_downloads_through_the_json_form(
    app: Frontend, server: BrokerServer
) -> None:
    session = _session(app, server)
    file = session.upload(CONTENT)
    for path in (f"/v1/files/{file['id']}/content", file["download_url"][len(server.url) :]):
        answer = session.call("GET", path + "?redirect=false")
        assert answer.get("status") == 200, answer
        signed = json.loads(answer["text"])
        assert set(signed) == {"url", "expires_at"}
        fetched = app.fetch(signed["url"])  # storage's own URL: no key, another origin
        assert fetched.get("status") == 200, (fetched, app.console)
        assert fetched["text"] == CONTENT
    accepted = session.call("GET", f"/v1/files/{file['id']}/content", Accept="application/json")
    assert accepted.get("status") == 200, accepted
    assert app.fetch(json.loads(accepted["text"])["url"]).get("text") == CONTENT


def test_the_redirect_form_fails_cross_origin_on_s3(app: Frontend, s3_server: BrokerServer) -> None:
    """The issue's finding, kept as a fact: fetch() follows the 302 to the bucket with
    ``Origin: null``, which the bucket's rule (rightly) does not admit."""
    session = _session(app, s3_server)
    file = session.upload(CONTENT)
    for path in (f"/v1/files/{file['id']}/content", file["download_url"][len(s3_server.url) :]):
        followed = session.call("GET", path)
        assert "error" in followed, followed
        assert "Failed to fetch" in followed["error"]
    refusals = [line for line in app.console if "blocked by CORS policy" in line]
    assert len(refusals) == 2, app.console
    assert all("redirected from" in line for line in refusals)


def test_storage_refuses_a_page_its_cors_rule_does_not_name(
    browser: Browser, app: Frontend, stranger_origin: str, s3_server: BrokerServer
) -> None:
    """LocalStack enforces the bucket's CORS rule: a page at an origin it does not name can
    neither PUT to a valid signed URL nor read a valid signed download URL."""
    owner = _session(app, s3_server)
    pending = owner.declare(CONTENT)
    done = owner.upload(CONTENT)
    answer = owner.call("GET", f"/v1/files/{done['id']}/content?redirect=false")
    signed_get = json.loads(answer["text"])["url"]
    with frontend(browser, stranger_origin) as stranger:
        refused = Session(stranger, s3_server, "unused").put(pending, CONTENT)
        assert "error" in refused, refused  # the preflight failed: the PUT was never sent
        assert "error" in stranger.fetch(signed_get)
        assert "error" in stranger.fetch(f"{s3_server.url}/v1/health")  # the broker too
        assert any("CORS policy" in line for line in stranger.console), stranger.console
    # Nothing arrived for the file the stranger tried to fill.
    record = json.loads(owner.call("GET", f"/v1/files/{pending['id']}")["text"])
    assert (record["status"], record["offset"]) == ("pending", 0), record


def test_on_the_embedded_store_the_redirect_form_works_too(
    app: Frontend, local_server: BrokerServer
) -> None:
    """Measured, not assumed: there the 302 leads to the broker's own blob URL, on the
    origin the page called, so the request is not tainted and the broker's CORS admits it."""
    session = _session(app, local_server)
    file = session.upload(CONTENT)
    followed = session.call("GET", f"/v1/files/{file['id']}/content")
    assert (followed.get("status"), followed.get("redirected")) == (200, True), followed
    assert followed["text"] == CONTENT


@pytest.mark.parametrize("rule", ["setup", "without If-None-Match"])
def test_a_signed_if_none_match_passes_the_rule_setup_writes(
    app: Frontend, localstack: Any, app_origin: str, rule: str
) -> None:
    """Write-once PUTs sign ``If-None-Match: *``, which is no CORS-safelisted header: a page
    can send it only where the bucket's rule allows it (what ``broker s3 check`` verifies).
    The URL is signed here with boto3, as the broker's write-once uploads sign it."""
    client = boto3.session.Session().client(
        "s3", endpoint_url=localstack.endpoint, config=Config(signature_version="s3v4")
    )  # SigV4, as the broker signs: If-None-Match is one of the signed headers
    bucket = localstack.new_bucket()
    storage = S3Storage(
        bucket=bucket, endpoint_url=localstack.endpoint, region="us-east-1", clock=time.time
    )
    written = cors_rule([app_origin], browser_headers(storage))
    if rule != "setup":
        written["AllowedHeaders"] = [h for h in written["AllowedHeaders"] if h != "If-None-Match"]
    client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [written]})
    url = client.generate_presigned_url(
        "put_object",
        Params={
            "Bucket": bucket,
            "Key": "once.txt",
            "ContentType": "text/plain",
            "IfNoneMatch": "*",
        },
        ExpiresIn=300,
    )
    headers = {"Content-Type": "text/plain", "If-None-Match": "*"}
    first = app.fetch(url, "PUT", headers, CONTENT)
    if rule != "setup":
        assert "error" in first, first  # refused at the preflight: nothing sent
        assert any("blocked by CORS policy" in line for line in app.console), app.console
        return
    assert first.get("status") == 200, (first, app.console)
    again = app.fetch(url, "PUT", headers, "other bytes\n")
    assert "if-none-match" in url.split("X-Amz-SignedHeaders=")[1].split("&")[0]
    assert again.get("status") == 412, again  # storage keeps the first write; the page sees why
    body = client.get_object(Bucket=bucket, Key="once.txt")["Body"].read()
    assert body == CONTENT.encode()
