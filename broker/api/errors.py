"""The one error handler: every error, the broker's or Flask's, in the contract's envelope."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flask import Flask, Response, g, jsonify
from werkzeug.exceptions import HTTPException

from ..errors import BrokerError, ErrorCode

log = logging.getLogger("broker")


_CHALLENGES: Mapping[str, str] = {
    "auth.missing_key": 'Bearer realm="broker"',
    "auth.invalid_key": 'Bearer realm="broker", error="invalid_token"',
    "auth.expired_key": 'Bearer realm="broker", error="invalid_token"',
}
"""RFC 6750's challenge on every 401: no credentials, or a token that is not (or no
longer) good."""


def error_response(error: BrokerError) -> Response:
    """Render the contract's envelope; the request id is echoed by the request-id hook."""
    body = {
        "error": {"code": error.code, "message": error.message, "details": error.details},
        "request_id": g.get("request_id"),
    }
    response = jsonify(body)
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    if error.status == 401:
        response.headers["WWW-Authenticate"] = _CHALLENGES.get(error.code, 'Bearer realm="broker"')
    return response


_HTTP_CODES: Mapping[int, ErrorCode] = {
    400: "request.malformed",
    404: "route.not_found",
    405: "method.not_allowed",
    411: "request.length_required",
    413: "request.too_large",
    416: "request.range_not_satisfiable",
}


def _from_http_exception(exc: HTTPException) -> Response:
    """Werkzeug's own errors (unknown route, wrong method, body too large) in our envelope."""
    code = _HTTP_CODES.get(exc.code or 500)
    if code is None:
        log.warning("unmapped HTTP error %s: %s", exc.code, exc.description)
        code = "internal" if (exc.code or 500) >= 500 else "request.malformed"
    # Keep what the exception says in headers (Allow on 405, Content-Range on 416).
    headers = {
        name: value
        for name, value in exc.get_headers()
        if name.lower() not in ("content-type", "content-length")
    }
    return error_response(BrokerError(code, headers=headers))


def _from_unexpected(exc: Exception) -> Response:
    """Anything unforeseen: log it with the request id, answer 500 without internals.

    A body nested too deeply for the JSON parser (RecursionError) is the client's fault:
    400 ``request.malformed``, not 500.
    """
    if isinstance(exc, RecursionError):
        return error_response(BrokerError("request.malformed", "The body is nested too deeply."))
    log.exception("unhandled error in request %s", g.get("request_id"), exc_info=exc)
    return error_response(BrokerError("internal"))


def init_app(app: Flask) -> None:
    """Route every error, ours or Flask's, through the one envelope."""
    app.register_error_handler(BrokerError, error_response)
    app.register_error_handler(HTTPException, _from_http_exception)
    app.register_error_handler(Exception, _from_unexpected)
