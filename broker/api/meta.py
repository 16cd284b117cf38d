"""Health, the OpenAPI document and Prometheus metrics."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .. import metrics, openapi
from . import service

bp = Blueprint("meta", __name__)


@bp.get("/v1/health")
def health() -> Response:
    """200 when the database and storage answer; 503 with the failing check otherwise."""
    return jsonify(service().health())


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI 3 document, generated from the marshmallow schemas."""
    return jsonify(openapi.document())


@bp.get("/metrics")
def prometheus() -> Response:
    """Prometheus text format."""
    return metrics.render()
