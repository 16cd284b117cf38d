"""Prometheus metrics: request counts and latency per route, upload outcomes.

Under gunicorn with several workers, set ``PROMETHEUS_MULTIPROC_DIR`` (the bundled gunicorn
configuration does) so ``/metrics`` aggregates every worker, not just the one that answers.
"""

from __future__ import annotations

import os
import time

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
    g.metrics_started = time.perf_counter()


def _record(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
    REQUESTS.labels(request.method, route, str(response.status_code)).inc()
    if started is not None:
        LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
    return response


def render() -> Response:
    """The Prometheus text exposition of every metric."""
    return Response(generate_latest(_registry()), mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """Time every request and count its outcome by route template (bounded label set)."""
    app.before_request(_start)
    app.after_request(_record)
