"""Prometheus metrics: requests per route, URLs issued, completions by outcome, bytes
validated, storage and database calls (latency, errors), housekeeping; and who may read
them (``BROKER_METRICS``).

Under gunicorn with several workers, set ``PROMETHEUS_MULTIPROC_DIR`` (the bundled gunicorn
configuration does) so ``/metrics`` aggregates every worker, not just the one that answers.
"""

from __future__ import annotations

import hmac
import os
import time
from typing import TYPE_CHECKING

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

from .errors import BrokerError

if TYPE_CHECKING:
    from .config import Settings

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REQUESTS = Counter(
    "broker_http_requests_total", "HTTP requests answered.", ["method", "route", "status"]
)
LATENCY = Histogram(
    "broker_http_request_duration_seconds",
    "Time to answer an HTTP request (for blob PUTs, includes receiving the body).",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DECLARED = Counter("broker_files_declared_total", "Files declared (URL pairs issued).", ["bucket"])
COMPLETIONS = Counter(
    "broker_upload_completions_total", "Completion attempts by outcome.", ["result"]
)
URLS_ISSUED = Counter(
    "broker_urls_issued_total",
    "Signed URLs issued: upload (one PUT), part (multipart), download (storage's), "
    "download_link (the broker's own link).",
    ["kind"],
)
UPLOAD_URLS, PART_URLS = URLS_ISSUED.labels("upload"), URLS_ISSUED.labels("part")
DOWNLOAD_URLS, DOWNLOAD_LINKS = URLS_ISSUED.labels("download"), URLS_ISSUED.labels("download_link")
BYTES_VALIDATED = Counter(
    "broker_bytes_validated_total", "Bytes of completed files checked against storage."
)
STORAGE_LATENCY = Histogram(
    "broker_storage_call_duration_seconds",
    "Time of one guarded storage (S3) call.",
    ["action"],
    buckets=_FAST,
)
STORAGE_ERRORS = Counter(
    "broker_storage_errors_total",
    "Storage calls that failed (unavailable: no answer or a 5xx; refused: bulkhead full or "
    "breaker open, storage not asked).",
    ["action", "reason"],
)
DB_LATENCY = Histogram(
    "broker_db_transaction_duration_seconds",
    "Time of one database transaction (write: including its group commit).",
    ["kind"],
    buckets=_FAST,
)
DB_ERRORS = Counter(
    "broker_db_errors_total", "Transactions that met an unavailable database.", ["kind"]
)
SWEPT = Counter(
    "broker_sweep_actions_total",
    "Housekeeping by `broker sweep`: files expired, orphan uploads aborted, orphan objects "
    "and scratch files removed.",
    ["action"],
)


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return DEFAULT_REGISTRY


def _start() -> None:
    g.request_started = time.perf_counter()  # the access log's duration too


def _record(response: Response) -> Response:
    started = g.get("request_started")
    route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
    REQUESTS.labels(request.method, route, str(response.status_code)).inc()
    if started is not None:
        LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
    return response


def authorize(settings: Settings, authorization: str) -> None:
    """Whether this caller may read ``/metrics``: ``public`` anyone; ``token`` (the default)
    a bearer of ``BROKER_METRICS_TOKEN`` (404 while none is set); ``off`` nobody (404)."""
    if settings.metrics == "public":
        return
    token = settings.metrics_token
    if settings.metrics == "off" or token is None:
        raise BrokerError("route.not_found")
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise BrokerError("auth.missing_key", "Send Authorization: Bearer <BROKER_METRICS_TOKEN>.")
    if not hmac.compare_digest(presented.strip().encode(), token.encode()):
        raise BrokerError("auth.invalid_key", "The metrics token is wrong.")


def render() -> Response:
    """The Prometheus text exposition of every metric."""
    return Response(generate_latest(_registry()), mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """Time every request and count its outcome by route template (bounded label set)."""
    app.before_request(_start)
    app.after_request(_record)
