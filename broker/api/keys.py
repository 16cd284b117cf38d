"""``/v1/keys``: mint, list and revoke API keys (admin scope)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ..models import Scope
from ..schemas import (
    KeyCreatedSchema,
    KeyCreateSchema,
    KeyListQuerySchema,
    KeyListSchema,
    KeySchema,
)
from . import json_body, load, principal, service

bp = Blueprint("keys", __name__, url_prefix="/v1/keys")
_create = KeyCreateSchema()
_created = KeyCreatedSchema()
_query = KeyListQuerySchema()
_list = KeyListSchema()
_key = KeySchema()


@bp.post("")
def create() -> tuple[Response, int]:
    """Mint a key for a tenant; the secret is in this answer and nowhere else."""
    who = principal(Scope.ADMIN)
    body = json_body(_create)
    created = service().create_key(who, body["tenant"], body.get("name"), body.get("scopes"))
    return jsonify(_created.dump(created)), 201


@bp.get("")
def index() -> Response:
    """Every key without its secret, optionally filtered by ``?tenant=``."""
    who = principal(Scope.ADMIN)
    query = load(_query, request.args.to_dict())
    keys = service().list_keys(who, query.get("tenant"))
    return jsonify(_list.dump({"data": keys, "has_more": False}))


@bp.delete("/<key_id>")
def revoke(key_id: str) -> Response:
    """Revoke a key; requests with it fail with 401 from now on."""
    return jsonify(_key.dump(service().revoke_key(principal(), key_id)))
