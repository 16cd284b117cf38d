"""Health, the OpenAPI document and Prometheus metrics."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from .. import health as health_check
from .. import metrics, openapi
from ..schemas import HealthSchema
from . import service
from .operations import operation

bp = Blueprint("meta", __name__)


@bp.get("/v1/health")
@operation(
    summary="Health of the database and storage", response=(200, HealthSchema), errors=(503,),
    auth=False, description="checks.storage_cors (S3 with BROKER_CORS_ORIGINS set): whether "
    "the bucket's CORS rule admits those origins: ok, missing: <what>, or unknown: <why>. "
    "It never makes health fail.",
)  # fmt: skip
def health() -> health_check.Health:
    """200 when the database and storage answer; 503 with the failing check otherwise."""
    services = service()
    return health_check.check(services.ctx, services.storage_cors)


@bp.get("/openapi.json")
@operation(summary="This OpenAPI 3 document", response=(200, None), auth=False,
           produces="application/json")  # fmt: skip
def openapi_document() -> Response:
    """The OpenAPI 3 document, generated from the routes and their schemas."""
    document = current_app.extensions.get("openapi")
    if document is None:
        document = current_app.extensions["openapi"] = openapi.document(current_app)
    return jsonify(document)


@bp.get("/metrics")
@operation(summary="Prometheus metrics", response=(200, None), auth=False, errors=(401, 404),
           produces="text/plain",
           description="Who may read them: BROKER_METRICS (default: a bearer of "
           "BROKER_METRICS_TOKEN; 404 while none is set).")  # fmt: skip
def prometheus() -> Response:
    """Prometheus text format, as ``BROKER_METRICS`` allows (README: Observability)."""
    metrics.authorize(service().settings, request.headers.get("Authorization", ""))
    return metrics.render()
