"""The request schemas: what each body and query may hold (and, for the document, the path
parameters and headers)."""

from __future__ import annotations

from typing import Any

from marshmallow import (
    EXCLUDE,
    Schema,
    fields,
    post_load,
    validate,
)

from ..config import NAME_RE, RATE_LIMIT_PATTERN
from ..ids import CURSOR_PATTERN
from ..models import Scope, Status
from .fields import (
    _NAME_TEXT,
    _SHA256,
    KEY_PATTERN,
    KEY_PREFIX_PATTERN,
    MAX_PREFIX,
    MIME_GLOB_PATTERN,
    ORIGIN_PATTERN,
    FullMatch,
    StrictSchema,
    _file_name,
    _key,
    _metadata_field,
    _mime,
    _name,
    _no_bidi,
    _no_control_chars,
    _normalise_declaration,
    _not_bool,
    _strict_bool,
    _text,
)

MAX_UNIX_TIME = 253_402_300_799
"""The last second of year 9999: a bound any database and client can store."""
MAX_TOKEN_TTL = 3600
DEFAULT_TOKEN_TTL = 600
MAX_TOKEN_PREFIX = 512
MAX_TOKEN_MIME_TYPES = 16


class FileCreateSchema(StrictSchema):
    """Body of ``POST /v1/files``: what the client promises to upload."""

    name = _file_name(required=True)
    size = fields.Integer(required=True, strict=True, validate=[_not_bool, validate.Range(min=0)])
    mime_type = _mime(required=True)
    bucket = _name(load_default="default")
    key = _key()
    sha256 = _text(_SHA256, allow_none=True)
    metadata = _metadata_field(load_default=dict)
    expires_in = fields.Integer(strict=True, validate=[_not_bool, validate.Range(min=1)])
    multipart = fields.Boolean(pre_load=_strict_bool)

    @post_load
    def _normalise(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return _normalise_declaration(data)


class FormUploadSchema(StrictSchema):
    """The fields of a proxied upload (``multipart/form-data``) that come before ``file``.

    ``name`` defaults to the file part's filename and ``mime_type`` to its Content-Type
    (else ``application/octet-stream``); ``size``, when given, must be the exact length.
    """

    name = _file_name(required=True, metadata={"description": "Default: the file part's filename."})
    size = fields.Integer(
        validate=validate.Range(min=0), metadata={"description": "If given, the exact length."}
    )
    mime_type = _mime(
        required=True,
        metadata={"description": "Default: the file part's Content-Type, else octet-stream."},
    )
    bucket = _name(load_default="default")
    key = _key()
    sha256 = _text(_SHA256)
    file = fields.Raw(
        required=True,
        metadata={"type": "string", "format": "binary", "description": "The bytes; last field."},
    )

    @post_load
    def _normalise(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return _normalise_declaration(data)


class PartSchema(StrictSchema):
    """One uploaded part, as the client reports it on completion."""

    part_number = fields.Integer(required=True, strict=True, validate=validate.Range(1, 10000))
    etag = _text(validate.Length(min=1, max=128), required=True)


class CompleteSchema(StrictSchema):
    """Body of ``POST /v1/files/{id}/complete``: ``{}`` or the parts of a multipart upload."""

    parts = fields.List(fields.Nested(PartSchema))


class PartsRequestSchema(StrictSchema):
    """Body of ``POST /v1/files/{id}/parts``: which part URLs to sign again (default: every
    part storage has not received) and for how long."""

    part_numbers = fields.List(
        fields.Integer(strict=True, validate=validate.Range(1, 10000)),
        validate=validate.Length(min=1, max=10000),
    )
    expires_in = fields.Integer(strict=True, validate=[_not_bool, validate.Range(min=1)])


class ListQuerySchema(Schema):
    """Query of ``GET /v1/buckets/{bucket}/files``."""

    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))
    after = _text(
        FullMatch(CURSOR_PATTERN, error="Not a cursor this API returned."),
        validate.Length(min=2),
        metadata={"description": "A page's next_cursor."},
    )
    prefix = _text(
        validate.Length(max=MAX_PREFIX),
        metadata={"description": "Keys starting with it (a longer prefix is 422)."},
    )
    status = _text(validate.OneOf([s.value for s in Status]))


class DownloadQuerySchema(Schema):
    """Query of the download routes (``/v1/files/{id}/content``, ``/v1/downloads/{token}``)."""

    class Meta:
        unknown = EXCLUDE

    redirect = fields.Boolean(
        truthy={"true"},
        falsy={"false"},
        metadata={
            "description": "false: answer 200 {url, expires_at} instead of the 302 (or "
            "the streamed bytes); true: the 302 whatever Accept says. Without it, "
            "Accept decides: JSON when application/json is the type it prefers most."
        },
    )


