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
    _PLAIN_TEXT,
    _SHA256,
    KEY_PATTERN,
    MAX_METADATA_ENTRIES,
    MAX_METADATA_KEY,
    MAX_METADATA_VALUE,
    MAX_PREFIX,
    FullMatch,
    StrictSchema,
    _file_name,
    _key,
    _metadata,
    _mime,
    _name,
    _no_bidi,
    _no_control_chars,
    _normalise_declaration,
    _not_bool,
    _strict_bool,
    _text,
)


class FileCreateSchema(StrictSchema):
    """Body of ``POST /v1/files``: what the client promises to upload."""

    name = _file_name(required=True)
    size = fields.Integer(required=True, strict=True, validate=[_not_bool, validate.Range(min=0)])
    mime_type = _mime(required=True)
    bucket = _name(load_default="default")
    key = _key()
    sha256 = _text(_SHA256, allow_none=True)
    metadata = fields.Dict(
        keys=_text(
            validate.Length(min=1, max=MAX_METADATA_KEY),
            _no_control_chars,
            metadata={"pattern": _PLAIN_TEXT},
        ),
        values=_text(validate.Length(max=MAX_METADATA_VALUE)),
        load_default=dict,
        validate=_metadata,
        metadata={"maxProperties": MAX_METADATA_ENTRIES},
    )
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
    )
    rate_limit = _text(
        FullMatch(RATE_LIMIT_PATTERN, error="Must be a rate limit like '100/second'."),
        metadata={
            "pattern": RATE_LIMIT_PATTERN,
            "description": "Requests this key may make, e.g. `100/second;3000/minute` "
            "(up to four limits); replaces `BROKER_RATE_LIMIT` for this key.",
        },
    )


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
