"""Storage faults under real gunicorn (issue #9): S3 (LocalStack) behind a loopback proxy
the test switches between forwarding, a black hole (accepts, never answers) and dropping
connections.

With ``BROKER_STORAGE_TIMEOUT=3``: every request that needs storage answers 503
``storage.unavailable`` (the envelope) within the bound, requests that need none (listings,
GET of a complete file) keep answering promptly meanwhile, and once the proxy forwards
again everything recovers without a restart; no file ends complete without its object.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from .conftest import BrokerServer, S3Bucket, Tenant, expect_error, s3_env
from .fault_proxy import FaultProxy

pytestmark = pytest.mark.e2e

BOUND = 3.0  # BROKER_STORAGE_TIMEOUT
COOL_DOWN = 4.0  # BROKER_STORAGE_BREAKER_COOLDOWN (longer than the checks while it is open)
SLACK = 1.5  # scheduling on two shared cores, the 0.1 s bulkhead wait, HTTP itself
PROMPT = 2.0  # what a request that needs no storage may take meanwhile (2 shared cores)


@pytest.fixture
def proxy(localstack: Any) -> Iterator[FaultProxy]:
    url = httpx.URL(localstack.endpoint)
    with FaultProxy((url.host, url.port or 80)) as running:
        yield running


@pytest.fixture
def faulty(
    localstack: Any, start_broker: Callable[..., BrokerServer], proxy: FaultProxy
) -> BrokerServer:
    """A server in S3 mode whose every storage call goes through ``proxy``."""
    bucket = S3Bucket(name=localstack.new_bucket(), client=localstack.client())
    return start_broker(
        s3=bucket,
        BROKER_STORAGE_TIMEOUT=str(BOUND),
        BROKER_STORAGE_BREAKER_COOLDOWN=str(COOL_DOWN),
        BROKER_STORAGE_BREAKER_FAILURES="3",
        **s3_env(proxy.endpoint, bucket.name),
    )


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def put_pending(tenant: Tenant, content: bytes) -> dict[str, Any]:
    """A declared file whose bytes are in storage, not yet completed."""
    file = tenant.declare(content)
    put = tenant.put(file, content)
    assert put.status_code == 200, put.text
    return file


def retrying(call: Callable[[], httpx.Response], within: float = 15.0) -> httpx.Response:
    """What a client is told to do: retry a 503 after its Retry-After (each worker process
    finds storage up again on its own, after its breaker's cool-down)."""
    deadline = time.monotonic() + within
    while True:
        response = call()
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(min(float(response.headers.get("retry-after", "1")), 1.0))


def recovered(server: BrokerServer, timeout: float = 15.0) -> float:
    """Poll health until 200; the seconds it took."""
    started = time.monotonic()
    anonymous = server.client()
    while time.monotonic() - started < timeout:
        if anonymous.get("/v1/health").status_code == 200:
            return time.monotonic() - started
        time.sleep(0.1)
    pytest.fail(f"storage did not recover within {timeout} s:\n{server.stderr()}")


def listed_status(tenant: Tenant, file_id: str) -> str:
    """A file's status as the listing shows it (GET of a pending file asks storage)."""
    listing = tenant.http.get("/v1/buckets/default/files")
    assert listing.status_code == 200, listing.text
    found = [file["status"] for file in listing.json()["data"] if file["id"] == file_id]
    assert len(found) == 1, listing.text
    return str(found[0])


def assert_no_complete_file_without_its_object(tenant: Tenant) -> None:
    listing = tenant.http.get("/v1/buckets/default/files")
    assert listing.status_code == 200, listing.text
    assert tenant.s3 is not None
    for file in listing.json()["data"]:
        if file["status"] == "complete":
            assert tenant.s3.head(tenant.storage_key(file)) is not None, file


def test_black_holed_storage_answers_503_within_the_bound_and_listings_keep_answering(
    faulty: BrokerServer, proxy: FaultProxy
) -> None:
    tenant = faulty.tenant()
    done = tenant.upload(b"complete before the outage\n")
    pending = [put_pending(tenant, os.urandom(1000 + i)) for i in range(4)]
    never_sent = tenant.declare(b"never sent")

    proxy.mode = "blackhole"
    # Twenty storage-bound requests at once (more than the two workers' 16 threads can hold
    # in storage), and meanwhile requests that need no storage, timed.
    stop = threading.Event()
    prompt: list[float] = []

    def needs_no_storage() -> None:
        client = faulty.client(tenant.key)
        while not stop.is_set():
            for path in ("/v1/buckets/default/files", f"/v1/files/{done['id']}"):
                response, took = timed(lambda p=path: client.get(p))  # type: ignore[misc]
                assert response.status_code == 200, response.text
                prompt.append(took)
            time.sleep(0.05)

    def needs_storage(i: int) -> tuple[httpx.Response, float]:
        client = faulty.client(tenant.key)
        if i % 4 == 3:
            return timed(lambda: client.get("/v1/health"))
        file = pending[i % len(pending)]
        return timed(lambda: client.post(f"/v1/files/{file['id']}/complete", json={}))

    reader = threading.Thread(target=needs_no_storage)
    reader.start()
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(needs_storage, range(20)))
    finally:
        stop.set()
        reader.join()

    slowest = max(took for _, took in answers)
    for response, _ in answers:
        expect_error(response, 503, "storage.unavailable")
    assert slowest <= BOUND + SLACK, f"a storage-bound request took {slowest:.2f} s"
    assert prompt, "no request that needs no storage was answered meanwhile"
    assert max(prompt) <= PROMPT, f"a listing took {max(prompt):.2f} s"
    print(
        f"\nblack hole: 20 storage-bound answers, slowest {slowest:.2f} s; "
        f"{len(prompt)} listings/GETs meanwhile, slowest {max(prompt):.3f} s"
    )

    # Storage known down (a worker's breaker is open): 503 at once, with Retry-After.
    quick = []
    for _ in range(4):
        response, took = timed(lambda: tenant.complete(pending[0]["id"]))
        expect_error(response, 503, "storage.unavailable")
        assert took <= BOUND + SLACK
        if took < 0.5:
            quick.append(response)
    assert quick, "no worker's circuit breaker opened"
    assert all("retry-after" in response.headers for response in quick)
    assert listed_status(tenant, pending[0]["id"]) == "pending"  # nothing changed

    # The proxy forwards again: the same server recovers, nothing was lost.
    proxy.mode = "forward"
    took = recovered(faulty)
    for file in pending:
        again = retrying(lambda f=file: tenant.complete(f["id"]))  # type: ignore[misc]
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "complete"
    expect_error(retrying(lambda: tenant.complete(never_sent["id"])), 409, "upload.not_received")
    assert tenant.download(done["id"]) == b"complete before the outage\n"
    assert_no_complete_file_without_its_object(tenant)
    assert "Traceback" not in faulty.stderr()
    print(f"recovered {took:.2f} s after the proxy forwarded again")


def test_dropped_connections_answer_503_at_once_and_recover(
    faulty: BrokerServer, proxy: FaultProxy
) -> None:
    tenant = faulty.tenant()
    file = put_pending(tenant, b"before the drop\n")
    proxy.mode = "drop"
    for _ in range(3):
        response, took = timed(lambda: tenant.complete(file["id"]))
        expect_error(response, 503, "storage.unavailable")
        assert took <= BOUND + SLACK
    health, took = timed(lambda: faulty.client().get("/v1/health"))
    expect_error(health, 503, "storage.unavailable")
    assert took <= BOUND + SLACK
    assert listed_status(tenant, file["id"]) == "pending"

    proxy.mode = "forward"
    recovered(faulty)
    done = retrying(lambda: tenant.complete(file["id"]))
    assert done.status_code == 200, done.text
    assert tenant.download(file["id"]) == b"before the drop\n"
    assert_no_complete_file_without_its_object(tenant)
