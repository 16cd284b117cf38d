"""``/static/…``: the browser clients (``clients/js``) for pages on any origin to import.

The files are the package's own (``broker/assets`` links to ``clients/js``; an installed
broker carries them as package data). No key: they are public code. ``Access-Control-Allow-
Origin: *`` lets a page on another origin ``import()`` them as modules; an ETag and a short
``max-age`` let browsers keep them and still see a new release within minutes.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from flask import Blueprint, Response, request

from .operations import operation

bp = Blueprint("static", __name__)

CACHE_CONTROL = "public, max-age=300"
"""Unversioned URLs: browsers revalidate (ETag, 304) after five minutes."""


@functools.cache
def asset(name: str) -> tuple[bytes, str]:
    """A shipped file's bytes and their ETag (read once per process)."""
    data = resources.files("broker").joinpath("assets", name).read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:32]


def _serve(name: str) -> Response:
    data, etag = asset(name)
    response = Response(data, mimetype="text/javascript")
    response.set_etag(etag)
    response.headers["Cache-Control"] = CACHE_CONTROL
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.make_conditional(request)  # 304 when If-None-Match holds the ETag
    return response


@bp.get("/static/broker.js")
@bp.get("/static/broker-uppy.js")
@operation(
    summary="The browser clients: broker.js and broker-uppy.js (ES modules)", response=(200, None),
    auth=False, produces="text/javascript",
    description="broker.js uploads from a page with a browser token (declare, PUT to storage "
    "with progress, parts in parallel with retries, resume, complete); broker-uppy.js gives "
    "Uppy's @uppy/aws-s3 plugin its options on top of it. No key; CORS for any origin.",
)  # fmt: skip
def client_module() -> Response:
    """A file of ``clients/js``, by the name the path ends with."""
    return _serve(request.path.rsplit("/", 1)[1])
