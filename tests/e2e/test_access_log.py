"""Real gunicorn with BROKER_LOG_FORMAT=json: one JSON access line per request, by route,
and no key, token or signed URL anywhere in the server's output."""

from __future__ import annotations

import json
from collections.abc import Callable

from .conftest import BrokerServer


def test_json_access_lines_carry_no_secret(start_broker: Callable[..., BrokerServer]) -> None:
    server = start_broker(BROKER_LOG_FORMAT="json")
    tenant = server.tenant()
    file = tenant.upload(b"hello, logs\n", name="hello.txt")
    content = tenant.http.get(f"/v1/files/{file['id']}/content")
    download_url = content.headers["location"]
    assert tenant.blobs.get(download_url).content == b"hello, logs\n"
    declared = tenant.declare(b"pending")
    tenant.blobs.get(declared["download_url"])
    server.client("not-a-real-key-123").get("/v1/buckets")
    output = server.stderr() + server.stdout_path.read_text(errors="replace")
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    routes = {
        (line["method"], line["route"]) for line in lines if line["logger"] == "broker.access"
    }
    assert ("PUT", "/v1/blobs/<token>") in routes
    assert ("GET", "/v1/blobs/<token>") in routes
    assert ("GET", "/v1/downloads/<token>") in routes
    put = next(line for line in lines if line.get("route") == "/v1/blobs/<token>")
    assert put["tenant"] is None
    assert put["request_id"].startswith("req_")
    secrets = [
        tenant.key,
        server.admin_key,
        "not-a-real-key-123",
        declared["upload"]["url"].rsplit("/", 1)[1],
        declared["download_url"].rsplit("/", 1)[1],
        download_url.rsplit("/", 1)[1].split("?")[0],
        (server.data_dir / "secret_key").read_text().strip(),
    ]
    for secret in secrets:
        assert secret not in output
