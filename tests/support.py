"""Helpers the tests share: a frozen clock, the storage backends, and a harness around an
app and its client."""

from __future__ import annotations

import io
import json
import os
import socket
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from broker.models import FileRecord
from broker.services import Services
from broker.storage import InventoryStorage, LocalStorage, MultipartStorage, S3Storage, Storage
from broker.sweep import ReapableStorage

ADMIN_KEY = "test-admin-key-" + "x" * 24
LOCAL_BASE = "http://localhost/"  # where the Flask test client's signed blob URLs point


class FrozenClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


STORAGE_BACKENDS = ("local", "moto", "localstack")
"""The embedded store, S3 on moto (in-process, enforces nothing), S3 on LocalStack (enforces)."""


def on_backends(*names: str) -> pytest.MarkDecorator:
    """Run a test on these storage backends only (of the ``storage_backend`` fixture's)."""
    assert set(names) <= set(STORAGE_BACKENDS)
    return pytest.mark.parametrize("storage_backend", names, indirect=True)


ENFORCING = on_backends("local", "localstack")
"""The backends whose server checks signatures, lengths, types, checksums and expiry
(moto accepts anything: that is a fact about moto, not a skipped test)."""
S3_ONLY = on_backends("moto", "localstack")


@dataclass
class StorageBackend:
    """A storage backend to run a test on: the settings that select it, and its S3 peer."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    """Environment overrides for ``make_harness`` (none for the embedded store)."""
    peer: Any = None
    """The S3 peer (conftest's ``S3Peer``) for moto and LocalStack; None for local."""

    @property
    def enforces(self) -> bool:
        """Whether the server behind signed URLs refuses lies (all but moto)."""
        return self.peer is None or bool(self.peer.enforces)

    def put_object(
        self, storage: Storage, key: str, data: bytes, content_type: str = "text/plain"
    ) -> None:
        """Bytes straight into storage under ``key``, around the broker and without a
        checksum (so storage reports none), as a client with a leaked URL or a peer that
        does not enforce could leave them."""
        if isinstance(storage, LocalStorage):
            upload = storage.presign_put(
                key, size=len(data), content_type=content_type, sha256=None, expires_at=2**40
            )
            grant = storage.grant_put(upload.url.rsplit("/", 1)[1])
            storage.receive(grant, io.BytesIO(data))
        else:
            assert isinstance(storage, S3Storage)
            self.peer.client().put_object(
                Bucket=storage.bucket, Key=key, Body=data, ContentType=content_type
            )


class Response(TestResponse):
    """An answer of the test client, its ``json`` typed as what it is: any JSON value.
    (Werkzeug types it ``Any | None``, None standing for a body that is not JSON, so every
    ``response.json["error"]`` would need a check that the failing assertion makes anyway.)"""

    @property
    def json(self) -> Any:
        return self.get_json()


class Client(FlaskClient):
    """Flask's test client answering ``Response``: the harness's apps use it
    (``app.test_client_class``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.response_wrapper = Response

    def open(self, *args: Any, **kwargs: Any) -> Response:
        response = super().open(*args, **kwargs)
        assert isinstance(response, Response)
        return response

    def get(self, *args: Any, **kwargs: Any) -> Response:
        return self.open(*args, **kwargs, method="GET")

    def post(self, *args: Any, **kwargs: Any) -> Response:
        return self.open(*args, **kwargs, method="POST")

    def put(self, *args: Any, **kwargs: Any) -> Response:
        return self.open(*args, **kwargs, method="PUT")

    def patch(self, *args: Any, **kwargs: Any) -> Response:
        return self.open(*args, **kwargs, method="PATCH")

    def delete(self, *args: Any, **kwargs: Any) -> Response:
        return self.open(*args, **kwargs, method="DELETE")

    def options(self, *args: Any, **kwargs: Any) -> Response:
        return self.open(*args, **kwargs, method="OPTIONS")

    def head(self, *args: Any, **kwargs: Any) -> Response:
        return self.open(*args, **kwargs, method="HEAD")


def client_of(app: Flask) -> Client:
    """The app's test client, answering typed ``Response``s."""
    app.test_client_class = Client
    client = app.test_client()
    assert isinstance(client, Client)
    return client


@dataclass
class Harness:
    """An app with its client and helpers to act as the admin or a tenant."""

    app: Flask
    client: Client
    data_dir: Path
    clock: FrozenClock
    backend: StorageBackend = field(default_factory=lambda: StorageBackend("local"))

    @property
    def service(self) -> Services:
        """The app's use cases and what they share (settings, store, storage)."""
        services = self.app.extensions["broker"]
        assert isinstance(services, Services)
        return services

    # Storage as a test needs it: the core Protocol, an ability, or (for a test about one
    # adapter) the adapter itself; each asserts the app's storage is what the test assumes.

    @property
    def storage(self) -> Storage:
        return self.service.storage

    @property
    def multipart(self) -> MultipartStorage:
        ability = self.service.ctx.multipart
        assert ability is not None
        return ability

    @property
    def inventory(self) -> InventoryStorage:
        storage = self.service.storage
        assert isinstance(storage, InventoryStorage)
        return storage

    @property
    def reapable(self) -> ReapableStorage:
        """What the sweeper takes: storage that can list, abort and delete."""
        storage = self.service.storage
        assert isinstance(storage, MultipartStorage)
        assert isinstance(storage, InventoryStorage)
        return cast(ReapableStorage, storage)

    @property
    def local(self) -> LocalStorage:
        """The embedded store (for a test about it)."""
        storage = self.service.storage
        assert isinstance(storage, LocalStorage), storage
        return storage

    @property
    def s3(self) -> S3Storage:
        """The S3 adapter (for a test about it)."""
        storage = self.service.storage
        assert isinstance(storage, S3Storage), storage
        return storage

    def record(self, file_id: str, tenant: str = "acme") -> FileRecord:
        """The metadata store's record of a tenant's file (which must exist)."""
        found = self.service.store.get_file(tenant, file_id)
        assert found is not None, file_id
        return found

    def backdate(self, seconds: float) -> None:
        """Set the clock ``seconds`` (and one more) behind the real time, for a test that
        then advances it by ``seconds`` to see a URL expire: the embedded store judges its
        URLs by this clock, an S3 peer by the real time (which no test can move), and so
        both agree the time has passed."""
        self.clock.now = float(int(time.time() - seconds - 1))

    def key(self, tenant: str = "acme", scopes: list[str] | None = None) -> dict[str, str]:
        """Headers carrying a fresh key of ``tenant`` (minted through the API)."""
        body: dict[str, Any] = {"tenant": tenant}
        if scopes is not None:
            body["scopes"] = scopes
        response = self.client.post("/v1/keys", json=body, headers=admin_headers())
        assert response.status_code == 201, response.json
        return {"Authorization": f"Bearer {response.json['key']}"}

    def declare(self, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
        """POST /v1/files with sensible defaults; returns the 201 body."""
        body = {"name": "a.txt", "size": 5, "mime_type": "text/plain", **fields}
        response = self.client.post("/v1/files", json=body, headers=headers)
        assert response.status_code == 201, response.json
        return dict(response.json)

    def send(self, method: str, url: str, headers: dict[str, str], data: bytes = b"") -> Reply:
        """A request to a signed URL: into the app for blob URLs, over HTTP for S3 peers."""
        if url.startswith(LOCAL_BASE):
            answer = self.client.open(path_of(url), method=method, headers=headers, data=data)
            return Reply(answer.status_code, httpx.Headers(list(answer.headers)), answer.get_data())
        remote = httpx.request(method, url, headers=headers, content=data, timeout=30)
        return Reply(remote.status_code, remote.headers, remote.content)

    def put(self, upload: dict[str, Any], data: bytes, **header_overrides: str) -> Reply:
        """Send the bytes the way a client is told to: exact method, URL and headers."""
        headers = {**upload["headers"], **header_overrides}
        return self.send(upload["method"], upload["url"], headers, data)

    def upload(self, headers: dict[str, str], data: bytes, **fields: Any) -> dict[str, Any]:
        """Declare, PUT and complete; returns the completed file."""
        fields.setdefault("size", len(data))
        created = self.declare(headers, **fields)
        assert self.put(created["upload"], data).status_code == 200
        done = self.client.post(f"/v1/files/{created['id']}/complete", headers=headers)
        assert done.status_code == 200, done.json
        return dict(done.json)

    def download(self, url: str, **headers: str) -> Reply:
        """GET a download URL, following the broker's redirects to storage."""
        reply = self.send("GET", url, headers)
        for _ in range(3):
            if reply.status_code not in (301, 302, 303, 307):
                break
            reply = self.send("GET", reply.headers["Location"], headers)
        return reply


@dataclass
class Reply:
    """A response from wherever a signed URL led (the app, or an S3 peer)."""

    status_code: int
    headers: Mapping[str, str]
    """Case-insensitive, as HTTP's are."""
    data: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.data)


def path_of(url: str) -> str:
    """The path (and query) of a signed URL, for the in-process test client."""
    parts = urllib.parse.urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def error_code(response: Response | Reply) -> str:
    """The ``code`` of an error answer (the envelope's)."""
    return str(response.json["error"]["code"])


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


def assert_envelope(response: Response | Reply, status: int, code: str) -> None:
    """The answer (the Flask client's, or a ``Reply``) is the contract's error envelope with
    this status and code, never a 500 with a traceback."""
    text = response.data.decode()
    assert response.status_code == status, text[:500]
    assert response.headers["Content-Type"].split(";")[0] == "application/json"
    body = response.json
    assert set(body) == {"error", "request_id"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["request_id"] == response.headers["X-Request-Id"]
    assert "Traceback" not in text


def fail_os_call(monkeypatch: pytest.MonkeyPatch, name: str, nth: int, code: int) -> None:
    """From now on, the ``nth`` call of ``os.<name>`` raises ``OSError(code)``: a disk that
    fails (EIO) or fills up (ENOSPC) at that step. Others go through."""
    real = getattr(os, name)
    calls = 0

    def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == nth:
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, failing)
