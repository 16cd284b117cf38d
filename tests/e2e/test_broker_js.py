"""``broker.js`` in real headless Chromium: a page on its own loopback origin imports
``/static/broker.js`` from the broker, holds only a browser token (minted here through
``POST /v1/tokens`` with a ``files:write`` key, as a frontend's backend would), and uploads
through it straight to storage: S3 (LocalStack, the bucket's CORS rule written by
``broker s3 setup``'s code) and the embedded store.

The bucket goes multipart above 5 MiB in 5 MiB parts (S3's minimum), so a multipart file
takes three parts here. Every byte is made in the page, and the file is read back through
the JSON download form (``client.downloadUrl``), in the page and here with the key.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from broker.storage import S3Storage
from broker.storage.s3_setup import setup

from .browser import Frontend, chromium, frontend, page_origin
from .conftest import PROJECT_ROOT, BrokerServer, S3Bucket, running_broker, s3_env, sha256_hex

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
PART = 5 * MiB
BUCKETS = f"""
[buckets.default]
multipart_threshold = {PART}
part_size = {PART}
"""

# Runs in the page: import broker.js from the broker, make `size` random bytes, upload
# them with the token, read them back through the JSON download form. Answers what a
# frontend would see: the file, both SHA-256s, the progress reported, or the BrokerError.
UPLOAD = """
async ([base, tokens, size, options]) => {
  const { BrokerClient } = await import(`${base}/static/broker.js`);
  const bytes = new Uint8Array(size);
  for (let at = 0; at < size; at += 65536) {
    crypto.getRandomValues(bytes.subarray(at, Math.min(size, at + 65536)));
  }
  const hex = async (data) => Array.from(
    new Uint8Array(await crypto.subtle.digest("SHA-256", data)),
    (b) => b.toString(16).padStart(2, "0")).join("");
  const { abortAt, abortAfter, upload: uploadOptions = {}, ...clientOptions } = options;
  let tokensGot = 0;  // getToken hands out `tokens` in turn (the last one again at the end)
  const getToken = async () => tokens[Math.min(tokensGot++, tokens.length - 1)];
  const client = new BrokerClient({ baseUrl: base, getToken,
                                    concurrency: 3, ...clientOptions });
  const controller = new AbortController();
  const blob = new Blob([bytes], { type: "application/octet-stream" });
  Object.assign(window, { lastClient: client, lastBlob: blob, lastSent: await hex(bytes) });
  const progress = [];
  if (abortAfter) setTimeout(() => controller.abort(), abortAfter);
  try {
    const file = await client.upload(blob, {
      name: "random.bin", metadata: { from: "page" }, signal: controller.signal, ...uploadOptions,
      onProgress: ({ loaded, total }) => {
        progress.push([loaded, total]);
        if (abortAt && loaded >= abortAt) controller.abort();
      },
    });
    const { url } = await client.downloadUrl(file.id);
    const back = await (await fetch(url)).arrayBuffer();
    return { file, sent: await hex(bytes), received: await hex(back), progress, tokensGot };
  } catch (error) {
    const { name, code, message, status, requestId } = error;
    return { error: { name, code, message, status, requestId }, progress };
  }
}
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for every test here."""
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def app_origin() -> Iterator[str]:
    """The frontend's origin: in BROKER_CORS_ORIGINS and so in the bucket's rule."""
    with page_origin() as origin:
        yield origin


UPPY_PACKAGES = ("@uppy/core@4.5.3", "@uppy/aws-s3@4.3.2", "esbuild@0.28.2")
UPPY_DIR = PROJECT_ROOT / ".cache" / "uppy-4.5.3"
"""Where the test setup installs Uppy from the npm registry and bundles it (never committed)."""

# Runs in the page: Uppy's own Core and AwsS3 plugin (the bundle), with broker-uppy.js's
# options on top of broker.js and the token; one file of `size` random bytes through it.
UPPY_UPLOAD = """
async ([base, token, size, partSize, cancelAt]) => {
  const { Uppy, AwsS3 } = await import("/uppy.js");
  const { BrokerClient } = await import(`${base}/static/broker.js`);
  const { brokerUppy } = await import(`${base}/static/broker-uppy.js`);
  const bytes = new Uint8Array(size);
  for (let at = 0; at < size; at += 65536) {
    crypto.getRandomValues(bytes.subarray(at, Math.min(size, at + 65536)));
  }
  const hex = async (data) => Array.from(
    new Uint8Array(await crypto.subtle.digest("SHA-256", data)),
    (b) => b.toString(16).padStart(2, "0")).join("");
  const client = new BrokerClient({ baseUrl: base, token });
  const options = brokerUppy(client, { multipartThreshold: partSize, partSize });
  const uppy = new Uppy().use(AwsS3, options);
  uppy.addFile({ name: "uppy.bin", type: "application/octet-stream",
                 data: new Blob([bytes], { type: "application/octet-stream" }) });
  if (cancelAt) { // the user cancels once `cancelAt` bytes are up
    uppy.on("upload-progress", (f, { bytesUploaded }) => {
      if (bytesUploaded >= cancelAt) uppy.cancelAll();
    });
    const cancelled = new Promise((resolve) => uppy.on("cancel-all", () => resolve("cancelled")));
    return { outcome: await Promise.race([uppy.upload().then(() => "finished"), cancelled]) };
  }
  const result = await uppy.upload();
  const file = result.successful?.[0]?.response?.body?.file;
  if (!file) return { error: (result.failed ?? []).map((f) => String(f.error)).join("; ") };
  const { url } = await client.downloadUrl(file.id);
  const back = await (await fetch(url)).arrayBuffer();
  return { file, sent: await hex(bytes), received: await hex(back) };
}
"""


@pytest.fixture(scope="module")
def uppy_bundle() -> bytes:
    """Uppy 4 from the npm registry, bundled into one ES module by esbuild (once, cached)."""
    bundle = UPPY_DIR / "uppy.js"
    if not bundle.exists():
        UPPY_DIR.mkdir(parents=True, exist_ok=True)
        npm = ["npm", "install", "--no-audit", "--no-fund", "--silent", *UPPY_PACKAGES]
        subprocess.run(npm, cwd=UPPY_DIR, check=True, timeout=600)
        entry = UPPY_DIR / "entry.js"
        entry.write_text(
            'export { default as Uppy } from "@uppy/core";\n'
            'export { default as AwsS3 } from "@uppy/aws-s3";\n'
        )
        esbuild = UPPY_DIR / "node_modules" / ".bin" / "esbuild"
        command = [str(esbuild), "entry.js", "--bundle", "--format=esm", "--outfile=uppy.js"]
        subprocess.run(command, cwd=UPPY_DIR, check=True, timeout=120)
    return bundle.read_bytes()


@pytest.fixture(scope="module")
def buckets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("buckets") / "buckets.toml"
    path.write_text(BUCKETS)
    return path


@pytest.fixture(scope="module")
def s3_server(
    tmp_path_factory: pytest.TempPathFactory, localstack: Any, app_origin: str, buckets: Path
) -> Iterator[BrokerServer]:
    """The broker on a LocalStack bucket prepared by ``broker s3 setup``'s own code."""
    bucket = S3Bucket(name=localstack.new_bucket(), client=localstack.client())
    storage = S3Storage(
        bucket=bucket.name, endpoint_url=localstack.endpoint, region="us-east-1", clock=time.time
    )
    setup(storage, create=False, cors_origins=(app_origin,))
    env = {
        **s3_env(localstack.endpoint, bucket.name),
        "BROKER_CORS_ORIGINS": app_origin,
        "BROKER_BUCKETS": str(buckets),
    }
    with running_broker(tmp_path_factory.mktemp("js-s3"), healthy=True, s3=bucket, **env) as server:
        yield server


