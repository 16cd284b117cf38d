"""Benchmark uploads from real Chromium: ``broker.js`` against Uppy's own S3 plugin.

Run from the project root::

    .venv/bin/python bench/browser.py [--storage local|s3] [--small 200] [--small-kib 64]
                                      [--large-mib 256] [--rounds 4] [--concurrency 6]

One broker under gunicorn (the broker's own settings through ``bench/gunicorn_conf.py``:
gthread, 2 workers; ``BROKER_RATE_LIMIT=off``, quotas off), on the embedded store in a
temporary data directory, or with ``--storage s3`` on a LocalStack bucket (started here,
signature validation on) whose CORS rule is written by ``broker s3 setup``'s own code. A
page is served from another loopback origin (``http://localhost:<port>``, in
``BROKER_CORS_ORIGINS``); headless Chromium (Debian's ``/usr/bin/chromium``, through
Playwright for Python, as ``tests/e2e/browser.py``) opens it, makes the workload once (``--small``
files of ``--small-kib`` KiB and one of ``--large-mib`` MiB, random bytes, each hashed
with ``crypto.subtle``) and uploads the very same Blobs through two targets:

- ``broker.js``: ``/static/broker.js``'s ``BrokerClient.upload``, ``--concurrency`` files
  at once (the small files) and ``concurrency: --concurrency`` parts at once (the large one);
- ``Uppy``: ``@uppy/core`` 4.5.3 with ``@uppy/aws-s3`` (``limit: --concurrency``, its
  default 6) and ``/static/broker-uppy.js``'s options over the same client, all files of
  the batch added, then ``uppy.upload()`` timed; the bucket's ``multipart_threshold`` and
  ``part_size`` (``GET /v1/buckets``) passed to the adapter.

Rounds alternate the order (broker.js then Uppy, then Uppy then broker.js, ...), each with
a fresh browser token per batch. Each batch is timed in the page (``performance.now()``
around the whole job: declare, PUT, complete, for every file); the server's CPU time
(gunicorn master and workers, user + system, from ``/proc``), LocalStack's with ``--storage
s3``, and the number of requests gunicorn logged are read before and after. Every batch is
checked (all files complete, with the right sizes, at the broker too; bytes downloaded and
hashed in each target's first round) and deleted before the next, so a broken run prints
no number. Exit status 0 whatever the ratios say, 1 when broken, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import http.server
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.create import (  # the same servers, HTTP helper and temp dir as create.py
    LOOPBACK,
    BenchError,
    Reply,
    Server,
    call,
    free_port,
    mint_key,
    positive,
    run_main,
    say,
    server_env,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
KiB = 1024
MiB = 1024 * KiB
MB = 1_000_000  # throughput in decimal MB/s
GOAL = 1.0  # broker.js over Uppy, files/s and MB/s

# The browser as tests/e2e/browser.py launches it: Debian's Chromium, loopback only.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Uppy as tests/e2e/test_broker_js.py bundles it (the same cache directory: built once).
UPPY_PACKAGES = ("@uppy/core@4.5.3", "@uppy/aws-s3@4.3.2", "esbuild@0.28.2")
UPPY_DIR = PROJECT_ROOT / ".cache" / "uppy-4.5.3"
LOCALSTACK_PYTHON = PROJECT_ROOT / ".cache" / "localstack-venv" / "bin" / "python"
LOCALSTACK_TIMEOUT = 90.0

LIMITS_OFF = {
    "BROKER_RATE_LIMIT": "off",
    "BROKER_QUOTA_PENDING_FILES": "off",
    "BROKER_QUOTA_PENDING_BYTES": "off",
}
S3_CREDENTIALS = {  # LocalStack takes any key id with the secret "test"
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}

# -- the page -------------------------------------------------------------------------------

PAGE = b"""<!doctype html>
<meta charset="utf-8"><title>broker.js vs Uppy</title>
<p>bench/browser.py</p>
"""

# Once per run: the workload, kept in the page so both targets send the very same Blobs.
MAKE_WORKLOAD = """
async ([count, smallSize, largeSize]) => {
  const random = (size) => {
    const bytes = new Uint8Array(size);
    for (let at = 0; at < size; at += 65536) {
      crypto.getRandomValues(bytes.subarray(at, Math.min(size, at + 65536)));
    }
    return bytes;
  };
  const hex = async (data) => Array.from(
    new Uint8Array(await crypto.subtle.digest("SHA-256", data)),
    (b) => b.toString(16).padStart(2, "0")).join("");
  const type = "application/octet-stream";
  const small = [], smallSha = [];
  for (let i = 0; i < count; i++) {
    const bytes = random(smallSize);
    small.push(new Blob([bytes], { type }));
    smallSha.push(await hex(bytes));
  }
  const bytes = random(largeSize);
  const large = new Blob([bytes], { type });
  const largeSha = await hex(bytes);
  window.workload = { small, large: [large], warmup: small.slice(0, 12) };
  return { smallSha, largeSha: [largeSha] };
}
"""

# One batch through broker.js: `concurrency` files at once, each with `concurrency` parts.
BROKER_JS = """
async ([base, token, batch, tag, concurrency]) => {
  const { BrokerClient } = await import(`${base}/static/broker.js`);
  const blobs = window.workload[batch];
  const client = new BrokerClient({ baseUrl: base, token, concurrency });
  const files = new Array(blobs.length);
  const queue = blobs.map((blob, i) => i);
  const worker = async () => {
    while (queue.length) {
      const i = queue.shift();
      files[i] = await client.upload(blobs[i], { name: `${tag}-${i}.bin` });
    }
  };
  const started = performance.now();
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, blobs.length) }, worker));
  } catch (error) {
    return { error: `${error.name} ${error.code}: ${error.message}` };
  }
  const elapsed = performance.now() - started;
  const answered = files.map(({ id, status, size, name }) => ({ id, status, size, name }));
  return { elapsed, files: answered };
}
"""

# The same batch through Uppy's own S3 plugin with broker-uppy.js's options.
UPPY = """
async ([base, token, batch, tag, concurrency, multipartThreshold, partSize]) => {
  const { Uppy, AwsS3 } = await import("/uppy.js");
  const { BrokerClient } = await import(`${base}/static/broker.js`);
  const { brokerUppy } = await import(`${base}/static/broker-uppy.js`);
  const blobs = window.workload[batch];
  const client = new BrokerClient({ baseUrl: base, token, concurrency });
  const options = brokerUppy(client, { multipartThreshold, partSize });
  const uppy = new Uppy().use(AwsS3, { ...options, limit: concurrency });
  const ids = blobs.map((blob, i) => uppy.addFile({
    name: `${tag}-${i}.bin`, type: "application/octet-stream", data: blob }));
  const started = performance.now();
  const result = await uppy.upload();
  const elapsed = performance.now() - started;
  const failed = (result?.failed ?? []).map((f) => `${f.name}: ${f.error}`);
  if (failed.length) return { error: failed.slice(0, 5).join("; ") };
  const byId = new Map((result?.successful ?? []).map((f) => [f.id, f]));
  const files = ids.map((id) => {
    const file = byId.get(id)?.response?.body?.file;
    return file ? { id: file.id, status: file.status, size: file.size, name: file.name } : null;
  });
  uppy.destroy();
  return { elapsed, files };
}
"""


class _PageHandler(http.server.BaseHTTPRequestHandler):
    """``/`` the empty page, ``/uppy.js`` the bundle: nothing else."""

    bundle = b""

    def do_GET(self) -> None:
        if self.path == "/uppy.js":
            body, kind = self.bundle, "text/javascript"
        elif self.path == "/":
            body, kind = PAGE, "text/html; charset=utf-8"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@contextlib.contextmanager
def page_origin(bundle: bytes) -> Iterator[str]:
    """Serve the page on loopback; yield its origin, ``http://localhost:<port>`` (another
    host than the broker's and storage's 127.0.0.1: every call is cross-origin)."""
    handler = type("PageHandler", (_PageHandler,), {"bundle": bundle})
    server = http.server.ThreadingHTTPServer((LOOPBACK, free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def uppy_bundle() -> bytes:
    """Uppy 4 from the npm registry bundled by esbuild, as the browser tests build it (once,
    into the same ``.cache`` directory, never committed)."""
    bundle = UPPY_DIR / "uppy.js"
    if not bundle.exists():
        say(f"building the Uppy bundle into {UPPY_DIR} (npm install + esbuild, once)")
        UPPY_DIR.mkdir(parents=True, exist_ok=True)
        npm = ["npm", "install", "--no-audit", "--no-fund", "--silent", *UPPY_PACKAGES]
        subprocess.run(npm, cwd=UPPY_DIR, check=True, timeout=600)
        (UPPY_DIR / "entry.js").write_text(
            'export { default as Uppy } from "@uppy/core";\n'
            'export { default as AwsS3 } from "@uppy/aws-s3";\n'
        )
        esbuild = UPPY_DIR / "node_modules" / ".bin" / "esbuild"
        command = [str(esbuild), "entry.js", "--bundle", "--format=esm", "--outfile=uppy.js"]
        subprocess.run(command, cwd=UPPY_DIR, check=True, timeout=120)
    return bundle.read_bytes()


def download_sha256(url: str) -> tuple[int, str, int]:
    """GET ``url`` (loopback only), hashing it as it streams: (status, hex SHA-256, bytes)."""
    parts = urlsplit(url)
    if parts.hostname != LOOPBACK or parts.port is None:
        raise BenchError(f"refusing to download from {url}: not on {LOOPBACK}")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn = http.client.HTTPConnection(LOOPBACK, parts.port, timeout=60)
    hasher, count = hashlib.sha256(), 0
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        while chunk := response.read(MiB):
            hasher.update(chunk)
            count += len(chunk)
    finally:
        conn.close()
    return response.status, hasher.hexdigest(), count


# -- processes' CPU -------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after ``(comm)``: state is [0], ppid [1], utime [11],
    stime [12]."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree_cpu_seconds(root: int) -> float:
    """CPU time (user + system) of ``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(
                    int(entry.name)
                )
    ticks, todo = 0, [root]
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = _stat_fields(pid)
            ticks += int(fields[11]) + int(fields[12])
        todo += children.get(pid, [])
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_times() -> tuple[int, int]:
    """(idle + iowait, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return values[3] + values[4], sum(values)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- LocalStack ------------------------------------------------------------------------------


@dataclass
class LocalStack:
    endpoint: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, 9)
                self.proc.wait()


def start_localstack(workdir: Path) -> LocalStack:
    """LocalStack's S3 on a free loopback port, signature validation on, as the tests'
    ``localstack`` fixture starts it (installed by scripts/localstack.sh, once)."""
    subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "localstack.sh")], check=True)
    root = workdir / "localstack"
    root.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "AWS_"))}
    env.update(
        GATEWAY_SERVER="hypercorn",
        GATEWAY_LISTEN=f"{LOOPBACK}:{port}",
        SERVICES="s3",
        DNS_ADDRESS="0",
        S3_SKIP_SIGNATURE_VALIDATION="0",
        LOCALSTACK_TELEMETRY_DISABLED="1",
        DISABLE_EVENTS="1",
        FILESYSTEM_ROOT=str(root),
        TMPDIR=str(root),
    )
    with (root / "localstack.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(LOCALSTACK_PYTHON), "-m", "localstack.runtime.main"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack = LocalStack(f"http://{LOOPBACK}:{port}", proc)
    deadline = time.monotonic() + LOCALSTACK_TIMEOUT
    while True:
        with contextlib.suppress(OSError, ValueError):
            health = call(port, "GET", "/_localstack/health", timeout=2).body or {}
            if health.get("services", {}).get("s3") in ("available", "running"):
                return stack
        if proc.poll() is not None or time.monotonic() > deadline:
            stack.stop()
            tail = (root / "localstack.log").read_text(errors="replace")[-3000:]
            raise BenchError(f"LocalStack did not start:\n{tail}")
        time.sleep(0.3)


def prepare_bucket(endpoint: str, origin: str) -> str:
    """A fresh bucket with the CORS rule (and lifecycle) of ``broker s3 setup``'s code."""
    from broker.storage import S3Storage
    from broker.storage.s3_setup import setup

    name = f"bench-{secrets.token_hex(4)}"
    saved = {k: os.environ.get(k) for k in S3_CREDENTIALS}
    os.environ.update(S3_CREDENTIALS)
    try:
        storage = S3Storage(bucket=name, endpoint_url=endpoint, region="us-east-1", clock=time.time)
        storage.connection.client.create_bucket(Bucket=name)
        for line in setup(storage, create=False, cors_origins=(origin,)):
            say(f"         s3 setup: {line}")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return name


