"""``/v1/tokens``: mint a browser upload token (a key with ``files:write``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from ..models import Principal, Scope
from ..schemas import TokenCreateSchema, TokenSchema
from ..uploads.tokens import MintedToken
from . import service
from .operations import operation

bp = Blueprint("tokens", __name__, url_prefix="/v1/tokens")


@bp.post("")
@operation(
    summary="Mint a short-lived browser upload token for one bucket, within limits",
    response=(201, TokenSchema),
    errors=(400, 401, 403, 404, 413, 422, 503),
    body=TokenCreateSchema,
    scope=Scope.FILES_WRITE,
    description="The token is sent like a key (Authorization: Bearer, or x-api-key) and "
    "can only declare files in its bucket within its limits, complete, abort and re-sign "
    "the parts of those files, and read them (GET the file, its content); anything else "
    "is 403 auth.forbidden, another file 404 file.not_found. It stops working at "
    "expires_at and with its key (401 auth.expired_key / auth.invalid_key). A token "
    "cannot mint tokens.",
)
def create(who: Principal, body: dict[str, Any]) -> MintedToken:
    """Mint a token; the browser holds it instead of a key."""
    return service().tokens.create(who, body)
