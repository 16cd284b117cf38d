"""The database failing under a running server (real gunicorn, real SQLite): no outage.

A locked, read-only or failing database answers 503 ``database.unavailable`` (the error
envelope) within ``BROKER_DB_TIMEOUT``, never a hang or a dead server; reads go on; a worker
replaced meanwhile boots (it does not touch the database as it boots); and once the
database is back every worker serves again without a restart. Nothing answered 201 is lost
and no file is complete without its object.

Read-only for root: the tests run as root, which ignores file modes, so ``chmod`` proves
nothing. ``chattr +i`` (the immutable attribute) refuses writes to root too: SQLite then
opens the database read-only ("attempt to write a readonly database"), and connections
opened before fail their writes with "disk I/O error". Only the database and its WAL are
made immutable, never the ``-shm`` file, which SQLite maps into memory (writing to it
would be SIGBUS, not an error).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import BrokerServer, Tenant, expect_error

pytestmark = pytest.mark.e2e

DB_TIMEOUT = 2  # BROKER_DB_TIMEOUT of these servers, seconds
# A write meets the busy timeout, and at worst another worker's turn before it.
WRITE_BOUND = 2 * DB_TIMEOUT + 1.5


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def declare(tenant: Tenant, n: int) -> httpx.Response:
    return tenant.declare_raw(name=f"f{n}.txt", key=f"k/{n}.txt", size=5, mime_type="text/plain")


def replace_a_worker(server: BrokerServer) -> None:
    """kill -9 one worker; wait until the master has booted its replacement."""
    before = server.worker_pids()
    assert len(before) == 2
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids(),
        "the replacement worker",
    )
    assert server.proc.poll() is None, f"the master exited:\n{server.stderr()}"


def assert_serves_writes(server: BrokerServer, tenant: Tenant, first: int, count: int) -> None:
    """``count`` creates (spread over both workers: new connections each) all answer 201."""
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda n: declare(tenant, n), range(first, first + count)))
    failed = [a.text for a in answers if a.status_code != 201]
    assert failed == [], f"{len(failed)} of {count} creates failed:\n{failed[:3]}"


def all_files(tenant: Tenant) -> dict[str, dict[str, Any]]:
    """Every file of the tenant's default bucket, by id (following the listing's pages)."""
    found: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        params = {"limit": "100", **({"after": cursor} if cursor else {})}
        page = tenant.http.get("/v1/buckets/default/files", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        found.update({f["id"]: f for f in body["data"]})
        cursor = body.get("next_cursor")
        if not cursor:
            return found


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Another process's exclusive transaction on the database (as `sqlite3` would hold)."""
    holder = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        holder.close()  # rolls back


@contextlib.contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """``chattr +i`` on ``paths`` for the block (skip the test where that is unsupported)."""
    existing = [str(p) for p in paths if p.exists()]
    done = subprocess.run(["chattr", "+i", *existing], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is unavailable here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *existing], check=True)


def test_a_locked_database_answers_503_in_bounded_time_and_a_replaced_worker_boots(
    start_broker: Callable[..., BrokerServer],
) -> None:
    server = start_broker(BROKER_DB_TIMEOUT=str(DB_TIMEOUT))
    tenant = server.tenant()
    kept = declare(tenant, 0)
    assert kept.status_code == 201, kept.text
    kept_id = kept.json()["id"]

    with exclusive_lock(server.data_dir / "broker.sqlite3"):
        replace_a_worker(server)  # on main: "Worker failed to boot", the master exits (3)
        with ThreadPoolExecutor(4) as pool:
            writes = list(pool.map(lambda n: timed(lambda: declare(tenant, n)), range(1, 5)))
            reads = list(
                pool.map(lambda _: timed(lambda: tenant.http.get(f"/v1/files/{kept_id}")), range(4))
            )
        for response, elapsed in writes:
            expect_error(response, 503, "database.unavailable")
            assert elapsed < WRITE_BOUND, f"a locked write took {elapsed:.1f} s"
        for response, elapsed in reads:  # WAL: readers never wait for the writer
            assert response.status_code == 200, response.text
            assert elapsed < 1.0, f"a read waited {elapsed:.1f} s behind the lock"
        health = httpx.get(f"{server.url}/v1/health", timeout=10, trust_env=False)
        assert health.status_code == 200, health.text  # it reads: up, if not writable
        assert server.proc.poll() is None

    assert_serves_writes(server, tenant, first=10, count=12)  # no restart
    assert "Worker failed to boot" not in server.stderr()


def test_a_read_only_database_answers_503_then_heals_without_restart(
    start_broker: Callable[..., BrokerServer],
) -> None:
    server = start_broker(BROKER_DB_TIMEOUT=str(DB_TIMEOUT))
    tenant = server.tenant()
    content = b"hello"
    uploaded = tenant.declare(content, name="up.txt", key="up.txt", mime_type="text/plain")
    put = tenant.put(uploaded, content)
    assert put.status_code == 200, put.text
    database = server.data_dir / "broker.sqlite3"

    with immutable(database, database.with_name("broker.sqlite3-wal")):
        started = time.monotonic()
        expect_error(tenant.complete(uploaded["id"]), 503, "database.unavailable")
        expect_error(declare(tenant, 1), 503, "database.unavailable")
        assert time.monotonic() - started < 2 * WRITE_BOUND
        replace_a_worker(server)  # on main it kept its read-only connection for good
        for n in range(2, 8):  # both workers meet it, reads first (opening connections)
            assert tenant.get(uploaded["id"])["status"] == "pending"
            expect_error(declare(tenant, n), 503, "database.unavailable")

    assert_serves_writes(server, tenant, first=10, count=20)  # on main: 10 of 20 were 503
    done = tenant.complete(uploaded["id"])
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "complete"
    assert tenant.download(uploaded["id"]) == content
    for file in all_files(tenant).values():  # the refused complete left no half state
        if file["status"] == "complete":
            assert tenant.download(file["id"]) == content


def test_every_create_answered_201_survives_a_lock_and_worker_kills(
    start_broker: Callable[..., BrokerServer],
) -> None:
    """Creates keep coming while the database is locked and workers die: each 201 is kept."""
    server = start_broker(BROKER_DB_TIMEOUT=str(DB_TIMEOUT))
    tenant = server.tenant()
    created: list[str] = []
    statuses: list[int] = []

    def one(n: int) -> None:
        try:
            response = declare(tenant, n)
        except httpx.TransportError:  # its worker was killed mid-request: no answer, no claim
            return
        statuses.append(response.status_code)
        if response.status_code == 201:
            created.append(response.json()["id"])
        else:
            expect_error(response, 503, "database.unavailable")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(0, 40)))
        with exclusive_lock(server.data_dir / "broker.sqlite3"):
            list(pool.map(one, range(40, 48)))
            os.kill(max(server.worker_pids()), signal.SIGKILL)
            list(pool.map(one, range(48, 56)))
        list(pool.map(one, range(56, 120)))
        os.kill(min(server.worker_pids()), signal.SIGKILL)
        list(pool.map(one, range(120, 160)))

    assert 503 in statuses, "the lock was never met"
    assert len(created) >= 100, f"only {len(created)} creates succeeded: {statuses}"
    wait_for(lambda: len(server.worker_pids()) == 2, "both workers")
    stored = all_files(tenant)
    assert [i for i in created if i not in stored] == [], "a create answered 201 was lost"
