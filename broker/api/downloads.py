"""``/v1/downloads/{token}``: the broker's own signed download links (no API key), and the
download answer every download route shares: a 302 to the signed URL, or its JSON form."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request, stream_with_context

from ..downloads import Redirect
from ..models import SignedDownload
from ..schemas import DownloadQuerySchema, DownloadSchema
from . import service
from .operations import operation

bp = Blueprint("downloads", __name__, url_prefix="/v1/downloads")

DOWNLOAD_HEADERS = {"Cache-Control": "no-store", "Vary": "Accept"}
"""Every download answer: never cached (the URL expires), and it depends on ``Accept``."""
DOWNLOAD_ANSWERS: dict[str, Any] = {
    "response": (200, DownloadSchema),
    "query": DownloadQuerySchema,
}
"""What every download route declares: the JSON form (200) chosen by ``wants_url`` (OpenAPI
ignores an ``Accept`` parameter: the descriptions say how it chooses)."""
REDIRECT = (302, "Redirect (Location) to the signed URL: the answer unless the JSON form is asked")


def wants_url(query: dict[str, Any]) -> bool:
    """Whether to answer the JSON form: ``?redirect=false``; else (no ``redirect``) when
    ``Accept`` prefers ``application/json`` to every other type it lists. A browser's
    default ``Accept`` (``*/*``, or HTML first) gets the redirect."""
    if "redirect" in query:
        return not query["redirect"]
    json_q, other_q = 0.0, 0.0
    for value, quality in request.accept_mimetypes:
        if value.lower() == "application/json":
            json_q = max(json_q, quality)
        else:
            other_q = max(other_q, quality)
    return json_q > other_q


def redirect(url: str) -> Response:
    """The 302 to a signed URL."""
    return Response(status=302, headers={"Location": url, **DOWNLOAD_HEADERS})


def as_url(signed: SignedDownload) -> tuple[SignedDownload, dict[str, str]]:
    """The JSON form: ``{"url", "expires_at"}`` (dumped by the operation's schema)."""
    return signed, dict(DOWNLOAD_HEADERS)


@bp.get("/<token>")
@operation(
    summary="Follow a download link: 302 to storage once the file is complete",
    errors=(403, 404, 409, 422, 503),
    auth=False,
    produces="application/octet-stream",
    also=(REDIRECT,),
    description="Answers 409 until the file is complete. Then a 302 to a fresh signed URL; "
    "or, with ?redirect=false or Accept: application/json, 200 {url, expires_at}. Active "
    "content on storage that cannot mark it nosniff (S3) is streamed here (200, the file's "
    "own type, as an attachment, nosniff); its JSON form gives a fresh link that streams.",
    **DOWNLOAD_ANSWERS,
)
def follow(token: str, query: dict[str, Any]) -> Any:
    """302 to storage once the file is complete (409 before), or its JSON form; active
    content from storage that cannot mark it ``nosniff`` is streamed here, as an
    attachment, with that header."""
    downloads = service().downloads
    if wants_url(query):
        return as_url(downloads.link(token))
    target = downloads.open(token)
    if isinstance(target, Redirect):
        return redirect(target.url)
    response = Response(stream_with_context(target.chunks), mimetype=None)
    response.headers["Content-Type"] = target.content_type
    response.headers["Content-Length"] = str(target.size)
    response.headers["Content-Disposition"] = target.disposition
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["Vary"] = "Accept"
    return response
