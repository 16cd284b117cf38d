"""``/v1/buckets``: bucket policies, keyset-paginated listings, files by key."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from ..files import FilePage
from ..models import FileView, Principal, Scope
from ..schemas import BucketListSchema, FilePageSchema, FileSchema, ListQuerySchema
from . import service
from .operations import operation

bp = Blueprint("buckets", __name__, url_prefix="/v1/buckets")


@bp.get("")
@operation(
    summary="Buckets with their policy and live file count",
    response=(200, BucketListSchema),
    errors=(401, 403, 503),
    scope=Scope.FILES_READ,
)
def index(who: Principal) -> dict[str, Any]:
    """Every bucket with its policy and the caller's live file count."""
    return {"data": service().files.buckets(who), "has_more": False}


@bp.get("/<bucket>/files")
@operation(
    summary="List a bucket's files, newest first (keyset pagination)",
    response=(200, FilePageSchema),
    errors=(401, 403, 404, 422, 503),
    query=ListQuerySchema,
    scope=Scope.FILES_READ,
)
def files(who: Principal, bucket: str, query: dict[str, Any]) -> FilePage:
    """A page of files, newest first; follow ``next_cursor`` with ``after``."""
    return service().files.page(who, bucket, **query)


@bp.get("/<bucket>/files/<path:key>")
@operation(
    summary="A file by its key", response=(200, FileSchema), errors=(401, 403, 404, 422, 503),
    scope=Scope.FILES_READ,
)  # fmt: skip
def get(who: Principal, bucket: str, key: str) -> FileView:
    """A file by its key (keys may contain '/')."""
    return service().files.get_by_key(who, bucket, key)


@bp.delete("/<bucket>/files/<path:key>")
@operation(
    summary="Delete a file by its key", response=(200, FileSchema),
    errors=(401, 403, 404, 422, 503), scope=Scope.FILES_DELETE,
)  # fmt: skip
def delete(who: Principal, bucket: str, key: str) -> FileView:
    """Delete a file by its key."""
    return service().files.delete_by_key(who, bucket, key)
