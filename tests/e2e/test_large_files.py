"""A large file goes up in parts through real gunicorn, survives an interrupted part, resumes,
completes and downloads byte-identical: on the embedded store and on LocalStack.

The default run sends a 24 MiB file in 5 MiB parts; ``-m slow`` sends 2 GiB (the issue's
"done when"), streamed from a file on disk so the test itself stays small in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import BrokerServer, RawConnection, S3Bucket, s3_env

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
GiB = 1024 * MiB
CHUNK = 1 * MiB


def _source(path: Path, size: int) -> str:
    """Write ``size`` pseudo-random bytes to ``path`` (no two nearby MiB alike); return
    their SHA-256."""
    block = random.Random(size).randbytes(CHUNK + 4096)
    hasher = hashlib.sha256()
    with open(path, "wb") as out:
        written = index = 0
        while written < size:
            start = (index * 37) % 4096
            piece = block[start : start + min(CHUNK, size - written)]
            hasher.update(piece)
            out.write(piece)
            written += len(piece)
            index += 1
    return hasher.hexdigest()


def _slice(path: Path, offset: int, size: int) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        handle.seek(offset)
        left = size
        while left:
            chunk = handle.read(min(CHUNK, left))
            assert chunk
            left -= len(chunk)
            yield chunk


def _buckets(directory: Path, part_size: int) -> str:
    path = directory / "buckets.json"
    path.write_text(
        json.dumps(
            {
                "buckets": {
                    "default": {
                        "max_size": 3 * GiB,
                        "multipart_threshold": 5 * MiB,
                        "part_size": part_size,
                    }
                }
            }
        )
    )
    return str(path)


@pytest.fixture(params=["local", "localstack"])
def server(
    request: pytest.FixtureRequest,
    start_broker: Callable[..., BrokerServer],
    tmp_path: Path,
) -> BrokerServer:
    size = request.node.callspec.params["size"]
    buckets = _buckets(tmp_path, 64 * MiB if size > GiB else 5 * MiB)
    if request.param == "local":
        return start_broker(BROKER_BUCKETS=buckets)
    localstack = request.getfixturevalue("localstack")
    bucket = S3Bucket(name=localstack.new_bucket(), client=localstack.client())
    return start_broker(
        s3=bucket, BROKER_BUCKETS=buckets, **s3_env(localstack.endpoint, bucket.name)
    )


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(24 * MiB + 12_345, id="24MiB"),
        pytest.param(2 * GiB, id="2GiB", marks=pytest.mark.slow),
    ],
)
def test_parts_resume_after_an_interrupted_part_and_round_trip(
    server: BrokerServer, tmp_path: Path, size: int
) -> None:
    source = tmp_path / "source.bin"
    digest = _source(source, size)
    tenant = server.tenant()
    created = tenant.http.post(
        "/v1/files",
        json={"name": "big.bin", "size": size, "mime_type": "application/x-test", "sha256": digest},
    )
    assert created.status_code == 201, created.text
    file = created.json()
    parts = file["upload"]["parts"]
    assert len(parts) >= 3
    assert sum(p["size"] for p in parts) == size

    # Part 2 is cut off half-way: the connection drops before its bytes are all sent.
    # (S3 discards such a body; LocalStack keeps the half it got. Either way it must not
    # count as received: the broker compares every part's length with the plan.)
    cut = parts[1]
    with RawConnection(cut["url"]) as conn:
        conn.send_head("PUT", {**cut["headers"], "Connection": "close"}, path=None)
        sent = 0
        for chunk in _slice(source, cut["offset"], cut["size"] // 2):
            conn.send(chunk)
            sent += len(chunk)
    # Every other part goes up.
    etags = {}
    with httpx.Client(timeout=120) as blobs:
        for part in parts:
            if part["part_number"] == cut["part_number"]:
                continue
            reply = blobs.put(
                part["url"],
                content=_slice(source, part["offset"], part["size"]),
                headers=part["headers"],
            )
            assert reply.status_code == 200, reply.text
            etags[part["part_number"]] = reply.headers["ETag"]

        # The client lost its state: it asks the broker what storage holds.
        state = tenant.get(file["id"])
        received = {p["part_number"] for p in state["parts_received"]}
        assert received == {p["part_number"] for p in parts} - {cut["part_number"]}
        assert state["offset"] == size - cut["size"]
        assert [p["part_number"] for p in state["upload"]["parts"]] == [cut["part_number"]]
        early = tenant.http.post(f"/v1/files/{file['id']}/complete", json={})
        assert early.status_code == 409
        # Missing (the embedded store keeps nothing of a cut-off part) or of the wrong
        # length (LocalStack keeps the half): not received either way, nothing is joined.
        assert early.json()["error"]["code"] == "upload.part_missing"
        assert early.json()["error"]["details"] == {"missing_parts": [cut["part_number"]]}

        # Only the missing part is sent again, with freshly signed URLs.
        fresh = tenant.http.post(f"/v1/files/{file['id']}/parts", json={})
        assert fresh.status_code == 200, fresh.text
        (again,) = fresh.json()["upload"]["parts"]
        reply = blobs.put(
            again["url"],
            content=_slice(source, again["offset"], again["size"]),
            headers=again["headers"],
        )
        assert reply.status_code == 200, reply.text
        etags[again["part_number"]] = reply.headers["ETag"]

    listed = [{"part_number": n, "etag": etags[n]} for n in sorted(etags)]
    # Joining (and, with a declared SHA-256, reading the object once to check it) takes time
    # in proportion to the size: give completion as long as a big file needs.
    done = tenant.http.post(f"/v1/files/{file['id']}/complete", json={"parts": listed}, timeout=600)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "complete"

    hasher = hashlib.sha256()
    length = 0
    with (
        httpx.Client(timeout=120, follow_redirects=True) as reader,
        reader.stream("GET", done.json()["download_url"]) as download,
    ):
        assert download.status_code == 200
        for chunk in download.iter_bytes(CHUNK):
            hasher.update(chunk)
            length += len(chunk)
    assert (length, hasher.hexdigest()) == (size, digest)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(source)
