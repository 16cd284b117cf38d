"""Fifty completes of one multipart file at once, under real gunicorn (two worker processes),
on the embedded store and on LocalStack (issue #9: main answered 15 of 50 with 409
``upload.not_received`` while another complete joined the parts).

Every answer is 200 with the completed file, or 409 ``upload.in_progress`` (retrying it
soon answers 200); the file ends complete with its bytes and one object.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .conftest import BrokerServer, S3Bucket, s3_env

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
PART = 5 * MiB
CALLERS = 50


@pytest.fixture(params=["local", "localstack"])
def server(
    request: pytest.FixtureRequest, start_broker: Callable[..., BrokerServer], tmp_path: Path
) -> BrokerServer:
    path = tmp_path / "buckets.json"
    path.write_text(
        json.dumps({"buckets": {"default": {"multipart_threshold": PART, "part_size": PART}}})
    )
    if request.param == "local":
        return start_broker(BROKER_BUCKETS=str(path))
    localstack = request.getfixturevalue("localstack")
    bucket = S3Bucket(name=localstack.new_bucket(), client=localstack.client())
    return start_broker(
        s3=bucket,
        BROKER_BUCKETS=str(path),
        BROKER_STORAGE_CONCURRENCY="16",  # this test is about the join, not shedding load
        **s3_env(localstack.endpoint, bucket.name),
    )


def test_fifty_concurrent_completes_under_gunicorn(server: BrokerServer) -> None:
    tenant = server.tenant()
    block = hashlib.sha256(b"gunicorn").digest() * (64 * 1024 // 32)
    data = (block * (7 * PART // len(block)))[: 6 * PART + 4321]
    file = tenant.declare(data, name="race.bin", mime_type="application/x-test")
    with httpx.Client(timeout=60, trust_env=False) as blobs:
        for part in file["upload"]["parts"]:
            body = data[part["offset"] : part["offset"] + part["size"]]
            reply = blobs.put(part["url"], content=body, headers=part["headers"])
            assert reply.status_code == 200, reply.text

    start = threading.Barrier(CALLERS)
    clients = [server.client(tenant.key) for _ in range(CALLERS)]
    path = f"/v1/files/{file['id']}/complete"

    def complete(client: httpx.Client) -> httpx.Response:
        start.wait()
        return client.post(path, json={})

    with ThreadPoolExecutor(max_workers=CALLERS) as pool:
        answers = list(pool.map(complete, clients))

    outcomes = [
        (a.status_code, a.json()["status"] if a.status_code == 200 else a.json()["error"]["code"])
        for a in answers
    ]
    assert set(outcomes) <= {(200, "complete"), (409, "upload.in_progress")}, outcomes
    for answer in answers:
        if answer.status_code == 200:
            assert answer.json()["id"] == file["id"]
    # A client told "in progress" completes again shortly and gets the file.
    for answer in answers:
        if answer.status_code == 409:
            time.sleep(1)
            again = tenant.complete(file["id"])
            assert again.status_code == 200, again.text
            break

    assert tenant.get(file["id"])["status"] == "complete"
    assert tenant.download(file["id"]) == data
    if server.s3 is None:
        stored = server.stored_files(tenant.storage_key(file))
        assert [p.suffix for p in stored] == [".blob", ".json"], "one object, no orphan"
        assert list((server.data_dir / "blobs" / "uploads").iterdir()) == []
    else:
        assert server.s3.head(tenant.storage_key(file)) is not None
    print(
        f"\n{(server.s3 and 's3') or 'local'}: "
        + ", ".join(f"{outcomes.count(o)} x {o}" for o in sorted(set(outcomes)))
    )