# -- the broker -------------------------------------------------------------------------------


def start_broker(workdir: Path, admin_key: str, origin: str, s3: tuple[str, str] | None) -> Server:
    extra = {"BROKER_ADMIN_KEY": admin_key, "BROKER_CORS_ORIGINS": origin, **LIMITS_OFF}
    if s3 is not None:
        endpoint, bucket = s3
        extra.update(
            BROKER_STORAGE="s3",
            BROKER_S3_BUCKET=bucket,
            BROKER_S3_ENDPOINT_URL=endpoint,
            BROKER_S3_REGION="us-east-1",
            **S3_CREDENTIALS,
        )
    home = workdir / "broker"
    server = Server("broker", "wsgi:app", PROJECT_ROOT, home, server_env(home, extra))
    server.start()
    server.wait_ready("/v1/health", lambda reply: reply.status == 200)
    say(f"         gunicorn: {server.served_code()}")
    return server


@dataclass
class Api:
    """The frontend's backend: a tenant key that mints tokens, checks and deletes files."""

    server: Server
    key: str
    origin: str

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Reply:
        headers = {"Authorization": f"Bearer {self.key}"}
        return call(self.server.port, method, path, headers=headers, body=body)

    def token(self) -> str:
        reply = self.request(
            "POST", "/v1/tokens", {"bucket": "default", "origin": self.origin, "ttl": 3600}
        )
        if reply.status != 201 or not isinstance(reply.body, dict):
            raise BenchError(f"POST /v1/tokens answered {reply.describe()}")
        token: str = reply.body["token"]
        return token

    def bucket_policy(self) -> tuple[int, int]:
        """The default bucket's ``multipart_threshold`` and ``part_size``."""
        reply = self.request("GET", "/v1/buckets")
        found = [b for b in (reply.body or {}).get("data", []) if b.get("name") == "default"]
        if reply.status != 200 or not found:
            raise BenchError(f"GET /v1/buckets answered {reply.describe()}")
        return int(found[0]["multipart_threshold"]), int(found[0]["part_size"])


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Batch:
    name: str  # "small" or "large"
    sizes: list[int]
    sha256: list[str]

    @property
    def total(self) -> int:
        return sum(self.sizes)


