"""The one local command of the README (``honcho start -f Procfile.dev``) on a fresh
PostgreSQL database with only the platform's ``DATABASE_URL`` (``postgres://``, as Heroku hands
it out), ``PORT``, an admin key and a data directory set: the schema is migrated before the web
process serves, web and worker both run, and the README's curl walk-through passes against it.

The Procfile itself is Heroku's (its ``release`` step migrates once per deploy); this test
checks it names the same web and worker commands as Procfile.dev, which honcho runs here.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from .conftest import LOOPBACK, PROJECT_ROOT, free_port
from .test_walkthrough import walkthrough_script

BIN = Path(sys.executable).parent
START_TIMEOUT = 60.0
POSTGRES_URL = os.environ.get(  # as tests/conftest.py's postgres_url fixture
    "BROKER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _procfile(name: str) -> dict[str, str]:
    """Process type -> command of a Procfile (comments and blank lines skipped)."""
    entries = {}
    for line in (PROJECT_ROOT / name).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            kind, command = line.split(":", 1)
            entries[kind.strip()] = command.strip()
    return entries


def test_procfiles_agree() -> None:
    heroku, local = _procfile("Procfile"), _procfile("Procfile.dev")
    assert heroku["release"] == "broker db upgrade"
    assert set(local) == {"web", "worker"}  # no process that exits: honcho would stop all
    for kind in ("web", "worker"):
        assert local[kind] == f"{heroku['release']} && exec {heroku[kind]}"


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database, as ``postgres://`` (Heroku's scheme); dropped after."""
    name = f"broker_procfile_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    yield "postgres://" + url.split("://", 1)[1]
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _alive(pid: int) -> str:
    """The command line of a running process ('' when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


@pytest.mark.e2e
def test_honcho_runs_web_and_worker_on_a_fresh_postgres(
    fresh_database: str, tmp_path: Path
) -> None:
    port, admin_key = free_port(), secrets.token_urlsafe(24)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BROKER_", "AWS_"))
        and k not in ("PORT", "WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR", "REDIS_URL")
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # as with the venv activated
        DATABASE_URL=fresh_database,
        PORT=str(port),
        BROKER_ADMIN_KEY=admin_key,
        BROKER_DATA_DIR=str(tmp_path / "data"),
        NO_PROXY=LOOPBACK,
        no_proxy=LOOPBACK,
    )
    log_path = tmp_path / "honcho.log"
    with log_path.open("wb") as log:
        honcho = subprocess.Popen(
            [str(BIN / "honcho"), "start", "-f", "Procfile.dev"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert honcho.poll() is None, log_path.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.3)

        # Migrated before serving: the web process's `broker db upgrade` finished before
        # gunicorn started, and the fresh database is at the newest migration.
        output = log_path.read_text()
        migrated = output.find("web.1    | database schema is up to date")
        started = output.find("Starting gunicorn")
        assert 0 <= migrated < started, output
        engine = create_engine("postgresql+psycopg://" + fresh_database.split("://", 1)[1])
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        engine.dispose()

        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", walkthrough_script()],
            cwd=tmp_path,
            env={**env, "BROKER": url, "ADMIN": admin_key},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        report = f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        assert result.returncode == 0, report
        for expected in ("complete", "round trip ok", "docs/hello.txt", "deleted"):
            assert expected in result.stdout, report
        assert (tmp_path / "copy.txt").read_bytes() == (tmp_path / "hello.txt").read_bytes()

        # Both processes still run (nothing exited and took the others down), and the
        # worker has swept the PostgreSQL database at least once.
        output = log_path.read_text()
        pids = dict(re.findall(r"(\w+)\.1 started \(pid=(\d+)\)", output))
        assert set(pids) == {"web", "worker"}, output
        assert "gunicorn" in _alive(int(pids["web"])), output
        assert "sweep --every 60" in _alive(int(pids["worker"])), output
        assert re.search(r'worker\.1 +\| \{"files_expired"', output), output
        assert honcho.poll() is None, output
    finally:
        if honcho.poll() is None:
            honcho.send_signal(signal.SIGINT)  # what Ctrl-C does: honcho stops both
        try:
            honcho.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
