"""Shared fixtures: a frozen clock, apps on a fresh data dir, keys per tenant, PostgreSQL."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from broker import create_app
from broker.db import Database

from support import ADMIN_KEY, FrozenClock, Harness

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
    """Build an app on a fresh data dir with these environment overrides."""

    def build(**overrides: str) -> Harness:
        data_dir = tmp_path / f"data-{secrets.token_hex(3)}"
        data_dir.mkdir()
        shutil.copy(migrated_sqlite, data_dir / "broker.sqlite3")
        env = {"BROKER_DATA_DIR": str(data_dir), "BROKER_ADMIN_KEY": ADMIN_KEY, **overrides}
        app = create_app(environ=env, clock=clock)
        app.config["TESTING"] = True
        return Harness(app=app, client=app.test_client(), data_dir=data_dir, clock=clock)

    return build


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()


@pytest.fixture
def client(harness: Harness) -> FlaskClient:
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
