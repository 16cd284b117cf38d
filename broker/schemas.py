"""marshmallow schemas: they load requests, dump answers, and feed the OpenAPI document."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
)

from .config import NAME_RE
from .ids import CURSOR_PATTERN
from .models import Scope, Status
from .naming import MAX_DECLARED_KEY, MIME_PATTERN, is_valid_mime_type, normalise_mime_type

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_METADATA_ENTRIES = 32
MAX_PREFIX = 512
"""Characters of a listing's ``prefix``: even percent-encoded 4-byte characters (12 bytes
each) keep the request line within gunicorn's 8,190 bytes."""


_BIDI = re.compile("[\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069]")
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
KEY_PATTERN = (
    r"^(?:[^/\\\x00-\x1f\x7f.][^/\\\x00-\x1f\x7f]*|\.[^/\\\x00-\x1f\x7f.][^/\\\x00-\x1f\x7f]*"
    r"|\.\.[^/\\\x00-\x1f\x7f]+)(?:/(?:[^/\\\x00-\x1f\x7f.][^/\\\x00-\x1f\x7f]*"
    r"|\.[^/\\\x00-\x1f\x7f.][^/\\\x00-\x1f\x7f]*|\.\.[^/\\\x00-\x1f\x7f]+))*$"
)
"""A key as ``naming.normalise_key`` takes it: '/'-separated segments, none empty, '.' or
'..', no backslash or control character (ECMA-262 and Python alike)."""
MAX_KEY_CHARS = MAX_DECLARED_KEY


def _no_control_chars(value: str) -> None:
    if _CONTROL.search(value):
        raise ValidationError("Must not contain control characters.")


def _unicode(value: str) -> None:
    """Text that cannot be encoded (a lone surrogate from a ``\\ud800`` escape) is refused
    here, before it can reach the database, storage or a header."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("Must be valid Unicode text (no lone surrogates).") from None


def _no_bidi(value: str) -> None:
    """Bidirectional controls would let a name display as another (``exe.txt`` shown for
    ``txt.exe``) in a Content-Disposition; refused rather than silently altered."""
    if _BIDI.search(value):
        raise ValidationError("Must not contain bidirectional control characters.")


def _strict_bool(value: Any) -> Any:
    """JSON ``true``/``false`` only: not 1, 0, "yes" (a pre-load, as ``1 in {True}``)."""
    if type(value) is not bool:
        raise ValidationError("Not a valid boolean.")
    return value


def _text(*validators: Any, **kwargs: Any) -> fields.String:
    """A string field refusing text that cannot be encoded, then ``validators``."""
    return fields.String(validate=[_unicode, *validators], **kwargs)


def _mime_type(value: str) -> None:
    if not is_valid_mime_type(value):
        raise ValidationError("Not a MIME type like 'image/png'.")


def _not_bool(value: Any) -> None:
    if isinstance(value, bool):
        raise ValidationError("Not a valid integer.")


def _metadata(value: dict[str, str]) -> None:
    if len(value) > MAX_METADATA_ENTRIES:
        raise ValidationError(f"At most {MAX_METADATA_ENTRIES} entries.")


class FullMatch(validate.Regexp):
    """``validate.Regexp`` over the whole value: ``$`` alone lets a trailing newline in."""

    def __call__(self, value: Any) -> Any:
        pattern: re.Pattern[str] = self.regex  # type: ignore[assignment]
        if not isinstance(value, str) or pattern.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


_SHA256 = FullMatch(r"^[0-9a-fA-F]{64}$", error="Must be 64 hex characters.")


def _name(**kwargs: Any) -> fields.String:
    return _text(FullMatch(NAME_RE, error="Use 1-63 of a-z, 0-9, '-', '_'."), **kwargs)


_PLAIN_TEXT = "^[^\\x00-\\x1f\\x7f]*$"
_NAME_TEXT = "^[^\\x00-\\x1f\\x7f\\u200e\\u200f\\u061c\\u202a-\\u202e\\u2066-\\u2069]*$"
"""The control and bidi checks as ECMA-262 patterns, for the document."""


def _file_name(**kwargs: Any) -> fields.String:
    """A file's display name: what a download's Content-Disposition will say."""
    return _text(
        validate.Length(min=1, max=255),
        _no_control_chars,
        _no_bidi,
        metadata={"pattern": _NAME_TEXT, **kwargs.pop("metadata", {})},
        **kwargs,
    )


def _mime(**kwargs: Any) -> fields.String:
    return _text(
        validate.Length(max=255),
        _mime_type,
        metadata={"pattern": MIME_PATTERN, **kwargs.pop("metadata", {})},
        **kwargs,
    )


def _key(**kwargs: Any) -> fields.String:
    return _text(
        validate.Length(min=1),
        metadata={
            "pattern": KEY_PATTERN,
            "maxLength": MAX_KEY_CHARS,
            "description": "'/'-separated segments (none empty, '.' or '..'), no backslash "
            "or control character; with '{tenant}/{bucket}/' before it, at most 1024 UTF-8 "
            "bytes (else 422 key.invalid).",
        },
        **kwargs,
    )


def _normalise_declaration(data: dict[str, Any]) -> dict[str, Any]:
    """A loaded declaration's canonical form: MIME type normalised, SHA-256 in lower case."""
    data["mime_type"] = normalise_mime_type(data["mime_type"])
    if data.get("sha256"):
        data["sha256"] = data["sha256"].lower()
    return data


