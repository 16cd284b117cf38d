"""``/v1/files``: declare, complete, read, download, delete and abort files."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ..errors import BrokerError
from ..models import Scope
from ..schemas import CompleteSchema, load_file_create, render_file
from . import json_body, principal, service

bp = Blueprint("files", __name__, url_prefix="/v1/files")
_complete = CompleteSchema()


@bp.post("")
def create() -> tuple[Response, int]:
    """Declare a file; answer its upload and download URLs."""
    who = principal(Scope.FILES_WRITE)
    if request.mimetype == "multipart/form-data":
        raise BrokerError(
            "request.malformed", "Proxied form uploads are not available in this version."
        )
    data = json_body(load_file_create)
    declared = service().declare(who, data, request.headers.get("Idempotency-Key"))
    response = jsonify(declared.body)
    if declared.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response, 201


@bp.get("/<file_id>")
def get(file_id: str) -> Response:
    """One file; while pending, how many bytes storage has received."""
    return jsonify(render_file(service().get(principal(), file_id)))


@bp.post("/<file_id>/complete")
def complete(file_id: str) -> Response:
    """Validate the stored object against the declaration and finalise the file."""
    who = principal(Scope.FILES_WRITE)
    body = json_body(_complete, optional=True)
    return jsonify(render_file(service().complete(who, file_id, body.get("parts"))))


@bp.get("/<file_id>/content")
def content(file_id: str) -> Response:
    """302 to a fresh signed download URL."""
    url = service().download_url(principal(), file_id)
    return Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})


@bp.delete("/<file_id>")
def delete(file_id: str) -> Response:
    """Delete the file and its stored object; answer the file as it was."""
    return jsonify(render_file(service().delete(principal(), file_id)))


@bp.post("/<file_id>/abort")
def abort(file_id: str) -> Response:
    """Give up a pending upload and free its storage."""
    return jsonify(render_file(service().abort(principal(), file_id)))
