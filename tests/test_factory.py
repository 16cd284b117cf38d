"""The app factory and its helpers; a worker boots without touching the database."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from flask import Flask, request

from broker import create_app, prepare_database, request_base_url

from support import ADMIN_KEY, admin_headers, assert_envelope, client_of


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////nonexistent/dir/meta.sqlite3",
        "postgresql+psycopg://postgres@127.0.0.1:1/test",
    ],
)
def test_an_app_boots_without_its_database_and_answers_503(url: str, tmp_path: Path) -> None:
    env = {
        "BROKER_DATA_DIR": str(tmp_path),
        "BROKER_ADMIN_KEY": ADMIN_KEY,
        "BROKER_DATABASE_URL": url,
        "BROKER_DB_TIMEOUT": "1",
    }
    prepare_database(environ=env)  # the master logs it and starts anyway
    client = client_of(create_app(environ=env))
    started = time.monotonic()
    assert_envelope(client.get("/v1/health"), 503, "database.unavailable")
    assert_envelope(
        client.post("/v1/keys", json={"tenant": "acme"}, headers=admin_headers()),
        503,
        "database.unavailable",
    )
    assert time.monotonic() - started < 5


def test_create_app_does_not_touch_a_locked_database(tmp_path: Path) -> None:
    """A worker replaced while another process holds the database exclusively still boots."""
    env = {"BROKER_DATA_DIR": str(tmp_path), "BROKER_ADMIN_KEY": ADMIN_KEY}
    path = tmp_path / "broker.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")  # readers are shut out too
        holder.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        app = create_app(environ=env)
        assert time.monotonic() - started < 2
    finally:
        holder.close()
    prepare_database(environ=env)  # migrating is the master's job (or `broker db upgrade`)
    assert client_of(app).get("/v1/health").status_code == 200


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:8000",
        "localhost",
        "EXAMPLE.com",
        "broker.example.com:443",
        "example.com:80",
        "[::1]:8000",
        "xn--bcher-kva.example",
        "a%41b.com",
        "bücher.example",
        "under_score.example",
    ],
)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_request_base_url_is_host_url_without_its_slash(host: str, scheme: str) -> None:
    app = Flask(__name__)
    with app.test_request_context("/v1/files", base_url=f"{scheme}://{host}"):
        assert request_base_url() == request.host_url.rstrip("/")