class KeyCreateSchema(StrictSchema):
    """Body of ``POST /v1/keys``."""

    tenant = _name(required=True)
    name = _text(
        validate.Length(min=1, max=255),
        _no_control_chars,
        _no_bidi,
        metadata={"pattern": _NAME_TEXT},
    )
    scopes = fields.List(
        _text(validate.OneOf([s.value for s in Scope])),
        validate=validate.Length(min=1),
        metadata={"description": "Any subset; default files:read, files:write and files:delete."},
    )
    expires_at = fields.Integer(
        strict=True,
        validate=[_not_bool, validate.Range(min=1, max=MAX_UNIX_TIME)],
        metadata={"description": "Unix time the key stops working; in the future (else 422)."},
    )
    rate_limit = _text(
        FullMatch(RATE_LIMIT_PATTERN, error="Must be a rate limit like '100/second'."),
        metadata={
            "pattern": RATE_LIMIT_PATTERN,
            "description": "Requests this key may make, e.g. `100/second;3000/minute` "
            "(up to four limits); replaces `BROKER_RATE_LIMIT` for this key.",
        },
    )


class TokenCreateSchema(StrictSchema):
    """Body of ``POST /v1/tokens``: the bucket a browser token uploads to and its limits
    (each optional: the bucket's own policy applies besides)."""

    bucket = _name(required=True)
    key_prefix = _text(
        validate.Length(min=1, max=MAX_TOKEN_PREFIX),
        FullMatch(KEY_PREFIX_PATTERN, error="Not the start of a valid key."),
        metadata={"description": "Every key the token declares starts with it; generated "
                  "keys are put under it (another key: 403 auth.forbidden). With "
                  "'{tenant}/{bucket}/{file id}/' before it and 26 characters after, at most 1024 "
                  "UTF-8 bytes (else 422)."},
    )  # fmt: skip
    max_size = fields.Integer(
        strict=True,
        validate=[_not_bool, validate.Range(min=0)],
        metadata={"description": "Bytes per file."},
    )
    mime_types = fields.List(
        _text(
            validate.Length(max=255),
            FullMatch(MIME_GLOB_PATTERN, error="Not a MIME type pattern like 'image/*'."),
        ),
        validate=validate.Length(min=1, max=MAX_TOKEN_MIME_TYPES),
        metadata={"description": "Patterns like 'image/*', each within the bucket's "
                  "allowed_mime_types (else 422)."},
    )  # fmt: skip
    max_files = fields.Integer(
        strict=True,
        validate=[_not_bool, validate.Range(min=1, max=10000)],
        metadata={"description": "Files the token may declare in all (403 "
                  "token.max_files_reached beyond)."},
    )  # fmt: skip
    metadata = _metadata_field(
        metadata={"description": "Stamped onto every file the token declares (over what "
                  "the browser sends)."},
    )  # fmt: skip
    origin = _text(
        validate.Length(max=255),
        FullMatch(ORIGIN_PATTERN, error="Not a web origin like 'https://app.example'."),
        metadata={"description": "The only Origin the token may be used from (a request "
                  "with another or none: 403 auth.forbidden)."},
    )  # fmt: skip
    ttl = fields.Integer(
        strict=True,
        load_default=DEFAULT_TOKEN_TTL,
        validate=[_not_bool, validate.Range(min=1, max=MAX_TOKEN_TTL)],
        metadata={"description": "Seconds the token lives (default 600, at most 3600)."},
    )

    @post_load
    def _normalise(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if "mime_types" in data:
            data["mime_types"] = list(dict.fromkeys(p.lower() for p in data["mime_types"]))
        if "origin" in data:
            data["origin"] = data["origin"].lower()
        return data


class KeyListQuerySchema(Schema):
    """Query of ``GET /v1/keys``."""

    class Meta:
        unknown = EXCLUDE

    tenant = _name()


PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "bucket": {"type": "string", "pattern": NAME_RE.pattern},
    "key": {"type": "string", "minLength": 1, "pattern": KEY_PATTERN},
}
"""Path parameters' schemas, for the document (``Context.bucket``/``key`` check them)."""

HEADERS: dict[str, dict[str, Any]] = {
    "Idempotency-Key": {"type": "string", "minLength": 1, "maxLength": 255},
}
"""Request headers' schemas, for the document (``uploads/idempotency.py`` checks the key)."""
