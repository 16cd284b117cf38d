"""``/v1/blobs/{token}``: the signed PUT and GET/HEAD endpoints of a ``SelfServedStorage``.

The request's headers are the HTTP layer's to check (here, before a byte of the body is
read, so a lie costs no disk); the token and the body are storage's.
"""

from __future__ import annotations

from flask import Blueprint, Response, request, send_file
from werkzeug.exceptions import ClientDisconnected
from werkzeug.http import quote_etag

from ..errors import BrokerError
from ..naming import normalise_mime_type
from ..schemas import BlobStoredSchema
from ..storage import PutGrant, SelfServedStorage
from . import service
from .body import recv_body
from .operations import operation

bp = Blueprint("blobs", __name__, url_prefix="/v1/blobs")


@bp.put("/<token>")
@operation(
    summary="Store a body to a signed blob URL (embedded store)", response=(200, BlobStoredSchema),
    errors=(403, 404, 411, 412, 413, 422, 503), auth=False,
)  # fmt: skip
def put(token: str) -> tuple[dict[str, object], dict[str, str]]:
    """Store the body if it is exactly what the token declares and nothing is stored there
    yet (412 ``upload.already_stored``: a URL writes its object once); otherwise keep
    nothing."""
    storage = _self_served()
    grant = storage.grant_put(token)
    # No app-wide body cap applies here: the signed size is the limit, enforced while streaming.
    length = request.content_length
    if length is None and not request.environ.get("wsgi.input_terminated"):
        length = 0  # HTTP/1.1: neither Content-Length nor chunked framing means no body
    _check_headers(grant, content_type=request.headers.get("Content-Type"), content_length=length)
    try:
        info = storage.receive(grant, recv_body(request.stream))
    except ClientDisconnected:
        raise BrokerError(
            "upload.size_mismatch", "The body ended before Content-Length bytes arrived."
        ) from None
    stored = {"etag": info.etag, "size": info.size, "sha256": info.sha256}
    return stored, {"ETag": quote_etag(info.etag)}


@bp.get("/<token>")
@operation(
    summary="Read a signed blob URL (HEAD too; Range and conditional requests)",
    response=(200, None), errors=(403, 404, 416, 503), auth=False,
    produces="application/octet-stream", head=True,
    also=((206, "The requested Range"), (304, "Not modified (If-None-Match, If-Modified-Since)")),
)  # fmt: skip
def get(token: str) -> Response:
    """Serve the object (HEAD too), with Range, ETag and If-None-Match support."""
    storage = _self_served()
    grant = storage.grant_get(token)
    found = storage.locate(grant)
    if found is None:
        raise BrokerError("blob.not_found")
    try:
        response = send_file(
            found.path,
            mimetype=grant.content_type,
            as_attachment=grant.attachment,
            download_name=grant.filename,
            conditional=True,
            etag=found.info.etag,
            last_modified=found.stored_at,
        )
    except FileNotFoundError:  # deleted between lookup and open
        raise BrokerError("blob.not_found") from None
    response.headers["Content-Type"] = grant.content_type  # exactly as declared, no charset added
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.cache_control.no_cache = None
    response.cache_control.public = False
    response.cache_control.private = True
    response.cache_control.max_age = max(0, grant.expires_at - int(service().now()))
    return response


def _self_served() -> SelfServedStorage:
    """The app's storage, if it serves its own signed URLs; 404 ``route.not_found`` if not."""
    storage = service().storage
    if not isinstance(storage, SelfServedStorage):
        raise BrokerError("route.not_found", "Blob URLs exist only with local storage.")
    return storage


def _check_headers(
    grant: PutGrant, *, content_type: str | None, content_length: int | None
) -> None:
    """The request must declare what the grant does: 422 ``upload.type_mismatch`` for
    another Content-Type (a part's grant binds none), ``upload.size_mismatch`` for another
    Content-Length (a chunked body, with none, is held to the size while it streams)."""
    if grant.content_type is not None and (
        content_type is None or normalise_mime_type(content_type) != grant.content_type
    ):
        raise BrokerError(
            "upload.type_mismatch",
            f"Content-Type must be {grant.content_type!r}, as declared.",
        )
    if content_length is not None and content_length != grant.size:
        raise BrokerError(
            "upload.size_mismatch",
            f"Content-Length is {content_length}; the declared size is {grant.size}.",
        )
