"""Browser upload tokens (``POST /v1/tokens``): mint one for a bucket and its limits, and
hold every declaration made with one to them.

A server-side key with ``files:write`` mints a short-lived token for a browser; the token
declares files in its bucket within its limits, completes, aborts and reads those files,
and does nothing else (``auth.require``: 403 ``auth.forbidden``; ``Context.file``: another
file is 404 ``file.not_found``, as another tenant's is). It dies with its parent key and
at ``expires_at`` (``auth.Authenticator``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..auth import require
from ..browser_tokens import MAX_TOKEN_CHARS, BrowserTokens
from ..context import Context
from ..errors import BrokerError, validation_error
from ..ids import new_id
from ..models import Principal, Scope, TokenGrant, object_namespace
from ..naming import FILE_ID_LENGTH, mime_type_matches
from ..schemas import MAX_METADATA_ENTRIES

GENERATED_KEY_CHARS = 26
"""The shortest key the broker generates (a file id's ULID), which a prefix must leave room for."""


@dataclass(frozen=True)
class MintedToken:
    """A new token and what it allows."""

    token: str
    grant: TokenGrant


class Tokens:
    """``create``: mint a browser upload token."""

    def __init__(self, ctx: Context, codec: BrowserTokens) -> None:
        self.ctx = ctx
        self.codec = codec

    def create(self, principal: Principal, request: Mapping[str, Any]) -> MintedToken:
        """A token for ``request``'s bucket and limits, each within the bucket's policy; it
        never outlives the key that mints it. A token cannot mint tokens."""
        require(principal, Scope.FILES_WRITE)
        ctx = self.ctx
        policy = ctx.bucket(request["bucket"])
        max_size: int | None = request.get("max_size")
        if max_size is not None and max_size > policy.max_size:
            raise BrokerError(
                "upload.size_exceeds_limit",
                f"max_size {max_size} exceeds bucket {policy.name!r}'s limit of "
                f"{policy.max_size} bytes.",
                details={"max_size": [f"Must be at most {policy.max_size}."]},
            )
        mime_types: list[str] | None = request.get("mime_types")
        wider = [p for p in mime_types or () if not mime_type_matches(policy.allowed_mime_types, p)]
        if wider:
            raise validation_error(
                {"mime_types": f"Outside bucket {policy.name!r}'s allowed_mime_types: "
                 f"{', '.join(wider)}."}
            )  # fmt: skip
        prefix: str | None = request.get("key_prefix")
        if prefix is not None:
            # Normalised as keys are (NFC), with room left for a generated key under it in
            # any file's storage key (a file id is always this long).
            namespace = object_namespace(principal.tenant, policy.name, "f" * FILE_ID_LENGTH)
            room = "0" * GENERATED_KEY_CHARS
            try:
                prefix = ctx.key(prefix + room, namespace=namespace)[: -len(room)]
            except BrokerError as exc:  # the key's reason, said of the field sent
                raise validation_error(
                    {"key_prefix": exc.details.get("key", exc.message)}
                ) from None
        expires_at = ctx.now() + request["ttl"]
        if principal.expires_at is not None:
            expires_at = min(expires_at, principal.expires_at)
        grant = TokenGrant(
            id=new_id("tok"),
            bucket=policy.name,
            expires_at=expires_at,
            key_prefix=prefix,
            max_size=max_size,
            mime_types=None if mime_types is None else tuple(mime_types),
            max_files=request.get("max_files"),
            metadata=dict(request.get("metadata") or {}),
            origin=request.get("origin"),
        )
        token = self.codec.sign(principal.tenant, principal.key_id, grant)
        if len(token) > MAX_TOKEN_CHARS:
            raise validation_error(
                {"metadata": f"The token would be {len(token)} characters; at most "
                 f"{MAX_TOKEN_CHARS} fit in a header. Send less metadata, fewer mime_types "
                 "or a shorter key_prefix."}
            )  # fmt: skip
        return MintedToken(token=token, grant=grant)


def confine(ctx: Context, principal: Principal, request: Mapping[str, Any]) -> Mapping[str, Any]:
    """The declaration as a browser token may make it, with the token's metadata stamped on
    (over the browser's own); a key's declaration as it is.

    Another bucket, or a key outside ``key_prefix``: 403 ``auth.forbidden``; a size over
    ``max_size``: 413 ``upload.size_exceeds_limit``; a type outside ``mime_types``: 422
    ``upload.mime_type_not_allowed``. (``max_files`` is counted when the file is inserted:
    ``uploads.idempotency.insert_pending``.)
    """
    grant = principal.token
    if grant is None:
        return request
    if request["bucket"] != grant.bucket:
        raise BrokerError("auth.forbidden", f"This token uploads to bucket {grant.bucket!r} only.")
    prefix = grant.key_prefix
    if prefix is not None and "key" in request and not ctx.key(request["key"]).startswith(prefix):
        raise BrokerError(
            "auth.forbidden",
            f"This token declares keys under {prefix!r} only.",
            details={"key": [f"Must start with {prefix!r}."]},
        )
    size = request.get("size")
    if grant.max_size is not None and size is not None and size > grant.max_size:
        raise BrokerError(
            "upload.size_exceeds_limit",
            f"{size} bytes exceeds this token's limit of {grant.max_size} bytes.",
            details={"size": [f"Must be at most {grant.max_size}."]},
        )
    if grant.mime_types is not None and not mime_type_matches(
        grant.mime_types, request["mime_type"]
    ):
        raise BrokerError(
            "upload.mime_type_not_allowed",
            f"This token does not declare {request['mime_type']!r}.",
            details={"mime_type": [f"Allowed: {', '.join(grant.mime_types)}."]},
        )
    if not grant.metadata:
        return request
    metadata = {**request.get("metadata", {}), **grant.metadata}
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise validation_error(
            {"metadata": f"At most {MAX_METADATA_ENTRIES} entries with the token's own."}
        )
    return {**request, "metadata": metadata}


def max_files(principal: Principal) -> int | None:
    """How many files a browser token may declare in all (None: no limit, or a key)."""
    return None if principal.token is None else principal.token.max_files


def max_size(principal: Principal, bucket_limit: int) -> int:
    """The most bytes one file may have: the bucket's limit, or a token's if smaller."""
    limit = None if principal.token is None else principal.token.max_size
    return bucket_limit if limit is None else min(limit, bucket_limit)