class ViewSchema(Schema):
    """Dumps a view object: the fields in ``OWN`` from the view itself, the others from the
    object it wraps (``INNER``, e.g. a file view's record), so no field is listed twice."""

    OWN: frozenset[str] = frozenset()
    INNER = "record"

    def get_attribute(self, obj: Any, attr: str, default: Any) -> Any:
        """The attribute from the view or from the object it wraps."""
        source = obj if attr in self.OWN else getattr(obj, self.INNER)
        return super().get_attribute(source, attr, default)


class StrictSchema(Schema):
    """Unknown fields are an error, so a typo never silently does nothing."""

    class Meta:
        unknown = RAISE


# -- requests ------------------------------------------------------------------------------


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


# -- answers -------------------------------------------------------------------------------


class PartUploadSchema(Schema):
    """One part of a multipart upload: ``size`` bytes from ``offset``, PUT to ``url``."""

    part_number = fields.Integer()
    offset = fields.Integer()
    size = fields.Integer()
    url = fields.String()
    headers = fields.Dict(keys=fields.String(), values=fields.String())


class StoredPartSchema(Schema):
    """A part storage has received, with the ETag to complete with."""

    part_number = fields.Integer()
    size = fields.Integer()
    etag = fields.String()


class UploadSchema(Schema):
    """How to send the bytes: exactly this method, URL and headers, before ``expires_at``.

    A multipart upload has ``part_size`` and ``parts`` (each with its own URL and headers)
    instead of ``url`` and ``headers``."""

    method = fields.String()
    url = fields.String()
    headers = fields.Dict(keys=fields.String(), values=fields.String())
    part_size = fields.Integer()
    parts = fields.List(fields.Nested(PartUploadSchema))
    expires_at = fields.Integer()


class ObjectSchema(Schema):
    """Every object the API answers with has an ``id`` and says what it is (``object``)."""

    id = fields.String()


