"""``/v1/files``: declare, complete, read, download, delete and abort files."""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request

from ..models import Principal, Scope
from ..schemas import (
    CompleteSchema,
    FormUploadSchema,
    PartsRequestSchema,
    load_file_create,
    render_file,
)
from . import json_body, load, principal, service
from .forms import read_form

bp = Blueprint("files", __name__, url_prefix="/v1/files")
_form = FormUploadSchema()
_complete = CompleteSchema()
_parts = PartsRequestSchema()


@bp.post("")
def create() -> tuple[Response, int]:
    """Declare a file (JSON) and answer its URLs, or receive one (multipart/form-data)."""
    who = principal(Scope.FILES_WRITE)
    if request.mimetype == "multipart/form-data":
        return _receive(who)
    data = json_body(load_file_create)
    declared = service().declare(who, data, request.headers.get("Idempotency-Key"))
    response = jsonify(declared.body)
    if declared.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response, 201


def _receive(who: Principal) -> tuple[Response, int]:
    """A proxied upload: the form's fields declare, its ``file`` streams to storage."""
    form = read_form(request)
    try:
        declared = service().receive_form(
            who,
            load(_form, form.declaration()),
            form.chunks(),
            request.headers.get("Idempotency-Key"),
        )
    finally:
        g.body_read = form.finished  # else errors answer with Connection: close
    response = jsonify(declared.body)
    if declared.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    if not form.finished:  # a replay answers without reading the body again
        response.headers["Connection"] = "close"
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


@bp.post("/<file_id>/parts")
def parts(file_id: str) -> Response:
    """Sign part URLs again for a pending multipart upload (resume after they expired)."""
    who = principal(Scope.FILES_WRITE)
    body = json_body(_parts, optional=True)
    view = service().reissue_parts(who, file_id, body.get("part_numbers"), body.get("expires_in"))
    return jsonify(render_file(view))


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
