"""The ``broker`` command: keys, db upgrade, and serve (a real gunicorn process)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from broker import create_app
from broker.cli import main

from support import client_of, path_of

BROKER = str(Path(sys.executable).with_name("broker"))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"BROKER_DATA_DIR": str(tmp_path / "data")}
    for name in [n for n in os.environ if n.startswith("BROKER_")]:
        monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_db_upgrade_creates_the_schema(env: dict[str, str]) -> None:
    code, output = _run("db", "upgrade")
    assert code == 0, output
    assert (Path(env["BROKER_DATA_DIR"]) / "broker.sqlite3").exists()


def test_keys_create_list_revoke(env: dict[str, str]) -> None:
    code, output = _run(
        "keys", "create", "--tenant", "acme", "--name", "ci", "--scope", "files:read"
    )
    assert code == 0, output
    created = json.loads(output)
    assert created["scopes"] == ["files:read"]
    app = create_app(environ={**env, "BROKER_KEY_CACHE_TTL": "1"})
    headers = {"Authorization": f"Bearer {created['key']}"}
    assert client_of(app).get("/v1/buckets", headers=headers).status_code == 200
    code, output = _run("keys", "list", "--tenant", "acme")
    assert [k["id"] for k in json.loads(output)] == [created["id"]]
    assert created["key"] not in output
    code, output = _run("keys", "revoke", created["id"])
    assert code == 0
    assert json.loads(output)["revoked_at"] is not None
    # This app verified the key a moment ago and trusts that for BROKER_KEY_CACHE_TTL.
    time.sleep(1.1)
    assert client_of(app).get("/v1/buckets", headers=headers).status_code == 401


def test_keys_create_with_its_own_rate_limit(env: dict[str, str]) -> None:
    code, output = _run("keys", "create", "--tenant", "acme", "--rate-limit", "1/minute")
    assert code == 0, output
    created = json.loads(output)
    assert created["rate_limit"] == "1/minute"
    app = create_app(environ={**env, "BROKER_RATE_LIMIT": "100/minute"})
    headers = {"Authorization": f"Bearer {created['key']}"}
    statuses = [client_of(app).get("/v1/buckets", headers=headers).status_code for _ in "ab"]
    assert statuses == [200, 429]
    code, output = _run("keys", "create", "--tenant", "acme", "--rate-limit", "often")
    assert code != 0
    assert "rate_limit" in output


def test_keys_create_rejects_a_bad_tenant(env: dict[str, str]) -> None:
    code, output = _run("keys", "create", "--tenant", "Not Valid")
    assert code != 0
    assert "tenant" in output


def test_revoking_an_unknown_key_fails(env: dict[str, str]) -> None:
    code, output = _run("keys", "revoke", "key_nope")
    assert code != 0
    assert "No API key key_nope" in output


def test_a_bad_configuration_is_explained(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROKER_UPLOAD_TTL", "soon")
    code, output = _run("db", "upgrade")
    assert code != 0
    assert "BROKER_UPLOAD_TTL='soon' is not an integer" in output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.e2e
def test_serve_runs_gunicorn_on_loopback(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_") and k != "PORT"}
    env.update(BROKER_DATA_DIR=str(tmp_path / "data"), PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    proc = subprocess.Popen(
        [BROKER, "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.stdout is not None
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "broker serve did not answer"
                time.sleep(0.2)
        assert response.json()["status"] == "ok"
        assert httpx.get(f"http://127.0.0.1:{port}/v1/buckets").status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert (tmp_path / "data" / "secret_key").exists()


@pytest.mark.e2e
def test_serve_refuses_a_bad_configuration(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(BROKER_DATA_DIR=str(tmp_path), BROKER_STORAGE="ftp")
    result = subprocess.run(
        [BROKER, "serve"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode != 0
    assert "BROKER_STORAGE='ftp' must be 'local' or 's3'" in result.stderr


def test_sweep_expires_a_stale_upload_and_deletes_its_bytes(env: dict[str, str]) -> None:
    code, output = _run("keys", "create", "--tenant", "acme")
    assert code == 0, output
    headers = {"Authorization": f"Bearer {json.loads(output)['key']}"}
    hour_ago = time.time() - 3600
    app = create_app(environ=env, clock=lambda: hour_ago)  # its URLs ran out long ago
    client = client_of(app)
    stale = client.post(
        "/v1/files",
        json={"name": "a.txt", "size": 5, "mime_type": "text/plain", "expires_in": 60},
        headers=headers,
    ).json
    upload = stale["upload"]
    put = client.put(path_of(upload["url"]), headers=upload["headers"], data=b"hello")
    assert put.status_code == 200
    fresh = (  # declared now, on the real clock: 15 minutes to go
        client_of(create_app(environ=env))
        .post(
            "/v1/files",
            json={"name": "b.txt", "size": 5, "mime_type": "text/plain"},
            headers=headers,
        )
        .json
    )
    storage = app.extensions["broker"].storage
    assert storage.head(f"acme/default/{stale['id']}/{stale['key']}") is not None

    result = CliRunner().invoke(main, ["sweep", "--grace", "0s"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["files_expired"] == 1
    assert (report["errors"], report["skipped"]) == (0, False)
    gone = client.get(f"/v1/files/{stale['id']}", headers=headers).json
    assert (gone["status"], gone["failure_code"]) == ("failed", "upload.expired")
    assert storage.head(f"acme/default/{stale['id']}/{stale['key']}") is None
    assert client.get(f"/v1/files/{fresh['id']}", headers=headers).json["status"] == "pending"


@pytest.mark.parametrize("bad", ["soon", "15d", "-1s", ""])
def test_sweep_refuses_a_bad_duration(env: dict[str, str], bad: str) -> None:
    code, output = _run("sweep", "--grace", bad)
    assert code == 2
    assert "is not a duration like 90s, 15m or 1h" in output


def test_sweep_every_repeats_until_terminated(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(BROKER_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.Popen(
        [BROKER, "sweep", "--every", "1s", "--grace", "1m"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]  # two passes, a second apart
        reports = [json.loads(line) for line in lines]
        assert [r["objects_scanned"] for r in reports] == [True, False]  # hourly, not each pass
        assert all(r["errors"] == 0 for r in reports)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0  # TERM ends the loop between passes, cleanly