@dataclass
class Target:
    name: str
    script: str
    extra: Callable[[], list[Any]] = list  # arguments after the common ones
    checked: set[str] = field(default_factory=set)  # batches whose bytes were verified


@dataclass
class Sample:
    seconds: float
    files: int
    size: int
    server_cpu: float
    storage_cpu: float | None
    browser_cpu: float
    requests: int

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.size / MB / self.seconds


def access_lines(server: Server) -> int:
    """Requests gunicorn has logged so far (its access log, one line each)."""
    with server.access_log.open("rb") as log:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: log.read(1 << 20), b""))


def verify(
    api: Api, target: Target, batch: Batch, tag: str, answer: Mapping[str, Any]
) -> list[str]:
    """The run is void unless every file is complete, with its size, in the page and at the
    broker; the bytes are compared in each target's first round of each batch."""
    if "error" in answer:
        raise BenchError(f"{target.name}, {batch.name} batch: the page failed: {answer['error']}")
    files = answer.get("files") or []
    if len(files) != len(batch.sizes) or any(f is None for f in files):
        raise BenchError(
            f"{target.name}, {batch.name}: {sum(f is not None for f in files)} of "
            f"{len(batch.sizes)} files came back"
        )
    ids = [f["id"] for f in files]
    if len(set(ids)) != len(ids):
        raise BenchError(f"{target.name}, {batch.name}: two uploads answered the same file")
    check_bytes = batch.name not in target.checked
    for i, (file, size, sha) in enumerate(zip(files, batch.sizes, batch.sha256, strict=True)):
        expected = ("complete", size, f"{tag}-{i}.bin")
        if (file["status"], file["size"], file["name"]) != expected:
            raise BenchError(f"{target.name}: file {i} is {file}, expected {expected}")
        held = api.request("GET", f"/v1/files/{file['id']}")
        body = held.body if isinstance(held.body, dict) else {}
        if held.status != 200 or (body.get("status"), body.get("size")) != expected[:2]:
            raise BenchError(f"{target.name}: the broker holds {held.describe()}")
        if check_bytes:
            signed = api.request("GET", f"/v1/files/{file['id']}/content?redirect=false")
            if signed.status != 200 or not isinstance(signed.body, dict):
                raise BenchError(f"{target.name}: download URL: {signed.describe()}")
            status, got, count = download_sha256(signed.body["url"])
            if (status, got, count) != (200, sha, size):
                raise BenchError(
                    f"{target.name}: file {i} read back as {status}, {count} bytes, {got}; "
                    f"sent {size} bytes, {sha}"
                )
    target.checked.add(batch.name)
    return ids


