"""The one error catalogue (code → status, default message) and the errors that carry it.

Independent of Flask: the database, storage and use cases raise these; the HTTP layer
(``broker/api/errors.py``) renders every one of them in the contract's envelope.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

ErrorCode = Literal[
    "request.malformed",
    "request.length_required",
    "auth.missing_key",
    "auth.invalid_key",
    "auth.expired_key",
    "auth.forbidden",
    "token.max_files_reached",
    "blob.bad_signature",
    "blob.expired",
    "blob.not_found",
    "file.not_found",
    "bucket.not_found",
    "key.not_found",
    "route.not_found",
    "method.not_allowed",
    "upload.not_received",
    "upload.already_complete",
    "upload.not_pending",
    "upload.not_multipart",
    "upload.parts_mismatch",
    "file.key_exists",
    "idempotency.in_progress",
    "upload.in_progress",
    "request.too_large",
    "request.uri_too_long",
    "request.headers_too_large",
    "upload.size_exceeds_limit",
    "request.range_not_satisfiable",
    "upload.already_stored",
    "validation.failed",
    "idempotency.mismatch",
    "upload.size_mismatch",
    "upload.type_mismatch",
    "upload.checksum_mismatch",
    "upload.part_missing",
    "upload.expired",
    "upload.mime_type_not_allowed",
    "key.invalid",
    "rate_limited",
    "quota.exceeded",
    "internal",
    "storage.unavailable",
    "database.unavailable",
]

CATALOGUE: Mapping[ErrorCode, tuple[int, str]] = {
    "request.malformed": (400, "The request body could not be parsed."),
    "request.length_required": (411, "A Content-Length header is required."),
    "auth.missing_key": (401, "An API key is required (Authorization: Bearer <key>)."),
    "auth.invalid_key": (401, "The API key is unknown or revoked."),
    "auth.expired_key": (401, "The API key or browser token has expired."),
    "auth.forbidden": (403, "The API key lacks the scope this action needs."),
    "token.max_files_reached": (403, "This browser token has declared all the files it may."),
    "blob.bad_signature": (403, "The signed URL is invalid or was altered."),
    "blob.expired": (403, "The signed URL has expired."),
    "blob.not_found": (404, "No object is stored under this URL yet."),
    "file.not_found": (404, "No such file in this tenant."),
    "bucket.not_found": (404, "No such bucket."),
    "key.not_found": (404, "No such API key."),
    "route.not_found": (404, "No route matches this URL."),
    "method.not_allowed": (405, "This route does not accept this method."),
    "upload.not_received": (409, "The file's bytes are not in storage yet."),
    "upload.already_complete": (409, "The upload is already complete."),
    "upload.not_pending": (409, "The upload is no longer pending."),
    "upload.not_multipart": (409, "The file is not uploaded in parts."),
    "upload.parts_mismatch": (409, "The parts named are not in this file's plan."),
    "file.key_exists": (409, "A file with this key already exists in the bucket."),
    "idempotency.in_progress": (409, "A request with this Idempotency-Key is still in progress."),
    "upload.in_progress": (
        409,
        "Another request is joining this upload's parts right now; complete again shortly.",
    ),
    "request.too_large": (413, "The request body is too large."),
    "request.uri_too_long": (414, "The request line is too long."),
    "request.headers_too_large": (431, "The request's headers are too large."),
    "upload.size_exceeds_limit": (413, "The declared size exceeds the bucket's limit."),
    "request.range_not_satisfiable": (416, "The requested range is outside the object."),
    "upload.already_stored": (
        412,
        "An object is already stored for this upload; a signed URL writes its object once.",
    ),
    "validation.failed": (422, "The request is not valid."),
    "idempotency.mismatch": (422, "This Idempotency-Key was used with a different request."),
    "upload.size_mismatch": (422, "The stored size differs from the declared size."),
    "upload.type_mismatch": (422, "The stored content type differs from the declared type."),
    "upload.checksum_mismatch": (422, "The stored SHA-256 differs from the declared checksum."),
    "upload.part_missing": (409, "A part of the multipart upload is not in storage."),
    "upload.expired": (409, "The upload expired before it was completed; declare it again."),
    "upload.mime_type_not_allowed": (422, "The bucket does not accept this MIME type."),
    "key.invalid": (422, "The object key is not allowed."),
    "rate_limited": (429, "Too many requests; retry later."),
    "quota.exceeded": (
        429,
        "The tenant holds too many pending uploads; complete or abort some, or retry later.",
    ),
    "internal": (500, "An internal error occurred."),
    "storage.unavailable": (503, "Storage is not answering; retry later."),
    "database.unavailable": (503, "The metadata database is not answering; retry later."),
}
assert set(CATALOGUE) == set(get_args(ErrorCode)), "every code needs a catalogue entry"


class BrokerError(Exception):
    """An error a client can act on: a catalogue code, a message, optional field details."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status, default = CATALOGUE[code]
        self.code: ErrorCode = code
        self.message = message or default
        self.details = dict(details or {})
        self.headers = dict(headers or {})
        super().__init__(f"{code}: {self.message}")


def validation_error(details: Mapping[str, Any], message: str | None = None) -> BrokerError:
    """A 422 ``validation.failed`` whose details map each field to a list of messages."""
    normalised = {k: v if isinstance(v, list | dict) else [v] for k, v in details.items()}
    return BrokerError("validation.failed", message, details=normalised)


class UploadMismatch(BrokerError):
    """What storage holds differs from the declaration: which property, and both values."""

    def __init__(self, code: ErrorCode, message: str, *, declared: Any, actual: Any) -> None:
        super().__init__(code, message)
        self.declared = declared
        self.actual = actual


class StorageUnavailable(BrokerError):
    """Storage (disk or S3) did not answer as it should; ``action`` says what was tried."""

    def __init__(
        self,
        message: str | None = None,
        *,
        action: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__("storage.unavailable", message, headers=headers)
        self.action = action


class DatabaseUnavailable(BrokerError):
    """The metadata database is locked, read-only or unreachable."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__("database.unavailable", message)
