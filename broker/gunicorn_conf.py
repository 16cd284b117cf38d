"""gunicorn settings for the broker (``gunicorn.conf.py`` at the top level loads these).

gthread workers: the worker's main loop keeps heart-beating while request threads stream
bodies, so a slow multi-minute PUT is not killed by ``timeout`` the way a sync worker's is.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import gunicorn.util

from broker.config import ConfigError, ServerSettings, Settings
from broker.errors import CATALOGUE, ErrorCode

# Every value comes from config.py, which validates it. A bad one stops start-up here with
# one line (SystemExit passes through gunicorn's config loader; any other exception would be
# printed with its traceback).
try:
    _server = ServerSettings.from_env(os.environ)
    Settings.from_env(os.environ)
except ConfigError as _refused:
    sys.exit(f"broker: {_refused}")
bind = [_server.bind]
worker_class = "gthread"
workers = _server.workers
threads = _server.threads
timeout = _server.worker_timeout
graceful_timeout = 30
keepalive = 5
limit_request_line = 8190  # signed blob URLs carry their token in the path
forwarded_allow_ips = _server.forwarded_allow_ips
# No gunicorn access log: its request line carries signed tokens (/v1/blobs/<token>). The
# app logs each request itself, by route, never by path (broker/api/access_log.py).
accesslog = None
errorlog = "-"

# One metrics directory per server start so /metrics sums every worker's counters.
if _server.metrics_dir is None:
    _metrics_dir = Path(tempfile.gettempdir()) / f"broker-metrics-{os.getpid()}"
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    _metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)


_FRAMING_CODES: dict[int, ErrorCode] = {
    400: "request.malformed",
    414: "request.uri_too_long",
    431: "request.headers_too_large",
}


def write_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own refusals (a request it cannot frame: 400, 414, 431, ...) in the
    contract's envelope instead of its HTML page. The app never sees these requests, so
    the request id is new; gunicorn's message (echoing the request) is not repeated."""
    code: ErrorCode = _FRAMING_CODES.get(status_int) or (
        "internal" if status_int >= 500 else "request.malformed"
    )
    request_id = f"req_{secrets.token_hex(12)}"
    error = {"code": code, "message": CATALOGUE[code][1], "details": {}}
    body = json.dumps({"error": error, "request_id": request_id}).encode()
    head = (
        f"HTTP/1.1 {int(status_int)} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-Request-Id: {request_id}\r\n\r\n"
    )
    gunicorn.util.write_nonblock(sock, head.encode("latin-1") + body)


# Workers call ``gunicorn.util.write_error`` by its module attribute: every worker forked
# from this master answers framing errors with ours.
gunicorn.util.write_error = write_error


def on_starting(server: Any) -> None:
    """In the master, before it forks: validate the configuration, migrate (or check) the
    database once, and warn when the bucket's CORS rule would refuse the configured origins.
    Workers never touch the database as they boot (``create_app``), so one replaced while
    the database is locked or down boots and answers 503 until it is back."""
    from broker import create_app, prepare_database

    app = create_app()
    prepare_database()
    storage_cors = app.extensions["broker"].storage_cors
    if storage_cors is not None:  # a warning line when browsers would be refused
        storage_cors.log_at_start()


def post_fork(server: Any, worker: Any) -> None:
    """Tune the worker's allocator for streaming large bodies (see ``_tune_malloc``)."""
    _tune_malloc()


def _tune_malloc() -> None:
    """Keep freed large buffers in the worker instead of handing them back to the kernel.

    glibc serves each 1 MiB read of a streamed body from a fresh ``mmap`` and returns it on
    free, so the next read faults it in again (``bench/put.py`` counted ~240,000 minor
    faults per 512 MiB PUT). Raising the mmap threshold to 16 MiB and the trim threshold to
    32 MiB lets the heap reuse those buffers: in paired runs the worker's CPU per byte fell
    by ~38 % and PUT throughput rose ~32 %. A worker then keeps up to 32 MiB of freed heap.
    ``BROKER_MALLOC_TUNING=0`` turns it off; without glibc (musl, macOS) it does nothing.
    """
    if not _server.malloc_tuning:
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, 16 * 1024 * 1024)
    mallopt(m_trim_threshold, 32 * 1024 * 1024)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


# gunicorn >= 25.1 opens a control socket at one fixed per-user path; two brokers on a host
# would fight over it. Off unless asked for.
control_socket_disable = not _server.control_socket


def post_worker_init(worker: Any) -> None:
    """Let the app's ``Connection: close`` reach gunicorn, which otherwise drops the header.

    The broker says ``close`` when it answers an error before reading the request body (a
    refused 2 GiB PUT, say). gunicorn would announce keep-alive, drain at most 64 KiB and
    then cut the connection, stranding the client's next request. ``force_close`` makes
    gunicorn announce ``close`` and close gracefully (FIN first, so the answer arrives).
    """
    app = worker.wsgi

    def honour_connection_close(environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if any(k.lower() == "connection" and v.lower() == "close" for k, v in headers):
                gunicorn_response = getattr(start_response, "__self__", None)
                if gunicorn_response is not None and hasattr(gunicorn_response, "force_close"):
                    gunicorn_response.force_close()
            return start_response(status, headers, exc_info)

        return app(environ, start)

    worker.wsgi = honour_connection_close
