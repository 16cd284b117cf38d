"""HTTP layer: blueprints of thin views, request ids, and the helpers the views share."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any, cast

from flask import Flask, Response, current_app, g, request
from marshmallow import ValidationError

from ..auth import require
from ..errors import BrokerError, validation_error
from ..loading import Load
from ..models import Principal, Scope
from ..services import Services

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def service() -> Services:
    """The app's use cases."""
    return cast(Services, current_app.extensions["broker"])


def principal(scope: Scope | None = None, *, token: bool = False) -> Principal:
    """Who is calling: from ``Authorization: Bearer <key>`` or ``x-api-key`` (a key or a
    browser token; a token bound to an origin only with that ``Origin`` header).

    With ``scope``, also 403 early, before the body is parsed (the service checks again);
    a browser token is refused unless the route takes one (``token``). Resolved once per
    request: the principal, or the refusal, is kept on ``g`` (the rate limiter asks first,
    ``api/limits.py``).
    """
    found: Principal | None = g.get("principal")
    if found is None:
        refused: BrokerError | None = g.get("auth_refused")
        if refused is not None:
            raise refused
        presented = request.headers.get("x-api-key")
        auth = request.headers.get("Authorization", "")
        scheme, _, credentials = auth.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            presented = credentials.strip()
        try:
            found = service().auth.authenticate(presented)
            grant = found.token
            if grant is not None and grant.origin is not None:
                origin = request.headers.get("Origin", "")
                if origin.lower() != grant.origin:
                    raise BrokerError(
                        "auth.forbidden", f"This token may be used from {grant.origin} only."
                    )
        except BrokerError as exc:
            g.auth_refused = exc
            raise
        g.principal = found
    require(found, scope, token=token)
    return found


def json_body(schema: Load, *, optional: bool = False) -> dict[str, Any]:
    """Parse and validate a JSON body (400 unparseable, 413 over the cap, 422 invalid)."""
    raw = _capped_body(service().settings.max_json_bytes)
    if not raw.strip() and optional:
        data: Any = {}
    else:
        if not request.is_json:
            raise BrokerError(
                "request.malformed", "Send a JSON body with Content-Type: application/json."
            )
        try:
            data = json.loads(raw)
        except RecursionError:  # nested deeper than the parser goes: still the client's fault
            raise BrokerError("request.malformed", "The body is nested too deeply.") from None
        except ValueError:  # not JSON, or not UTF-8/16/32
            data = None
        if data is None:
            raise BrokerError("request.malformed", "The body is not valid JSON.")
    if not isinstance(data, dict):
        raise BrokerError("request.malformed", "The body must be a JSON object.")
    return load(schema, data)


def _capped_body(cap: int) -> bytes:
    """The whole body, at most ``cap`` bytes (413 ``request.too_large`` beyond).

    A Content-Length over the cap is refused before reading; a chunked body (no length)
    is read until it ends or passes the cap. werkzeug's own limit on a chunked stream
    ends the read at the limit without an error, so the cap is counted here, one byte
    past it. Only a body read to its end marks the request's body read (else the error
    answer says ``Connection: close``).
    """
    request.max_content_length = cap + 1
    if (request.content_length or 0) > cap:
        raise BrokerError("request.too_large", f"The JSON body is over {cap} bytes.")
    stream = request.stream
    pieces: list[bytes] = []
    total = 0
    while piece := stream.read(min(65536, cap + 1 - total) or 1):
        pieces.append(piece)
        total += len(piece)
        if total > cap:
            raise BrokerError("request.too_large", f"The JSON body is over {cap} bytes.")
    g.body_read = True
    raw = b"".join(pieces)
    request._cached_data = raw  # what get_data() answers from now on
    return raw


def load(schema: Load, data: Any) -> dict[str, Any]:
    """Validate with a schema's load (``loading.loader``); 422 ``validation.failed`` with
    per-field messages."""
    try:
        loaded = schema(data)
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise validation_error(messages) from exc
    return loaded


def _assign_request_id() -> None:
    incoming = request.headers.get("X-Request-Id", "")
    g.request_id = incoming if _REQUEST_ID_RE.match(incoming) else f"req_{secrets.token_hex(12)}"


def _echo_request_id(response: Response) -> Response:
    response.headers["X-Request-Id"] = g.get("request_id", "")
    return response


def _close_if_body_unread(response: Response) -> Response:
    """An error answered before the body was read: say ``Connection: close``.

    gunicorn drains only a little of an unread body before dropping the connection; a
    keep-alive answer would then strand the client's next request on this connection.
    """
    if response.status_code >= 400 and not g.get("body_read"):
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        if chunked or (request.content_length or 0) > 0:
            response.headers["Connection"] = "close"
    return response


def init_app(app: Flask) -> None:
    """Register every blueprint and the request-id hooks."""
    from . import blobs, buckets, downloads, files, keys, meta, static, tokens

    app.before_request(_assign_request_id)
    app.after_request(_echo_request_id)
    app.after_request(_close_if_body_unread)
    for module in (files, buckets, keys, tokens, blobs, downloads, meta, static):
        app.register_blueprint(module.bp)
    if cast(Services, app.extensions["broker"]).settings.demo:
        from . import demo

        app.register_blueprint(demo.bp)
