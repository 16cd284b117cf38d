"""``/v1/buckets``: bucket policies, keyset-paginated listings, files by key."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ..models import Scope
from ..schemas import BucketListSchema, FilePageSchema, ListQuerySchema, render_file
from . import load, principal, service

bp = Blueprint("buckets", __name__, url_prefix="/v1/buckets")
_buckets = BucketListSchema()
_query = ListQuerySchema()
_page = FilePageSchema()


@bp.get("")
def index() -> Response:
    """Every bucket with its policy and the caller's live file count."""
    return jsonify(_buckets.dump({"data": service().buckets(principal()), "has_more": False}))


@bp.get("/<bucket>/files")
def files(bucket: str) -> Response:
    """A page of files, newest first; follow ``next_cursor`` with ``after``."""
    who = principal(Scope.FILES_READ)
    query = load(_query, request.args.to_dict())
    page = service().list_files(who, bucket, **query)
    return jsonify(
        _page.dump({"data": page.files, "has_more": page.has_more, "next_cursor": page.next_cursor})
    )


@bp.get("/<bucket>/files/<path:key>")
def get(bucket: str, key: str) -> Response:
    """A file by its key (keys may contain '/')."""
    return jsonify(render_file(service().get_by_key(principal(), bucket, key)))


@bp.delete("/<bucket>/files/<path:key>")
def delete(bucket: str, key: str) -> Response:
    """Delete a file by its key."""
    return jsonify(render_file(service().delete_by_key(principal(), bucket, key)))
