"""Health, metrics, the OpenAPI document, and CORS."""

from __future__ import annotations

from collections.abc import Callable

from broker.errors import CATALOGUE

from support import Client, Harness, StorageBackend, on_backends


def test_health_is_open_and_ok(client: Client) -> None:
    response = client.get("/v1/health")
    assert response.status_code == 200
    assert response.json["status"] == "ok"


def test_metrics_count_requests_by_route(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(BROKER_METRICS="public")
    headers = harness.key()
    harness.upload(headers, b"abc")
    text = harness.client.get("/metrics").get_data(as_text=True)
    assert 'broker_http_requests_total{method="POST",route="/v1/files",status="201"}' in text
    assert 'broker_upload_completions_total{result="complete"}' in text
    assert "broker_http_request_duration_seconds_bucket" in text


def test_openapi_documents_every_route_and_schema(harness: Harness) -> None:
    doc = harness.client.get("/openapi.json").json
    assert doc["openapi"].startswith("3.")
    documented = {
        (path, method.upper()) for path, ops in doc["paths"].items() for method in ops
    } - {("/v1/blobs/{token}", "HEAD")}
    blob = doc["paths"]["/v1/blobs/{token}"]
    assert {"206", "304"} <= set(blob["get"]["responses"]) & set(blob["head"]["responses"])
    served = set()
    for rule in harness.app.url_map.iter_rules():
        path = rule.rule.replace("<path:key>", "{key}")
        for part in ("file_id", "bucket", "token", "key_id"):
            path = path.replace(f"<{part}>", "{" + part + "}")
        assert rule.methods is not None
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, method))
    assert served == documented
    create = doc["components"]["schemas"]["FileCreate"]
    assert set(create["required"]) == {"name", "size", "mime_type"}
    assert {"id", "status", "offset", "upload", "download_url"} <= set(
        doc["components"]["schemas"]["File"]["properties"]
    )
    post = doc["paths"]["/v1/files"]["post"]
    assert "upload.size_exceeds_limit" in post["responses"]["413"]["description"]


def test_every_error_code_in_the_catalogue_is_documented(harness: Harness) -> None:
    text = harness.client.get("/openapi.json").get_data(as_text=True)
    undocumented = [c for c in CATALOGUE if c not in text and c not in ("rate_limited",)]
    assert not undocumented


@on_backends("local")
def test_cors_is_off_unless_configured(
    make_harness: Callable[..., Harness], storage_backend: StorageBackend
) -> None:
    """The broker's CORS, down to its blob URLs' answers: the embedded store's (an S3
    bucket's CORS is set by ``broker s3 setup``: tests/storage/test_s3.py)."""
    closed = make_harness(storage_backend)
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "PUT"}
    assert (
        "Access-Control-Allow-Origin"
        not in closed.client.options("/v1/files", headers=preflight).headers
    )
    open_ = make_harness(storage_backend, BROKER_CORS_ORIGINS="https://app.example")
    allowed = open_.client.options("/v1/blobs/token", headers=preflight)
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "PUT" in allowed.headers["Access-Control-Allow-Methods"]
    other = open_.client.options(
        "/v1/blobs/token", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in other.headers
    headers = open_.key()
    done = open_.upload(headers, b"abc")
    blob = open_.download(done["download_url"], Origin="https://app.example")
    assert "ETag" in blob.headers["Access-Control-Expose-Headers"]