@pytest.fixture(scope="module")
def local_server(
    tmp_path_factory: pytest.TempPathFactory, app_origin: str, buckets: Path
) -> Iterator[BrokerServer]:
    """The broker on its embedded store."""
    base = tmp_path_factory.mktemp("js-local")
    with running_broker(
        base, BROKER_CORS_ORIGINS=app_origin, BROKER_BUCKETS=str(buckets)
    ) as server:
        yield server


@pytest.fixture(params=["s3", "local"])
def server(request: pytest.FixtureRequest) -> BrokerServer:
    found: BrokerServer = request.getfixturevalue(f"{request.param}_server")
    return found


@pytest.fixture
def app(browser: Browser, app_origin: str) -> Iterator[Frontend]:
    with frontend(browser, app_origin) as opened:
        yield opened


class Backend:
    """A frontend's backend: a tenant's ``files:write`` key that mints browser tokens."""

    def __init__(self, server: BrokerServer, origin: str) -> None:
        self.server, self.origin = server, origin
        self.tenant = f"t{secrets.token_hex(6)}"
        self.key = server.create_key(self.tenant, scopes=["files:read", "files:write"])
        self.http: httpx.Client = server.client(self.key["key"])

    def token(self, **limits: Any) -> str:
        answer = self.http.post(
            "/v1/tokens", json={"bucket": "default", "origin": self.origin, **limits}
        )
        assert answer.status_code == 201, answer.text
        token: str = answer.json()["token"]
        return token

    def files(self) -> list[dict[str, Any]]:
        """Every file of the tenant (newest first)."""
        answer = self.http.get("/v1/buckets/default/files", params={"limit": 1000})
        assert answer.status_code == 200, answer.text
        files: list[dict[str, Any]] = answer.json()["data"]
        return files

    def download(self, file_id: str) -> bytes:
        """The file's bytes as the key reads them (the JSON form, then storage's URL)."""
        signed = self.http.get(f"/v1/files/{file_id}/content", params={"redirect": "false"})
        assert signed.status_code == 200, signed.text
        return httpx.get(signed.json()["url"], timeout=30).content


