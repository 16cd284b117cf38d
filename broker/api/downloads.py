"""``/v1/downloads/{token}``: the broker's own signed download links (no API key)."""

from __future__ import annotations

from flask import Blueprint, Response, stream_with_context

from ..downloads import Redirect
from . import service
from .operations import operation

bp = Blueprint("downloads", __name__, url_prefix="/v1/downloads")


@bp.get("/<token>")
@operation(
    summary="Follow a download link: 302 to storage once the file is complete",
    response=(302, None),
    errors=(403, 404, 409, 503),
    auth=False,
    produces="application/octet-stream",
)
def follow(token: str) -> Response:
    """302 to storage once the file is complete (409 before); active content from storage
    that cannot mark it ``nosniff`` is streamed here, as an attachment, with that header."""
    target = service().downloads.open(token)
    if isinstance(target, Redirect):
        return Response(status=302, headers={"Location": target.url, "Cache-Control": "no-store"})
    response = Response(stream_with_context(target.chunks), mimetype=None)
    response.headers["Content-Type"] = target.content_type
    response.headers["Content-Length"] = str(target.size)
    response.headers["Content-Disposition"] = target.disposition
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-store"
    return response