def remove(api: Api, ids: Sequence[str]) -> None:
    for file_id in ids:
        reply = api.request("DELETE", f"/v1/files/{file_id}")
        if reply.status != 200:
            raise BenchError(f"DELETE /v1/files/{file_id} answered {reply.describe()}")


def measure_batch(
    page: Any,
    api: Api,
    target: Target,
    batch: Batch,
    tag: str,
    concurrency: int,
    stack: LocalStack | None,
) -> Sample:
    token = api.token()
    server = api.server
    assert server.proc is not None
    time.sleep(0.3)  # let the previous batch's deletes and logs settle
    before = (
        server.cpu_seconds() or 0.0,
        tree_cpu_seconds(stack.proc.pid) if stack else None,
        tree_cpu_seconds(os.getpid()),
        access_lines(server),
    )
    args = [server.url, token, batch.name, tag, concurrency, *target.extra()]
    answer = page.evaluate(target.script, args)
    time.sleep(0.1)  # the last access log line
    after = (
        server.cpu_seconds() or 0.0,
        tree_cpu_seconds(stack.proc.pid) if stack else None,
        tree_cpu_seconds(os.getpid()),
        access_lines(server),
    )
    ids = verify(api, target, batch, tag, answer)
    remove(api, ids)
    server_cpu = after[0] - before[0]
    storage_cpu = after[1] - before[1] if after[1] is not None and before[1] is not None else None
    # Our own tree holds Chromium (under Playwright's driver), gunicorn and LocalStack.
    browser_cpu = after[2] - before[2] - server_cpu - (storage_cpu or 0.0)
    return Sample(
        seconds=float(answer["elapsed"]) / 1000,
        files=len(ids),
        size=batch.total,
        server_cpu=server_cpu,
        storage_cpu=storage_cpu,
        browser_cpu=browser_cpu,
        requests=after[3] - before[3],
    )


