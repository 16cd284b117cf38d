"""What a declaration must pass before anything is stored: the bucket's size and type policy,
a valid key, and whether the bytes go up in parts. JSON and form uploads share it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import BucketPolicy
from ..context import Context
from ..errors import BrokerError, validation_error
from ..ids import new_id
from ..models import FileRecord, Principal, Status, object_namespace
from ..naming import MAX_KEY_BYTES, key_from_name
from ..parts import MAX_SINGLE_PUT


def admit(policy: BucketPolicy, *, size: int, mime_type: str, multipart: bool = False) -> bool:
    """Check a declaration against the bucket's policy; say whether it goes in parts."""
    if size > policy.max_size:
        raise BrokerError(
            "upload.size_exceeds_limit",
            f"{size} bytes exceeds bucket {policy.name!r}'s limit of {policy.max_size} bytes.",
            details={"size": [f"Must be at most {policy.max_size}."]},
        )
    if not policy.allows(mime_type):
        raise BrokerError(
            "upload.mime_type_not_allowed",
            f"Bucket {policy.name!r} does not accept {mime_type!r}.",
            details={"mime_type": [f"Allowed: {', '.join(policy.allowed_mime_types)}."]},
        )
    in_parts = multipart or size > min(policy.multipart_threshold, MAX_SINGLE_PUT)
    if in_parts and size == 0:
        raise validation_error({"multipart": "An empty file cannot be sent in parts."})
    return in_parts


def new_record(
    ctx: Context,
    principal: Principal,
    policy: BucketPolicy,
    declared: Mapping[str, Any],
    *,
    ttl: int,
    proxied: bool = False,
) -> FileRecord:
    """A pending file for a declaration: a new id, its key (the client's, normalised, or one
    made from the id and name, under a browser token's ``key_prefix``), its own storage
    object, the token that declares it, and an expiry ``ttl`` seconds from now; within the
    tenant's quota of pending uploads (429 ``quota.exceeded``)."""
    now = ctx.now()
    ctx.quota.admit(principal.tenant, declared.get("size") or 0, now)
    file_id = new_id("file")
    namespace = object_namespace(principal.tenant, policy.name, file_id)
    token = principal.token
    if "key" in declared:
        key = ctx.key(declared["key"], namespace=namespace)
    else:
        prefix = (token.key_prefix if token is not None else None) or ""
        room = MAX_KEY_BYTES - len(namespace.encode()) - 1 - len(prefix.encode())
        unique = file_id.removeprefix("file_").lower()
        key = prefix + key_from_name(unique, declared["name"], max_bytes=room)
    return FileRecord(
        id=file_id,
        tenant=principal.tenant,
        bucket=policy.name,
        key=key,
        name=declared["name"],
        mime_type=declared["mime_type"],
        size=declared.get("size") or 0,
        sha256=declared.get("sha256"),
        metadata=dict(declared.get("metadata", {})),
        status=Status.PENDING,
        created_at=now,
        updated_at=now,
        expires_at=now + ttl,
        proxied=proxied,
        token_id=None if token is None else token.id,
        object_key=f"{namespace}/{key}",
    )
