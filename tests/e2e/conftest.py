"""End-to-end fixtures: real gunicorn processes on loopback and small helpers to drive them.

Every server is started exactly as the Procfile would start it (``gunicorn wsgi:app`` with the
broker's gunicorn settings), on a free port of 127.0.0.1, with its own data directory,
admin key and Prometheus multiprocess directory. Nothing here talks to any other host.

- ``broker``: one default server for the whole session (most tests only need a fresh tenant).
- ``start_broker``: a factory for servers with their own settings (bucket policies, worker
  timeout) or that a test may damage (killing workers); stopped when the test ends.
- ``tenant``: a fresh tenant with its own API key on the default server.
- ``s3_broker``: one server for the session in S3 mode, on a fresh bucket of the real
  LocalStack peer (``localstack``, from ``tests/conftest.py``); its tenants also check the
  bucket itself (``Tenant.s3``).

Test modules import the plain helpers (``expect_error``, ``RawConnection``, ...) from here.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT = 20.0
SHUTDOWN_TIMEOUT = 15.0
HTTP_TIMEOUT = 15.0

# Inherited settings that would change where or how the server listens or keeps data (the
# platforms' DATABASE_URL and REDIS_URL are read when the BROKER_ ones are unset)
# (every BROKER_* and AWS_* variable is dropped as well; each test says what it wants, and
# S3-mode servers get throwaway LocalStack credentials from ``s3_env``, never inherited ones).
_DROPPED_ENV = ("PORT", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR", "DATABASE_URL", "REDIS_URL")
_DROPPED_PREFIXES = ("BROKER_", "AWS_")


# -- assertions ---------------------------------------------------------------------------


def expect_error(response: httpx.Response | RawReply, status: int, code: str) -> dict[str, Any]:
    """Assert the contract's error envelope with this status and code; return the body."""
    text = response.text
    assert response.status_code == status, (
        f"expected {status} {code}, got {response.status_code}: {text}"
    )
    assert response.headers["content-type"].startswith("application/json"), text
    assert "<html" not in text.lower()
    assert "Traceback" not in text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "request_id"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    assert body["request_id"], body
    assert response.headers["x-request-id"] == body["request_id"]
    return body


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``, as the API declares checksums."""
    return hashlib.sha256(data).hexdigest()


def _loopback_only(request: httpx.Request) -> None:
    """httpx hook: refuse to send anything anywhere but 127.0.0.1 (signed URLs included)."""
    assert request.url.host == LOOPBACK, f"refusing to talk to {request.url.host}"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


# -- raw HTTP, for framing that a well-behaved client library refuses to produce ------------


@dataclass
class RawReply:
    """A response read off a raw socket (with the parts of httpx.Response tests use)."""

    status_code: int
    headers: http.client.HTTPMessage
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class RawConnection:
    """One HTTP/1.1 request written by hand to a loopback socket.

    Lets a test lie about framing (a Content-Length the body does not meet, chunked bodies)
    and pace or abandon the body, then read whatever the server answers, if anything.
    """

    def __init__(self, url: str, *, timeout: float = HTTP_TIMEOUT) -> None:
        self.url = httpx.URL(url)
        assert self.url.host == LOOPBACK, "end-to-end tests only ever talk to 127.0.0.1"
        self.sock = socket.create_connection((LOOPBACK, self.url.port or 80), timeout=timeout)
        self.method = "GET"

    def send_head(
        self, method: str, headers: Mapping[str, str], *, path: str | None = None
    ) -> None:
        """Request line and headers; ``path`` targets another route on the same connection."""
        self.method = method
        target = path or self.url.raw_path.decode("ascii")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.url.host}:{self.url.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def half_close(self) -> None:
        """Tell the server no more bytes are coming (FIN), but keep reading its answer."""
        self.sock.shutdown(socket.SHUT_WR)

    def reply(self) -> RawReply | None:
        """The server's answer, or None when it closed the connection without one."""
        response = http.client.HTTPResponse(self.sock, method=self.method)
        try:
            response.begin()
            body = response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            return None
        finally:
            response.close()
        return RawReply(response.status, response.headers, body)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def raw_request(
    url: str, method: str, headers: Mapping[str, str], parts: Iterable[bytes]
) -> RawReply | None:
    """Send a request whose body is ``parts`` verbatim; answer None if the server hung up.

    A server may answer (and close) before the whole body is sent; the answer is still read.
    """
    with RawConnection(url) as conn:
        conn.send_head(method, {**headers, "Connection": "close"})
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for part in parts:
                conn.send(part)
        return conn.reply()