# -- the report -------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def describe(batch: Batch, sample: Sample) -> str:
    if batch.name == "small":
        rate = f"{sample.files_per_s:7.1f} files/s"
        cost = (
            f"server {sample.server_cpu * 1000 / sample.files:5.2f} ms/file "
            f"{sample.server_cpu * 1000 / max(1, sample.requests):5.2f} ms/req "
            f"({sample.requests / sample.files:.1f} req/file)"
        )
    else:
        rate = f"{sample.mb_per_s:7.1f} MB/s   "
        mb = sample.size / MB
        cost = f"server {sample.server_cpu * 1000 / mb:5.2f} ms/MB ({sample.requests} requests)"
        if sample.storage_cpu is not None:
            cost += f", LocalStack {sample.storage_cpu * 1000 / mb:5.2f} ms/MB"
    per = sample.files if batch.name == "small" else sample.size / MB
    unit = "file" if batch.name == "small" else "MB"
    if batch.name == "small" and sample.storage_cpu is not None:
        cost += f", LocalStack {sample.storage_cpu * 1000 / sample.files:5.2f} ms/file"
    cost += f", browser {sample.browser_cpu * 1000 / per:5.2f} ms/{unit}"
    return f"{rate}  {sample.seconds:6.2f} s  {cost}"


