"""Shared fixtures: a frozen clock, apps on a fresh data dir, keys per tenant, PostgreSQL,
the S3 peers and the one storage-backend fixture the API and contract tests run on."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from broker import create_app
from broker.db import Database

from support import (
    ADMIN_KEY,
    STORAGE_BACKENDS,
    Client,
    FrozenClock,
    Harness,
    StorageBackend,
    client_of,
    free_port,
)

PROJECT = Path(__file__).resolve().parents[1]
LOCALSTACK_PYTHON = PROJECT / ".cache" / "localstack-venv" / "bin" / "python"
POSTGRES_URL = os.environ.get(
    "BROKER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file migrated once per session; each app gets a copy (fast, still real)."""
    path = tmp_path_factory.mktemp("template") / "broker.sqlite3"
    database = Database(f"sqlite:///{path}")
    database.upgrade()
    database.dispose()
    return path


@pytest.fixture
def make_harness(
    tmp_path: Path, migrated_sqlite: Path, clock: FrozenClock
) -> Callable[..., Harness]:
    """Build an app on a fresh data dir, on a storage backend (default: the embedded
    store), with these environment overrides."""

    def build(backend: StorageBackend | None = None, /, **overrides: str) -> Harness:
        backend = backend or StorageBackend("local")
        data_dir = tmp_path / f"data-{secrets.token_hex(3)}"
        data_dir.mkdir()
        shutil.copy(migrated_sqlite, data_dir / "broker.sqlite3")
        env = {
            "BROKER_DATA_DIR": str(data_dir),
            "BROKER_ADMIN_KEY": ADMIN_KEY,
            # Tests make many requests with one key; the limits' own tests turn them on.
            "BROKER_RATE_LIMIT": "off",
            **backend.env,
            **overrides,
        }
        app = create_app(environ=env, clock=clock)
        app.config["TESTING"] = True
        return Harness(
            app=app, client=client_of(app), data_dir=data_dir, clock=clock, backend=backend
        )

    return build


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()


@pytest.fixture
def client(harness: Harness) -> Client:
    return harness.client


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    from sqlalchemy import create_engine, text

    name = f"broker_test_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# -- S3 peers ----------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _fake_aws_credentials() -> Iterator[None]:
    """Tests sign with throwaway credentials and never reach a real AWS account.

    LocalStack accepts any access key id with the secret ``test``.
    """
    saved = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    for name in saved:
        del os.environ[name]
    os.environ.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    yield
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        del os.environ[name]
    os.environ.update(saved)


@dataclass
class S3Peer:
    """An S3-compatible server on loopback, and whether it enforces signed declarations."""

    name: str
    endpoint: str
    enforces: bool

    def client(self) -> Any:
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1"
        )

    def new_bucket(self) -> str:
        """A fresh, empty bucket (one per test keeps tests independent)."""
        name = f"t-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Peer]:
    """moto's server in a thread of this process: fast, functional, enforces nothing."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield S3Peer("moto", f"http://127.0.0.1:{port}", enforces=False)
    server.stop()


@pytest.fixture(scope="session")
def localstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Peer]:
    """LocalStack's S3 with signature validation on: a real peer that enforces.

    Installed by scripts/localstack.sh (the test command runs it; so does this fixture when
    it has not run), started here on a free loopback port, stopped at the end.
    """
    subprocess.run(["bash", str(PROJECT / "scripts" / "localstack.sh")], check=True)
    port = free_port()
    root = tmp_path_factory.mktemp("localstack")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "AWS_"))}
    env.update(
        GATEWAY_SERVER="hypercorn",
        GATEWAY_LISTEN=f"127.0.0.1:{port}",
        SERVICES="s3",
        DNS_ADDRESS="0",
        S3_SKIP_SIGNATURE_VALIDATION="0",
        LOCALSTACK_TELEMETRY_DISABLED="1",
        DISABLE_EVENTS="1",
        FILESYSTEM_ROOT=str(root),
        TMPDIR=str(root),
    )
    log = (root / "localstack.log").open("wb")
    proc = subprocess.Popen(
        [str(LOCALSTACK_PYTHON), "-m", "localstack.runtime.main"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            health = httpx.get(f"{endpoint}/_localstack/health", timeout=2).json()
            if health.get("services", {}).get("s3") in ("available", "running"):
                break
        except (httpx.TransportError, ValueError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"LocalStack did not start: {(root / 'localstack.log').read_text()}")
        time.sleep(0.3)
    yield S3Peer("localstack", endpoint, enforces=True)
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(params=STORAGE_BACKENDS)
def storage_backend(request: pytest.FixtureRequest) -> StorageBackend:
    """Each storage backend in turn: the embedded store, S3 on moto, S3 on LocalStack (a
    fresh bucket each time). Pass it to ``make_harness``; narrow it with ``on_backends``."""
    if request.param == "local":
        return StorageBackend("local")
    peer: S3Peer = request.getfixturevalue("moto_s3" if request.param == "moto" else "localstack")
    env = {
        "BROKER_STORAGE": "s3",
        "BROKER_S3_BUCKET": peer.new_bucket(),
        "BROKER_S3_ENDPOINT_URL": peer.endpoint,
    }
    return StorageBackend(request.param, env, peer)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``slow`` tests (soaks, multi-GiB transfers) run only when ``-m`` asks for them;
    they are deselected, not skipped, in the default run."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    kept = [item for item in items if item.get_closest_marker("slow") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept
