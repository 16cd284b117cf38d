"""One log line per request (logger ``broker.access``): request id, tenant, route, method,
status, duration and bytes, as text or JSON (``BROKER_LOG_FORMAT``).

The route is the URL rule (``/v1/blobs/<token>``), never the path: signed tokens live in
paths, and no query string, header or body is logged, so no key, token or signed URL
reaches a log line. gunicorn's own access log (which prints the raw request line) is off.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import Flask, Response, g, request

log = logging.getLogger("broker.access")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_LINE = (
    "%(method)s %(route)s %(status)s %(duration_ms)sms tenant=%(tenant)s "
    "in=%(bytes_in)s out=%(bytes_out)s req=%(request_id)s"
)


class JsonFormatter(logging.Formatter):
    """Every record as one JSON object: time, level, logger, message, and a request's
    fields (``extra={"fields": {...}}``) at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"))


def configure(log_format: str, level: str) -> None:
    """Set up the root handler (unless the host app did) in the chosen format."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        root.addHandler(handler)
        if log_format == "json":
            handler.setFormatter(JsonFormatter())
        else:
            handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.getLogger("broker").setLevel(level)


def _log(response: Response) -> Response:
    if not log.isEnabledFor(logging.INFO):
        return response
    started = g.get("request_started")  # stamped by metrics.py's before_request hook
    principal = g.get("principal")
    rule = request.url_rule
    fields = {
        "request_id": g.get("request_id"),
        "tenant": principal.tenant if principal is not None else None,
        "method": request.method,
        "route": rule.rule if rule is not None else "<unmatched>",
        "status": response.status_code,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
        "bytes_in": request.content_length or 0,
        "bytes_out": response.content_length,
    }
    # makeRecord + handle: what log.info does, without searching the stack for the caller.
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, _LINE, (fields,), None)
    record.fields = fields
    log.handle(record)
    return response


def init_app(app: Flask) -> None:
    """Log every request once its answer is ready (timed from ``metrics.py``'s stamp, so
    register this after ``metrics.init_app``: after_request hooks run last-first)."""
    app.after_request(_log)