class FileSchema(ViewSchema, ObjectSchema):
    """A file object as every route returns it."""

    object = fields.Constant("file", metadata={"type": "string", "enum": ["file"]})
    bucket = fields.String()
    key = fields.String()
    name = fields.String()
    mime_type = fields.String()
    size = fields.Integer()
    sha256 = fields.String(allow_none=True)
    metadata = fields.Dict(keys=fields.String(), values=fields.String())
    status = fields.String(validate=validate.OneOf([s.value for s in Status]))
    offset = fields.Integer(metadata={"description": "Bytes storage has received so far."})
    failure_code = fields.String(
        allow_none=True, metadata={"description": "Why a failed file failed (an error code)."}
    )
    created_at = fields.Integer()
    completed_at = fields.Integer(allow_none=True)
    expires_at = fields.Integer(metadata={"description": "When the upload URL expires."})
    upload = fields.Nested(UploadSchema, allow_none=True)
    upload_url = fields.String(allow_none=True)
    download_url = fields.String(allow_none=True)
    parts_received = fields.List(
        fields.Nested(StoredPartSchema),
        allow_none=True,
        metadata={"description": "Parts storage holds (pending multipart uploads only)."},
    )

    OWN = frozenset({"offset", "upload", "upload_url", "download_url", "parts_received"})


class FilePageSchema(Schema):
    """One page of a bucket listing."""

    data = fields.List(fields.Nested(FileSchema))
    has_more = fields.Boolean()
    next_cursor = fields.String(allow_none=True)


class BucketSchema(ViewSchema):
    """A bucket's policy and how many live files the caller's tenant has in it."""

    name = fields.String()
    max_size = fields.Integer()
    allowed_mime_types = fields.List(fields.String())
    max_url_ttl = fields.Integer()
    multipart_threshold = fields.Integer()
    part_size = fields.Integer(
        metadata={"description": "Preferred part size of multipart uploads."}
    )
    file_count = fields.Integer()

    OWN = frozenset({"file_count"})
    INNER = "policy"


class BucketListSchema(Schema):
    """``GET /v1/buckets``."""

    data = fields.List(fields.Nested(BucketSchema))
    has_more = fields.Boolean()


class KeySchema(ObjectSchema):
    """An API key without its secret."""

    object = fields.Constant("api_key", metadata={"type": "string", "enum": ["api_key"]})
    tenant = fields.String()
    name = fields.String(allow_none=True)
    scopes = fields.List(fields.String())
    created_at = fields.Integer()
    revoked_at = fields.Integer(allow_none=True)


class KeyCreatedSchema(ViewSchema, KeySchema):
    """A new API key: the only time the secret is shown."""

    key = fields.String(metadata={"description": "The secret; shown once, stored hashed."})

    OWN = frozenset({"key"})


class KeyListSchema(Schema):
    """``GET /v1/keys``."""

    data = fields.List(fields.Nested(KeySchema))
    has_more = fields.Boolean()


class ErrorBodySchema(Schema):
    """The error itself."""

    code = fields.String(metadata={"pattern": r"^[a-z_]+(?:\.[a-z_]+)?$"})
    message = fields.String()
    details = fields.Dict()


class ErrorSchema(Schema):
    """Every non-2xx answer."""

    error = fields.Nested(ErrorBodySchema)
    request_id = fields.String()


class HealthSchema(Schema):
    """``GET /v1/health``."""

    status = fields.String()
    checks = fields.Dict(keys=fields.String(), values=fields.String())


class BlobStoredSchema(Schema):
    """``PUT /v1/blobs/{token}``: what the embedded store now holds."""

    etag = fields.String()
    size = fields.Integer()
    sha256 = fields.String()


def _always_present(*schemas: type[Schema], but: tuple[str, ...] = ()) -> None:
    """Mark the fields every answer of these schemas carries as ``required``, so the
    document says so (dumping ignores ``required``: the answers are unchanged)."""
    for schema in schemas:
        for name, found in schema._declared_fields.items():
            if name not in but:
                found.required = True


_always_present(
    PartUploadSchema,
    StoredPartSchema,
    FileSchema,
    FilePageSchema,
    BucketSchema,
    BucketListSchema,
    KeySchema,
    KeyCreatedSchema,
    KeyListSchema,
    ErrorBodySchema,
    ErrorSchema,
    HealthSchema,
    BlobStoredSchema,
)
_always_present(UploadSchema, but=("url", "headers", "part_size", "parts"))
