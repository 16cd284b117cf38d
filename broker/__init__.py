"""broker: a presigned-URL broker. ``create_app`` wires config, stores, blueprints, errors."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping

from flask import Flask, has_request_context, request

from .config import Clock, ConfigError

__version__ = "0.1.0"


_PLAIN_HOST = re.compile(r"^[a-z0-9.:\[\]-]+$")


def request_base_url() -> str:
    """``request.host_url`` without its slash: ``scheme://host`` as the client reached us.

    ``host_url`` runs the URL through ``uri_to_iri`` (~20 µs); for a plain ASCII host,
    which is every host but IDNA (``xn--``) ones, that changes nothing, so skip it.
    """
    host = request.host
    if _PLAIN_HOST.match(host) and "xn--" not in host:
        return f"{request.scheme}://{host}"
    return request.host_url.rstrip("/")


def prepare_database(
    overrides: Mapping[str, str] | None = None, *, environ: Mapping[str, str] | None = None
) -> None:
    """Before any worker serves: migrate (``BROKER_AUTO_MIGRATE``) or check the schema.

    The gunicorn master runs this once before it forks (``broker db upgrade`` is the same
    migration, for the release step). Concurrent runs take turns (PostgreSQL's advisory
    lock, SQLite's writer lock). A schema that is reachable and behind without
    ``BROKER_AUTO_MIGRATE`` is a ConfigError (the server refuses to start); a database that
    does not answer in time is only logged: the server starts, answers 503 until it does,
    and its workers refuse to serve a schema that turns out to be behind.
    """
    from .config import Settings
    from .db import Database
    from .errors import DatabaseUnavailable

    env = dict(os.environ if environ is None else environ)
    env.update(overrides or {})
    settings = Settings.from_env(env)
    database = Database(settings.database_url, busy_timeout=settings.db_timeout)
    try:
        if settings.auto_migrate:
            if settings.is_sqlite:
                settings.data_dir.mkdir(parents=True, exist_ok=True)
            database.upgrade()
        elif not database.is_current():
            raise ConfigError(
                "the database schema is not at the newest migration; run `broker db upgrade`"
            )
    except DatabaseUnavailable as exc:
        logging.getLogger("broker").warning(
            "database unavailable at start (%s); serving 503 until it answers", exc.__cause__
        )
    finally:
        database.dispose()


def create_app(
    overrides: Mapping[str, str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Clock | None = None,
) -> Flask:
    """Build the WSGI app from the environment (``overrides`` win; tests pass them)."""
    from flask_cors import CORS

    from . import api, metrics, services
    from .api import access_log, errors
    from .api.limits import RateLimits
    from .config import Settings
    from .db import Database

    env = dict(os.environ if environ is None else environ)
    env.update(overrides or {})
    settings = Settings.from_env(env)
    access_log.configure(settings.log_format, settings.log_level)
    clock = clock or time.time

    # Nothing here touches the database: a worker that boots while it is locked or down
    # serves 503 ``database.unavailable`` until it is back. Migrations run before, once
    # (``prepare_database``); the schema is checked on first use.
    database = Database(settings.database_url, busy_timeout=settings.db_timeout, check_schema=True)

    def base_url() -> str:
        # Signed blob URLs must point at the broker as clients reach it: the configured
        # public URL, else the host this request came to, else (CLI, jobs) the local port.
        if settings.public_url:
            return settings.public_url
        if has_request_context():
            return request_base_url()
        return f"http://127.0.0.1:{settings.port}"

    app = Flask(__name__, static_folder=None)  # /static/… is api/static.py's
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["broker"] = services.build(settings, database, clock=clock, base_url=base_url)
    errors.init_app(app)
    metrics.init_app(app)
    access_log.init_app(app)
    api.init_app(app)
    RateLimits(settings).init_app(app)
    if settings.cors_origins:
        CORS(
            app,
            resources={r"/v1/*": {"origins": list(settings.cors_origins)}},
            expose_headers=["ETag", "X-Request-Id", "Location", "Idempotent-Replayed"],
            allow_headers=[
                "Authorization",
                "x-api-key",
                "Content-Type",
                "Idempotency-Key",
                "X-Request-Id",
                "Range",
                "If-None-Match",
            ],
            methods=["GET", "HEAD", "POST", "PUT", "DELETE"],
            max_age=600,
        )
    return app