# -- S3 storage behind a broker -------------------------------------------------------------


def s3_env(endpoint: str, bucket: str) -> dict[str, str]:
    """Settings for a server in S3 mode on ``bucket`` at ``endpoint`` (LocalStack's secret)."""
    return {
        "BROKER_STORAGE": "s3",
        "BROKER_S3_BUCKET": bucket,
        "BROKER_S3_ENDPOINT_URL": endpoint,
        "BROKER_S3_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


@dataclass
class S3Bucket:
    """The bucket an S3-mode server keeps its objects in, seen directly with boto3."""

    name: str
    client: Any
    """A boto3 S3 client for the peer (tests look behind the broker's back with it)."""

    def head(self, storage_key: str) -> dict[str, Any] | None:
        """``head_object``'s answer, or None when S3 answers 404 (nothing stored)."""
        from botocore.exceptions import ClientError

        try:
            found: dict[str, Any] = self.client.head_object(Bucket=self.name, Key=storage_key)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise
        return found

    def put(self, storage_key: str, body: bytes, content_type: str) -> None:
        """Write an object directly, as someone with bucket access (not the client) could."""
        self.client.put_object(
            Bucket=self.name, Key=storage_key, Body=body, ContentType=content_type
        )


# -- talking to a broker ------------------------------------------------------------------


@dataclass
class Tenant:
    """A tenant with its own API key, and the calls a client of the broker makes."""

    name: str
    key: str
    http: httpx.Client
    """Authenticated client for the API routes."""
    blobs: httpx.Client
    """Unauthenticated client for the signed blob URLs (they carry their own authority)."""
    s3: S3Bucket | None = None
    """The server's bucket when it stores in S3 (None with the embedded blob store)."""

    def storage_key(self, file: Mapping[str, Any]) -> str:
        """Where storage keeps a file's bytes: ``tenant/bucket/file_id/key``
        (FileRecord.storage_key)."""
        return f"{self.name}/{file['bucket']}/{file['id']}/{file['key']}"

    def declare_raw(self, **fields: Any) -> httpx.Response:
        return self.http.post("/v1/files", json=fields)

    def declare(self, content: bytes, **fields: Any) -> dict[str, Any]:
        """Declare ``content`` (its size and SHA-256 unless overridden); assert 201."""
        body: dict[str, Any] = {
            "name": "blob.bin",
            "size": len(content),
            "mime_type": "application/octet-stream",
            "sha256": sha256_hex(content),
        }
        body.update(fields)
        response = self.declare_raw(**body)
        assert response.status_code == 201, response.text
        declared: dict[str, Any] = response.json()
        assert declared["status"] == "pending"
        return declared

    def put(self, file: Mapping[str, Any], content: bytes, **headers: str) -> httpx.Response:
        """PUT ``content`` to the file's upload URL with exactly its headers (plus overrides)."""
        upload = file["upload"]
        sent = {**upload["headers"], **headers}
        sent.pop("Content-Length", None)  # httpx frames the body itself; tests lie via content
        return self.blobs.request(upload["method"], upload["url"], content=content, headers=sent)

    def complete(self, file_id: str) -> httpx.Response:
        return self.http.post(f"/v1/files/{file_id}/complete", json={})

    def get(self, file_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/files/{file_id}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def upload(self, content: bytes, **fields: Any) -> dict[str, Any]:
        """Declare, PUT and complete ``content``; return the complete file."""
        file = self.declare(content, **fields)
        put = self.put(file, content)
        assert put.status_code == 200, put.text
        done = self.complete(file["id"])
        assert done.status_code == 200, done.text
        completed: dict[str, Any] = done.json()
        assert completed["status"] == "complete"
        return completed

    def download(self, file_id: str) -> bytes:
        """Follow ``/content``'s redirect to the signed URL and return the bytes."""
        response = self.http.get(f"/v1/files/{file_id}/content", follow_redirects=True)
        assert response.status_code == 200, response.text
        return response.content

    def assert_nothing_stored(self, file_id: str) -> None:
        """The file is still pending with no bytes: storage kept nothing of a rejected PUT."""
        file = self.get(file_id)
        assert file["status"] == "pending"
        assert file["offset"] == 0
        expect_error(self.complete(file_id), 409, "upload.not_received")
        if self.s3 is not None:
            assert self.s3.head(self.storage_key(file)) is None, "S3 kept an object"

    def assert_recovers(self, file: Mapping[str, Any], content: bytes) -> None:
        """After a rejected PUT, the honest PUT to the same URL still works and completes."""
        put = self.put(file, content)
        assert put.status_code == 200, put.text
        done = self.complete(file["id"])
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "complete"
        assert self.download(file["id"]) == content


@dataclass
class BrokerServer:
    """A running gunicorn master serving the broker on loopback."""

    url: str
    admin_key: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    s3: S3Bucket | None = None
    """Its bucket, when it runs in S3 mode (``BROKER_STORAGE=s3``)."""
    _clients: list[httpx.Client] = field(default_factory=list)

    # -- clients and keys

    def client(self, key: str | None = None) -> httpx.Client:
        """An httpx client for this server (closed when the server stops)."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        client = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=HTTP_TIMEOUT,
            trust_env=False,
            event_hooks={"request": [_loopback_only]},
        )
        self._clients.append(client)
        return client

    def create_key(self, tenant: str, **fields: Any) -> dict[str, Any]:
        """``POST /v1/keys`` with the admin key; the full answer (id, key, ...)."""
        admin = self.client(self.admin_key)
        response = admin.post("/v1/keys", json={"tenant": tenant, **fields})
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def new_key(self, tenant: str) -> str:
        """A fresh API key (the secret) for ``tenant``."""
        key: str = self.create_key(tenant)["key"]
        return key

    def tenant(self, name: str | None = None) -> Tenant:
        """A tenant (fresh and random unless named) with a new key and clients."""
        name = name or f"t{secrets.token_hex(6)}"
        key = self.new_key(name)
        return Tenant(name=name, key=key, http=self.client(key), blobs=self.client(), s3=self.s3)

    # -- processes and disk

    @property
    def objects_dir(self) -> Path:
        """Where the embedded blob store keeps visible objects (pointers and data)."""
        return self.data_dir / "blobs" / "objects"

    def stored_files(self, storage_key: str) -> list[Path]:
        """The pointer (``<h>.json``) and data (``<h>.<uuid>.blob``) files of one object.

        The store names them by ``h``, the SHA-256 of the storage key
        (``tenant/bucket/file_id/key``, ``Tenant.storage_key``; README).
        """
        digest = sha256_hex(storage_key.encode())
        return sorted((self.objects_dir / digest[:2]).glob(f"{digest}*"))

    def stored_keys(self, tenant: str) -> list[str]:
        """The storage keys of every object a tenant has in the blob store (its pointers)."""
        keys = (json.loads(p.read_text())["key"] for p in self.objects_dir.glob("*/*.json"))
        return sorted(key for key in keys if key.startswith(f"{tenant}/"))

    def partial_uploads(self) -> list[Path]:
        """Bodies being received right now (``blobs/tmp/*.part``, never visible)."""
        return sorted((self.data_dir / "blobs" / "tmp").glob("*.part"))

    def worker_pids(self) -> set[int]:
        """The gunicorn workers: the master's child processes."""
        children: set[int] = set()
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                children.update(int(pid) for pid in (task / "children").read_text().split())
        return children

    def wait_until_healthy(self, timeout: float = STARTUP_TIMEOUT, *, healthy: bool = True) -> None:
        """Poll ``/v1/health`` until it answers 200 (any answer unless ``healthy``); fail with
        stderr if gunicorn died. A server whose storage is down answers 503, yet serves."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"gunicorn exited with {self.proc.returncode}:\n{self.stderr()}", pytrace=False
                )
            with contextlib.suppress(httpx.TransportError):
                response = httpx.get(f"{self.url}/v1/health", timeout=5.0, trust_env=False)
                if response.status_code == 200 or not healthy:
                    return
            time.sleep(0.05)
        pytest.fail(f"gunicorn did not become healthy in {timeout} s:\n{self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM the master (graceful), then SIGKILL its whole process group if needed."""
        for client in self._clients:
            client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def inherited_env() -> dict[str, str]:
    """Our environment minus anything that would redirect a server or a ``broker`` command."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in _DROPPED_ENV and not name.startswith(_DROPPED_PREFIXES)
    }


METRICS_TOKEN = "e2e-metrics-token-0123456789"


def broker_env(base: Path, admin_key: str, overrides: Mapping[str, str]) -> dict[str, str]:
    """The server's environment: ours, minus anything that would redirect it, plus the test's."""
    env = inherited_env()
    metrics_dir = base / "metrics"
    metrics_dir.mkdir()
    env.update(
        BROKER_DATA_DIR=str(base / "data"),
        BROKER_ADMIN_KEY=admin_key,
        # Schemathesis alone sends ~4,300 requests with one key and declares files of up to
        # 5 GiB; limits and quotas are tested where they are the subject (test_limits.py).
        BROKER_RATE_LIMIT="off",
        BROKER_QUOTA_PENDING_FILES="off",
        BROKER_QUOTA_PENDING_BYTES="off",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        BROKER_METRICS_TOKEN=METRICS_TOKEN,
        NO_PROXY=LOOPBACK,
        no_proxy=LOOPBACK,
    )
    env.update(overrides)
    return env


@contextlib.contextmanager
def running_broker(
    base: Path, *, healthy: bool = True, s3: S3Bucket | None = None, **overrides: str
) -> Iterator[BrokerServer]:
    """Start gunicorn in ``base`` (data, metrics, logs), yield it healthy, then stop it.

    ``healthy=False`` only waits for an answer (for servers meant to find storage down);
    ``s3`` is the bucket an S3-mode server uses, for tests to look into.
    """
    port = free_port()
    admin_key = secrets.token_urlsafe(32)
    env = broker_env(base, admin_key, overrides)
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:broker.gunicorn_conf",
        "--bind",
        f"{LOOPBACK}:{port}",
        "--workers",
        "2",
        "wsgi:app",
    ]
    stdout_path, stderr_path = base / "gunicorn.out", base / "gunicorn.err"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group, so teardown can reap workers too
        )
    server = BrokerServer(
        url=f"http://{LOOPBACK}:{port}",
        admin_key=admin_key,
        data_dir=base / "data",
        proc=proc,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        s3=s3,
    )
    try:
        server.wait_until_healthy(healthy=healthy)
        yield server
    finally:
        server.stop()


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerServer]:
    """The shared default server (default bucket policy, default worker timeout)."""
    with running_broker(tmp_path_factory.mktemp("broker")) as server:
        yield server


@pytest.fixture
def start_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., BrokerServer]]:
    """Start servers with their own environment (``start_broker(BROKER_BUCKETS=...)``).

    Keywords of ``running_broker`` pass through (``healthy=False``, ``s3=S3Bucket(...)``).
    """
    with contextlib.ExitStack() as stack:

        def start(
            *, healthy: bool = True, s3: S3Bucket | None = None, **overrides: str
        ) -> BrokerServer:
            base = tmp_path_factory.mktemp("broker")
            return stack.enter_context(running_broker(base, healthy=healthy, s3=s3, **overrides))

        yield start


@pytest.fixture
def tenant(broker: BrokerServer) -> Tenant:
    """A fresh tenant, with its own key, on the shared server."""
    return broker.tenant()


@pytest.fixture(scope="session")
def s3_broker(tmp_path_factory: pytest.TempPathFactory, localstack: Any) -> Iterator[BrokerServer]:
    """A server in S3 mode (real gunicorn) on a fresh bucket of LocalStack, for the session.

    ``localstack`` (tests/conftest.py) validates signatures: it is the S3 peer that enforces
    the signed length, type, checksum and expiry. Tests use fresh tenants, so their objects
    never meet in the shared bucket.
    """
    bucket = S3Bucket(name=localstack.new_bucket(), client=localstack.client())
    env = s3_env(localstack.endpoint, bucket.name)
    base = tmp_path_factory.mktemp("s3-broker")
    with running_broker(base, healthy=True, s3=bucket, **env) as server:
        yield server