def report(
    targets: Sequence[Target], batches: Sequence[Batch], results: Mapping[str, list[Sample]]
) -> None:
    js, uppy = targets
    say("")
    say(f"{'target':<10} {'batch':<6} {'median':>15}   CPU per unit (medians; server = gunicorn)")
    for batch in batches:
        for target in targets:
            samples = results[f"{target.name}/{batch.name}"]
            rate = median([s.files_per_s if batch.name == "small" else s.mb_per_s for s in samples])
            unit = "files/s" if batch.name == "small" else "MB/s"
            per = [s.files if batch.name == "small" else s.size / MB for s in samples]
            server = median([s.server_cpu * 1000 / p for s, p in zip(samples, per, strict=True)])
            browser = median([s.browser_cpu * 1000 / p for s, p in zip(samples, per, strict=True)])
            requests = median([s.requests / s.files for s in samples])
            per_unit = "file" if batch.name == "small" else "MB"
            line = (
                f"{target.name:<10} {batch.name:<6} {rate:>7.1f} {unit:<7}   server "
                f"{server:6.2f} ms/{per_unit}, browser {browser:6.2f} ms/{per_unit}"
            )
            stored = [s.storage_cpu for s in samples]
            if all(c is not None for c in stored):
                storage = median([(c or 0.0) * 1000 / p for c, p in zip(stored, per, strict=True)])
                line += f", LocalStack {storage:6.2f} ms/{per_unit}"
            if batch.name == "small":
                line += f"; {requests:.1f} requests/file at gunicorn"
            say(line)
    say("")
    say(
        f"{'ratio broker.js / Uppy':<24} {'median':>6}  goal    verdict  "
        f"{'CPU server':>10} {'browser':>7}  rounds"
    )
    for batch in batches:
        ours = results[f"{js.name}/{batch.name}"]
        theirs = results[f"{uppy.name}/{batch.name}"]
        metric = "files/s" if batch.name == "small" else "MB/s"
        # Per round: the two targets measured back to back.
        ratios = [b.seconds / a.seconds for a, b in zip(ours, theirs, strict=True)]
        value = median(ratios)
        verdict = "PASS" if value >= GOAL else "FAIL"
        rounds = ", ".join(f"{r:.2f}" for r in ratios)
        label = f"{batch.name} ({metric})"
        # The other way round for CPU (Uppy's over broker.js's): above 1, broker.js is cheaper.
        server = median([b.server_cpu for b in theirs]) / max(
            1e-9, median([a.server_cpu for a in ours])
        )
        browser = median([b.browser_cpu for b in theirs]) / max(
            1e-9, median([a.browser_cpu for a in ours])
        )
        say(
            f"{label:<24} {value:6.2f}  >= {GOAL:.1f}  {verdict:<7}  "
            f"{server:10.2f} {browser:7.2f}  {rounds}"
        )
    say(
        "(CPU columns: Uppy's median CPU over broker.js's for the same batch, gunicorn and "
        "browser; above 1.00 broker.js costs less)"
    )