def _upload(
    page: Frontend, server: BrokerServer, token: str | list[str], size: int, **options: Any
) -> Any:
    tokens = [token] if isinstance(token, str) else token
    return page.page.evaluate(UPLOAD, [server.url, tokens, size, options])


def _stored_objects(server: BrokerServer, tenant: str) -> list[str]:
    """What storage holds for ``tenant``: S3's objects and open multipart uploads, or the
    embedded store's files (objects, parts, temporary files)."""
    if server.s3 is not None:
        s3, bucket, prefix = server.s3.client, server.s3.name, f"{tenant}/"
        objects = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
        return [o["Key"] for o in objects] + [f"upload {u['Key']}" for u in uploads]
    blobs = server.data_dir / "blobs"  # objects/<tenant>/…, and any upload's parts or temp
    held = [*(blobs / "objects" / tenant).rglob("*"), *(blobs / "uploads").rglob("*")]
    return [str(p) for p in [*held, *(blobs / "tmp").rglob("*")] if p.is_file()]


# -- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [100_000, 2 * PART + 12_345], ids=["small", "multipart"])
def test_a_page_with_a_token_uploads_byte_identical_files(
    app: Frontend, server: BrokerServer, app_origin: str, size: int, tmp_path: Path
) -> None:
    backend = Backend(server, app_origin)
    puts: list[str] = []
    app.page.on("request", lambda r: puts.append(r.url) if r.method == "PUT" else None)
    result = _upload(app, server, backend.token(), size, upload={"sha256": size < PART})
    assert "error" not in result, (result.get("error"), app.console)
    file = result["file"]
    assert (file["status"], file["size"], file["name"]) == ("complete", size, "random.bin")
    assert file["metadata"]["from"] == "page"
    assert file["sha256"] == (result["sent"] if size < PART else None)  # crypto.subtle's
    assert result["received"] == result["sent"]  # read back in the page
    assert sha256_hex(backend.download(file["id"])) == result["sent"]  # and with the key
    progress = result["progress"]
    assert progress[-1] == [size, size]
    assert all(total == size and 0 <= loaded <= size for loaded, total in progress)
    assert len(puts) == -(-size // PART)  # one PUT, or one per 5 MiB part
    assert not any(url.startswith(f"{server.url}/v1/files") for url in puts)
    if size > PART:
        assert len(progress) > len(puts)  # reported while the parts went up
    app.page.screenshot(path=tmp_path / "page.png")


def test_a_file_over_the_token_s_limit_is_refused_before_any_byte_is_sent(
    app: Frontend, server: BrokerServer, app_origin: str
) -> None:
    backend = Backend(server, app_origin)
    sent: list[str] = []
    app.page.on("request", lambda request: sent.append(f"{request.method} {request.url}"))
    result = _upload(app, server, backend.token(max_size=4096), 4097, retries=0)
    error = result.get("error")
    assert error is not None, result
    assert (error["name"], error["code"], error["status"]) == (
        "BrokerError",
        "upload.size_exceeds_limit",
        413,
    )
    assert error["requestId"].startswith("req_")
    assert [line for line in sent if not line.endswith("/static/broker.js")] == [
        f"POST {server.url}/v1/files"
    ]  # the declaration only: no PUT anywhere
    assert backend.files() == []
    assert _stored_objects(server, backend.tenant) == []


def test_a_page_from_another_origin_is_refused(
    browser: Browser, server: BrokerServer, app_origin: str
) -> None:
    """broker.js itself may be imported from anywhere; the API answers only the origins in
    BROKER_CORS_ORIGINS, so the stranger's declaration never leaves its browser."""
    backend = Backend(server, app_origin)
    with page_origin() as stranger_origin, frontend(browser, stranger_origin) as stranger:
        result = _upload(stranger, server, backend.token(), 1000, retries=1, retryDelay=10)
        error = result.get("error")
        assert error is not None, result
        assert (error["code"], error["status"]) == ("network.failed", 0)
        assert any("blocked by CORS policy" in line for line in stranger.console)
    assert backend.files() == []


def test_abort_mid_upload_leaves_no_pending_file(
    app: Frontend, server: BrokerServer, app_origin: str
) -> None:
    backend = Backend(server, app_origin)
    size = 2 * PART + 1
    result = _upload(app, server, backend.token(), size, abortAt=MiB, concurrency=1)
    error = result.get("error")
    assert error is not None, result
    assert (error["name"], error["code"]) == ("BrokerError", "upload.aborted")
    assert result["progress"][-1][0] < size
    files = backend.files()
    assert [f["status"] for f in files] == ["aborted"], files
    assert _stored_objects(server, backend.tenant) == []


def test_abort_while_the_declaration_is_in_flight_leaves_no_pending_file(
    app: Frontend, server: BrokerServer, app_origin: str
) -> None:
    """The broker answers the declaration late (held here for a second); the page aborts
    meanwhile. The file the broker made is aborted, not left pending."""
    backend = Backend(server, app_origin)

    def answer_late(route: Any) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        answer = route.fetch()
        time.sleep(1)
        route.fulfill(response=answer)

    app.page.route(f"{server.url}/v1/files", answer_late)
    result = _upload(app, server, backend.token(), 1000, abortAfter=200)
    assert result.get("error", {}).get("code") == "upload.aborted", result
    assert [f["status"] for f in backend.files()] == ["aborted"]


def test_a_failed_part_is_retried_then_resumed_from_what_storage_holds(
    app: Frontend, server: BrokerServer, app_origin: str
) -> None:
    """Parts go one at a time here; the network drops the 2nd and 3rd PUT (part 2 and its
    retry). The round fails, the client asks the broker what storage holds (part 1), has
    the missing parts signed again and sends only those: part 1 goes up once."""
    backend = Backend(server, app_origin)
    calls: list[str] = []
    app.page.on("request", lambda r: calls.append(f"{r.method} {r.url.split('?')[0]}"))
    puts = 0

    def drop_second_and_third_put(route: Any) -> None:
        nonlocal puts
        if route.request.method == "PUT":
            puts += 1
            if puts in (2, 3):
                route.abort("connectionreset")
                return
        route.continue_()

    app.page.route("**/*", drop_second_and_third_put)
    size = 2 * PART + 7
    result = _upload(app, server, backend.token(), size, concurrency=1, retries=1, retryDelay=10)
    assert "error" not in result, (result.get("error"), app.console)
    assert result["received"] == result["sent"]
    assert sha256_hex(backend.download(result["file"]["id"])) == result["sent"]
    assert puts == 5  # 1, 2 (dropped), 2 again (dropped), then after the resume 2 and 3
    file_url = f"{server.url}/v1/files/{result['file']['id']}"
    api = [c for c in calls if c.startswith(("GET", "POST")) and "/v1/files" in c]
    assert api == [
        f"POST {server.url}/v1/files",
        f"GET {file_url}",  # parts_received: part 1
        f"POST {file_url}/parts",  # fresh URLs for parts 2 and 3
        f"POST {file_url}/complete",
        f"GET {file_url}/content",  # client.downloadUrl
    ]


def test_an_expired_token_is_renewed_through_get_token(
    app: Frontend, server: BrokerServer, app_origin: str
) -> None:
    backend = Backend(server, app_origin)
    expired = backend.token(ttl=1)
    time.sleep(1.5)
    result = _upload(app, server, [expired, backend.token()], 1000, retries=0)
    assert "error" not in result, (result.get("error"), app.console)
    assert result["tokensGot"] == 2  # the first answered 401 auth.expired_key
    assert result["received"] == result["sent"]


def test_an_upload_that_failed_is_resumed_later_by_its_file_id(
    app: Frontend, server: BrokerServer, app_origin: str
) -> None:
    """The network dies after the first part (no retries): the upload rejects and the file
    stays pending with part 1 stored. Later the page calls ``upload`` again with the same
    blob and ``fileId``: only parts 2 and 3 go up."""
    backend = Backend(server, app_origin)
    puts = 0

    def count_puts(route: Any) -> None:
        nonlocal puts
        if route.request.method == "PUT":
            puts += 1
            if puts > 1:
                route.abort("internetdisconnected")
                return
        route.continue_()

    app.page.route("**/*", count_puts)
    size = 2 * PART + 99
    failed = _upload(app, server, backend.token(), size, concurrency=1, retries=0)
    assert failed.get("error", {}).get("code") == "network.failed", failed
    [pending] = backend.files()
    assert (pending["status"], puts) == ("pending", 2)
    app.page.unroute("**/*")
    app.page.route("**/*", count_puts)
    puts = -100  # let every PUT through now, still counting
    file = app.page.evaluate(
        "([id]) => window.lastClient.upload(window.lastBlob, { fileId: id })", [pending["id"]]
    )
    assert (file["id"], file["status"]) == (pending["id"], "complete")
    assert puts == -98  # parts 2 and 3 only
    assert sha256_hex(backend.download(file["id"])) == app.page.evaluate("window.lastSent")


@pytest.mark.parametrize("size", [100_000, 2 * PART + 4_321], ids=["small", "multipart"])
def test_uppy_s_own_s3_plugin_uploads_through_the_broker(
    app: Frontend, server: BrokerServer, app_origin: str, uppy_bundle: bytes, size: int
) -> None:
    """``uppy.use(AwsS3, brokerUppy(client))``: a small file through getUploadParameters
    (completed after its PUT), a large one in parts that Uppy cuts and sends itself."""
    app.page.route(
        f"{app_origin}/uppy.js",
        lambda route: route.fulfill(body=uppy_bundle, content_type="text/javascript"),
    )
    backend = Backend(server, app_origin)
    puts: list[str] = []
    declared: list[dict[str, Any]] = []
    app.page.on("request", lambda r: puts.append(r.url) if r.method == "PUT" else None)

    def note_declaration(request: Any) -> None:
        if (request.method, request.url) == ("POST", f"{server.url}/v1/files"):
            declared.append(request.post_data_json)

    app.page.on("request", note_declaration)
    result = app.page.evaluate(UPPY_UPLOAD, [server.url, backend.token(), size, PART, 0])
    assert "error" not in result, (result.get("error"), app.console)
    file = result["file"]
    assert (file["status"], file["size"], file["name"]) == ("complete", size, "uppy.bin")
    assert result["received"] == result["sent"]
    assert sha256_hex(backend.download(file["id"])) == result["sent"]
    assert len(puts) == -(-size // PART)
    assert [d.get("multipart", False) for d in declared] == [size > PART]  # whole when small


def test_cancelling_in_uppy_aborts_the_file_at_the_broker(
    app: Frontend, server: BrokerServer, app_origin: str, uppy_bundle: bytes
) -> None:
    """``uppy.cancelAll()`` mid-upload: Uppy calls abortMultipartUpload, the file is
    aborted at the broker and storage keeps none of its parts."""
    app.page.route(
        f"{app_origin}/uppy.js",
        lambda route: route.fulfill(body=uppy_bundle, content_type="text/javascript"),
    )
    backend = Backend(server, app_origin)
    result = app.page.evaluate(UPPY_UPLOAD, [server.url, backend.token(), 2 * PART + 1, PART, MiB])
    assert result == {"outcome": "cancelled"}, (result, app.console)
    deadline = time.monotonic() + 10
    while [f["status"] for f in backend.files()] != ["aborted"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [f["status"] for f in backend.files()] == ["aborted"]
    assert _stored_objects(server, backend.tenant) == []


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerServer]:
    """The broker with its demo page on (the page is on the broker's own origin)."""
    with running_broker(tmp_path_factory.mktemp("js-demo"), BROKER_DEMO="1") as server:
        yield server


DROP = """
([names, texts]) => {
  const files = new DataTransfer();
  names.forEach((name, i) => files.items.add(new File([texts[i]], name, { type: "text/plain" })));
  document.getElementById("drop").dispatchEvent(
    new DragEvent("drop", { dataTransfer: files, bubbles: true, cancelable: true }));
}
"""


def test_the_demo_page_uploads_two_dropped_files(
    browser: Browser, demo_server: BrokerServer, tmp_path: Path
) -> None:
    """Dropped on the page: two progress bars, then two download links to the same bytes;
    the page held a token from the demo's own route, never a key."""
    texts = ["first dropped file\n", "second, a little longer, dropped file\n" * 100]
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{demo_server.url}/demo")
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.wait_for_selector("#drop[data-ready=true]", timeout=10000)
        page.evaluate(DROP, [["one.txt", "two.txt"], texts])
        page.wait_for_function(
            "document.querySelectorAll('#done a, #progress .error').length === 2", timeout=15000
        )
        assert page.locator(".error").count() == 0, (page.inner_text("#progress"), console)
        assert page.locator("#progress progress").count() == 2
        links = page.eval_on_selector_all(
            "#done a", "links => links.map(a => [a.textContent, a.href])"
        )
        page.screenshot(path=tmp_path / "demo.png")
    finally:
        context.close()
    got = {label.split(" ")[0]: httpx.get(url, timeout=10).text for label, url in links}
    assert got == {"one.txt": texts[0], "two.txt": texts[1]}
