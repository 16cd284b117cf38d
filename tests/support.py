"""Helpers the tests share: a frozen clock and a harness around an app and its client."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

ADMIN_KEY = "test-admin-key-" + "x" * 24


class FrozenClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    """An app with its client and helpers to act as the admin or a tenant."""

    app: Flask
    client: FlaskClient
    data_dir: Path
    clock: FrozenClock

    @property
    def service(self) -> Any:
        return self.app.extensions["broker"]

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

    def put(self, upload: dict[str, Any], data: bytes, **header_overrides: str) -> Any:
        """Send the bytes the way a client is told to: exact method, URL and headers."""
        headers = {**upload["headers"], **header_overrides}
        return self.client.open(
            path_of(upload["url"]), method=upload["method"], data=data, headers=headers
        )

    def upload(self, headers: dict[str, str], data: bytes, **fields: Any) -> dict[str, Any]:
        """Declare, PUT and complete; returns the completed file."""
        fields.setdefault("size", len(data))
        created = self.declare(headers, **fields)
        assert self.put(created["upload"], data).status_code == 200
        done = self.client.post(f"/v1/files/{created['id']}/complete", headers=headers)
        assert done.status_code == 200, done.json
        return dict(done.json)

    def download(self, url: str, **headers: str) -> Any:
        return self.client.get(path_of(url), headers=headers)


def path_of(url: str) -> str:
    """The path (and query) of a signed URL, for the in-process test client."""
    parts = urllib.parse.urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}
