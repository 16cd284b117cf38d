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


def create_app(
    overrides: Mapping[str, str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Clock | None = None,
) -> Flask:
    """Build the WSGI app from the environment (``overrides`` win; tests pass them)."""
    from flask_cors import CORS

    from . import api, metrics
    from .api import errors
    from .config import Settings
    from .db import Database, MetadataStore
    from .downloads import DownloadLinks
    from .service import Broker
    from .storage import build_storage

    env = dict(os.environ if environ is None else environ)
    env.update(overrides or {})
    settings = Settings.from_env(env)
    if not logging.getLogger().handlers:  # gunicorn or the host app may have set this up
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("broker").setLevel(settings.log_level)
    clock = clock or time.time

    database = Database(settings.database_url)
    if settings.auto_migrate:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        database.upgrade()
    elif not database.is_current():
        raise ConfigError(
            "the database schema is not at the newest migration; run `broker db upgrade`"
        )

    def base_url() -> str:
        # Signed blob URLs must point at the broker as clients reach it: the configured
        # public URL, else the host this request came to, else (CLI, jobs) the local port.
        if settings.public_url:
            return settings.public_url
        if has_request_context():
            return request_base_url()
        return f"http://127.0.0.1:{settings.port}"

    storage = build_storage(
        settings, clock=clock, blob_url=lambda token: f"{base_url()}/v1/blobs/{token}"
    )

    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    links = DownloadLinks(settings.secret_key, base_url=base_url, clock=clock)
    app.extensions["broker"] = Broker(settings, MetadataStore(database), storage, clock, links)
    errors.init_app(app)
    metrics.init_app(app)
    api.init_app(app)
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
