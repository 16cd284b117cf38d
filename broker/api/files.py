"""``/v1/files``: declare, complete, read, download, delete and abort files."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, request

from ..loading import loader
from ..models import FileView, Principal, Scope
from ..schemas import (
    CompleteSchema,
    FileCreateSchema,
    FileSchema,
    FormUploadSchema,
    PartsRequestSchema,
)
from ..uploads.declare import Declared
from . import limits, load, service
from .downloads import DOWNLOAD_ANSWERS, REDIRECT, as_url, redirect, wants_url
from .forms import read_form
from .operations import operation

bp = Blueprint("files", __name__, url_prefix="/v1/files")
_form = loader(FormUploadSchema)
_ON_A_PENDING_FILE: dict[str, Any] = {
    "response": (200, FileSchema),
    "errors": (400, 401, 403, 404, 409, 422, 503),
    "optional_body": True,
    "scope": Scope.FILES_WRITE,
    "token": True,
}
"""What completing a file and re-signing its parts share: a write on one file, body optional
(a browser token may do it to the files it declared)."""


@bp.post("")
@operation(
    summary="Declare a file and get its upload and download URLs",
    response=(201, FileSchema),
    errors=(400, 401, 403, 404, 409, 413, 422, 503),
    body=FileCreateSchema,
    form=FormUploadSchema,
    scope=Scope.FILES_WRITE,
    token=True,
    headers=("Idempotency-Key",),
    description="JSON declares a file and answers it pending with its upload URL. "
    "multipart/form-data is a proxied upload: the broker streams the form's last field "
    "`file` to storage and answers the file complete.",
)
def create(who: Principal, body: dict[str, Any] | None) -> Any:
    """Declare a file (JSON) and answer its URLs, or receive one (multipart/form-data)."""
    idempotency_key = request.headers.get("Idempotency-Key")
    if body is None:
        return _receive(who, idempotency_key)
    _count_declare(body["bucket"])
    return _created(service().declarations.declare(who, body, idempotency_key))


def _receive(who: Principal, idempotency_key: str | None) -> Any:
    """A proxied upload: the form's fields declare, its ``file`` streams to storage."""
    form = read_form(request)
    try:
        declaration = load(_form, form.declaration())
        _count_declare(declaration["bucket"])
        declared = service().proxied.receive(who, declaration, form.chunks(), idempotency_key)
    finally:
        g.body_read = form.finished  # else errors answer with Connection: close
    view, headers = _created(declared)
    if not form.finished:  # a replay answers without reading the body again
        headers["Connection"] = "close"
    return view, headers


def _count_declare(bucket: str) -> None:
    """A declare counts against its bucket's own rate limit, if it has one."""
    policy = service().settings.buckets.get(bucket)
    limits.declare(policy.rate_limit if policy is not None else None, bucket)


def _created(declared: Declared) -> Any:
    """The file, or the recorded first answer, with ``Idempotent-Replayed`` on a replay."""
    headers = {"Idempotent-Replayed": "true"} if declared.replayed else {}
    if declared.recorded is not None:
        response = jsonify(declared.recorded)
        response.status_code = 201
        response.headers.update(headers)
        return response
    return declared.view, headers


@bp.get("/<file_id>")
@operation(
    summary="A file; while pending, the bytes received", response=(200, FileSchema),
    errors=(401, 403, 404, 503), token=True,
)  # fmt: skip
def get(who: Principal, file_id: str) -> FileView:
    """One file; while pending, how many bytes storage has received."""
    return service().files.get(who, file_id)


@bp.post("/<file_id>/complete")
@operation(
    summary="Validate the stored object and finalise", body=CompleteSchema,
    **{**_ON_A_PENDING_FILE, "errors": (400, 401, 403, 404, 409, 412, 422, 503)},
)  # fmt: skip
def complete(who: Principal, file_id: str, body: dict[str, Any]) -> FileView:
    """Validate the stored object against the declaration and finalise the file."""
    return service().completions.complete(who, file_id, body.get("parts"))


@bp.post("/<file_id>/parts")
@operation(
    summary="Sign part URLs again for a pending multipart upload (resume)",
    body=PartsRequestSchema,
    **_ON_A_PENDING_FILE,
)
def parts(who: Principal, file_id: str, body: dict[str, Any]) -> FileView:
    """Sign part URLs again for a pending multipart upload (resume after they expired)."""
    return service().parts.reissue(who, file_id, body.get("part_numbers"), body.get("expires_in"))


@bp.get("/<file_id>/content")
@operation(
    summary="Download: 302 to a fresh signed URL, or that URL as JSON",
    errors=(401, 403, 404, 409, 422, 503),
    also=(REDIRECT,),
    description="A complete file: 302 to a fresh signed GET URL; with ?redirect=false or "
    "Accept: application/json, 200 {url, expires_at} instead (what a browser's fetch() "
    "follows cross-origin). 409 upload.not_received while pending.",
    token=True,
    **DOWNLOAD_ANSWERS,
)
def content(who: Principal, file_id: str, query: dict[str, Any]) -> Any:
    """302 to a fresh signed download URL, or its JSON form."""
    signed = service().downloads.signed(who, file_id)
    return as_url(signed) if wants_url(query) else redirect(signed.url)


@bp.delete("/<file_id>")
@operation(
    summary="Delete a file and its stored object", response=(200, FileSchema),
    errors=(401, 403, 404, 503), scope=Scope.FILES_DELETE,
)  # fmt: skip
def delete(who: Principal, file_id: str) -> FileView:
    """Delete the file and its stored object; answer the file as it was."""
    return service().files.delete(who, file_id)


@bp.post("/<file_id>/abort")
@operation(
    summary="Give up a pending upload and free its storage", response=(200, FileSchema),
    errors=(401, 403, 404, 409, 503), scope=Scope.FILES_WRITE, token=True,
)  # fmt: skip
def abort(who: Principal, file_id: str) -> FileView:
    """Give up a pending upload and free its storage."""
    return service().files.abort(who, file_id)
