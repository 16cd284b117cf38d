"""``/v1/keys``: mint, list and revoke API keys (admin scope)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from ..keys import CreatedKey
from ..models import ApiKeyRecord, Principal, Scope
from ..schemas import (
    KeyCreatedSchema,
    KeyCreateSchema,
    KeyListQuerySchema,
    KeyListSchema,
    KeySchema,
)
from . import service
from .operations import operation

bp = Blueprint("keys", __name__, url_prefix="/v1/keys")


@bp.post("")
@operation(
    summary="Mint an API key (admin); the secret is shown once",
    response=(201, KeyCreatedSchema),
    errors=(400, 401, 403, 422, 503),
    body=KeyCreateSchema,
    scope=Scope.ADMIN,
)
def create(who: Principal, body: dict[str, Any]) -> CreatedKey:
    """Mint a key for a tenant; the secret is in this answer and nowhere else."""
    return service().keys.create(
        who, body["tenant"], body.get("name"), body.get("scopes"),
        expires_at=body.get("expires_at"), rate_limit=body.get("rate_limit"),
    )  # fmt: skip


@bp.get("")
@operation(
    summary="List API keys (admin), never their secrets",
    response=(200, KeyListSchema),
    errors=(401, 403, 503),
    query=KeyListQuerySchema,
    scope=Scope.ADMIN,
)
def index(who: Principal, query: dict[str, Any]) -> dict[str, Any]:
    """Every key without its secret, optionally filtered by ``?tenant=``."""
    return {"data": service().keys.all(who, query.get("tenant")), "has_more": False}


@bp.delete("/<key_id>")
@operation(
    summary="Revoke an API key (admin)", response=(200, KeySchema), errors=(401, 403, 404, 503)
)
def revoke(who: Principal, key_id: str) -> ApiKeyRecord:
    """Revoke a key; requests with it fail with 401 from now on."""
    return service().keys.revoke(who, key_id)
