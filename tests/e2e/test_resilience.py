"""Uploads under stress: slow clients, workers killed mid-body, concurrent writers.

Nothing is lost and nothing half-written ever becomes visible: a slow upload outlives the
worker timeout (gthread keeps heart-beating), a crash mid-body leaves no object, and two
writers racing on one URL end with one intact object.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .conftest import BrokerServer, RawConnection, Tenant, expect_error, sha256_hex

pytestmark = pytest.mark.e2e

KiB = 1024
MiB = 1024 * KiB


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def test_slow_upload_outlives_the_worker_timeout(
    start_broker: Callable[..., BrokerServer],
) -> None:
    worker_timeout = 2
    server = start_broker(BROKER_WORKER_TIMEOUT=str(worker_timeout))
    tenant = server.tenant()
    content = os.urandom(64 * KiB)
    file = tenant.declare(content)
    workers = server.worker_pids()

    pieces, pause = 16, 0.32  # ~5 s in all, more than twice the worker timeout
    piece = len(content) // pieces
    started = time.monotonic()
    with RawConnection(file["upload"]["url"]) as conn:
        conn.send_head("PUT", {**file["upload"]["headers"], "Connection": "close"})
        for offset in range(0, len(content), piece):
            conn.send(content[offset : offset + piece])
            time.sleep(pause)
        reply = conn.reply()
    elapsed = time.monotonic() - started

    assert elapsed > 2 * worker_timeout
    assert reply is not None, f"the server dropped the slow upload:\n{server.stderr()}"
    assert reply.status_code == 200, reply.text
    assert reply.json()["sha256"] == sha256_hex(content)
    assert server.worker_pids() == workers, "a worker was killed and replaced"
    done = tenant.complete(file["id"])
    assert done.status_code == 200, done.text
    assert tenant.download(file["id"]) == content


def test_worker_killed_mid_upload_leaves_no_partial_object(
    start_broker: Callable[..., BrokerServer],
) -> None:
    server = start_broker()
    tenant = server.tenant()
    content = os.urandom(8 * MiB)
    file = tenant.declare(content, key="big/upload.bin")
    workers = server.worker_pids()
    assert len(workers) == 2

    with RawConnection(file["upload"]["url"]) as conn:
        conn.send_head("PUT", file["upload"]["headers"])
        conn.send(content[: len(content) // 2])
        # The body is streaming into a temporary file: the upload is really in flight.
        wait_for(
            lambda: any(p.stat().st_size >= MiB for p in server.partial_uploads()),
            "the first MiB of the body to reach the blob store",
        )
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: len(server.worker_pids() - workers) == 2, "gunicorn to respawn both workers")
    server.wait_until_healthy()

    assert server.stored_files(tenant.storage_key(file)) == []
    tenant.assert_nothing_stored(file["id"])
    tenant.assert_recovers(file, content)
    stored = server.stored_files(tenant.storage_key(file))
    assert [p.suffix for p in stored] == [".blob", ".json"]


def test_concurrent_puts_of_one_url_end_with_one_intact_object(
    broker: BrokerServer, tenant: Tenant
) -> None:
    content = os.urandom(4 * MiB)
    file = tenant.declare(content, key="race/object.bin")
    upload = file["upload"]
    headers = {"Content-Type": upload["headers"]["Content-Type"]}
    start = threading.Barrier(2)

    def put(client: httpx.Client) -> httpx.Response:
        start.wait()
        return client.put(upload["url"], content=content, headers=headers)

    with ThreadPoolExecutor(max_workers=2) as pool:
        replies = list(pool.map(put, [broker.client(), broker.client()]))

    for reply in replies:
        if reply.status_code != 200:  # losing the race is allowed, but cleanly
            assert reply.status_code >= 400
            expect_error(reply, reply.status_code, reply.json()["error"]["code"])
    assert any(r.status_code == 200 for r in replies), [r.text for r in replies]
    done = tenant.complete(file["id"])
    assert done.status_code == 200, done.text
    assert tenant.download(file["id"]) == content
    stored = broker.stored_files(tenant.storage_key(file))
    assert [p.suffix for p in stored] == [".blob", ".json"], "exactly one object, no orphan"