# -- the run ----------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> None:
    from playwright.sync_api import sync_playwright

    small_size = args.small_kib * KiB
    large_size = args.large_mib * MiB
    admin_key = secrets.token_urlsafe(32)
    say(
        f"machine: {os.cpu_count()} CPUs, load average {load_average()}, Python "
        f"{sys.version.split()[0]}"
    )
    say(
        f"load:    {args.small} files of {args.small_kib} KiB, 1 file of {args.large_mib} MiB, "
        f"{args.rounds} rounds, concurrency {args.concurrency}, storage {args.storage}"
    )
    bundle = uppy_bundle()
    with contextlib.ExitStack() as cleanup:
        origin = cleanup.enter_context(page_origin(bundle))
        say(f"page:    {origin}/")
        stack: LocalStack | None = None
        s3: tuple[str, str] | None = None
        if args.storage == "s3":
            stack = start_localstack(workdir)
            cleanup.callback(stack.stop)
            bucket = prepare_bucket(stack.endpoint, origin)
            s3 = (stack.endpoint, bucket)
            say(f"storage: LocalStack {stack.endpoint}, bucket {bucket}")
        else:
            say(f"storage: embedded store in {workdir / 'broker' / 'data'}")
        server = start_broker(workdir, admin_key, origin, s3)
        cleanup.callback(server.stop)
        api = Api(server, mint_key(server, admin_key), origin)
        threshold, part_size = api.bucket_policy()
        say(f"bucket:  default: multipart_threshold {threshold}, part_size {part_size}")
        targets = (
            Target("broker.js", BROKER_JS),
            Target("Uppy", UPPY, lambda: [threshold, part_size]),
        )
        playwright = cleanup.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        cleanup.callback(browser.close)
        say(f"browser: Chromium {browser.version} (headless), Uppy {UPPY_DIR.name}")
        context = browser.new_context()
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.goto(f"{origin}/")
        made = page.evaluate(MAKE_WORKLOAD, [args.small, small_size, large_size])
        batches = (
            Batch("small", [small_size] * args.small, made["smallSha"]),
            Batch("large", [large_size], made["largeSha"]),
        )
        results: dict[str, list[Sample]] = {
            f"{t.name}/{b.name}": [] for t in targets for b in batches
        }
        warmup = Batch("warmup", batches[0].sizes[:12], batches[0].sha256[:12])
        for target in targets:  # unmeasured: first imports, connections, preflight caches
            measure_batch(page, api, target, warmup, f"w-{target.name}", args.concurrency, stack)
        say(f"warm-up: {len(warmup.sizes)} small files through each target, checked, deleted")
        say("measuring (per batch: rate, time in the page, CPU per unit):")
        idle_before = cpu_times()
        for round_index in range(args.rounds):
            order = targets if round_index % 2 == 0 else targets[::-1]
            for batch in batches:
                for target in order:
                    tag = f"r{round_index}-{target.name.replace('.', '')}-{batch.name}"
                    try:
                        sample = measure_batch(
                            page, api, target, batch, tag, args.concurrency, stack
                        )
                    except BenchError as exc:
                        raise BenchError(f"{exc}\n  page console: {console[-10:]}") from exc
                    results[f"{target.name}/{batch.name}"].append(sample)
                    say(
                        f"  round {round_index + 1} {target.name:<10} {batch.name:<6} "
                        f"{describe(batch, sample)}"
                    )
        idle_after = cpu_times()
        idle = (idle_after[0] - idle_before[0]) / max(1, idle_after[1] - idle_before[1])
        say(f"load average now {load_average()}; machine {idle:.0%} idle while measuring")
        report(targets, batches, results)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Uploads from headless Chromium through broker.js and through Uppy's "
        "own S3 plugin (broker-uppy.js), same broker, same store, same run.",
    )
    parser.add_argument(
        "--storage",
        choices=("local", "s3"),
        default="local",
        help="the embedded store (default) or S3 on LocalStack",
    )
    parser.add_argument(
        "--small", type=positive, default=200, help="number of small files (default 200)"
    )
    parser.add_argument(
        "--small-kib", type=positive, default=64, help="size of each small file in KiB (default 64)"
    )
    parser.add_argument(
        "--large-mib",
        type=positive,
        default=256,
        help="size of the large file in MiB (default 256)",
    )
    parser.add_argument(
        "--rounds",
        type=positive,
        default=4,
        help="rounds; the order of the targets alternates (default 4)",
    )
    parser.add_argument(
        "--concurrency",
        type=positive,
        default=6,
        help="files or parts in flight, both targets (default 6: Uppy's "
        "own default limit, and Chromium's connections per host)",
    )
    parser.add_argument(
        "--keep-temp",
        action="store_true",
        help="keep the temporary directory (logs, data) and print its path",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(parse_args(argv), run, "servers and browser")


if __name__ == "__main__":
    sys.exit(main())
