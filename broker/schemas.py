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
    pre_dump,
    validate,
)

from .config import NAME_RE
from .models import FileView, MultipartInstructions, Scope, Status, UploadInstructions
from .naming import is_valid_mime_type, normalise_mime_type

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_METADATA_ENTRIES = 32


def _no_control_chars(value: str) -> None:
    if _CONTROL.search(value):
        raise ValidationError("Must not contain control characters.")


def _mime_type(value: str) -> None:
    if not is_valid_mime_type(value):
        raise ValidationError("Not a MIME type like 'image/png'.")


def _not_bool(value: Any) -> None:
    if isinstance(value, bool):
        raise ValidationError("Not a valid integer.")


def _metadata(value: dict[str, str]) -> None:
    if len(value) > MAX_METADATA_ENTRIES:
        raise ValidationError(f"At most {MAX_METADATA_ENTRIES} entries.")


def _name(**kwargs: Any) -> fields.String:
    return fields.String(
        validate=[validate.Regexp(NAME_RE, error="Use 1-63 of a-z, 0-9, '-', '_'.")], **kwargs
    )


def _normalise_declaration(data: dict[str, Any]) -> dict[str, Any]:
    """A loaded declaration's canonical form: MIME type normalised, SHA-256 in lower case."""
    data["mime_type"] = normalise_mime_type(data["mime_type"])
    if data.get("sha256"):
        data["sha256"] = data["sha256"].lower()
    return data


class StrictSchema(Schema):
    """Unknown fields are an error, so a typo never silently does nothing."""

    class Meta:
        unknown = RAISE


# -- requests ------------------------------------------------------------------------------


class FileCreateSchema(StrictSchema):
    """Body of ``POST /v1/files``: what the client promises to upload."""

    name = fields.String(
        required=True, validate=[validate.Length(min=1, max=255), _no_control_chars]
    )
    size = fields.Integer(required=True, strict=True, validate=[_not_bool, validate.Range(min=0)])
    mime_type = fields.String(required=True, validate=[validate.Length(max=255), _mime_type])
    bucket = _name(load_default="default")
    key = fields.String(validate=validate.Length(min=1))
    sha256 = fields.String(
        allow_none=True,
        validate=validate.Regexp(r"^[0-9a-fA-F]{64}$", error="Must be 64 hex characters."),
    )
    metadata = fields.Dict(
        keys=fields.String(validate=[validate.Length(min=1, max=64), _no_control_chars]),
        values=fields.String(validate=validate.Length(max=512)),
        load_default=dict,
        validate=_metadata,
    )
    expires_in = fields.Integer(strict=True, validate=[_not_bool, validate.Range(min=1)])
    multipart = fields.Boolean()

    @post_load
    def _normalise(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return _normalise_declaration(data)


class FormUploadSchema(StrictSchema):
    """The fields of a proxied upload (``multipart/form-data``) that come before ``file``.

    ``name`` defaults to the file part's filename and ``mime_type`` to its Content-Type
    (else ``application/octet-stream``); ``size``, when given, must be the exact length.
    """

    name = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=255), _no_control_chars],
        metadata={"description": "Default: the file part's filename."},
    )
    size = fields.Integer(
        validate=validate.Range(min=0), metadata={"description": "If given, the exact length."}
    )
    mime_type = fields.String(
        required=True,
        validate=[validate.Length(max=255), _mime_type],
        metadata={"description": "Default: the file part's Content-Type, else octet-stream."},
    )
    bucket = _name(load_default="default")
    key = fields.String(validate=validate.Length(min=1))
    sha256 = fields.String(
        validate=validate.Regexp(r"^[0-9a-fA-F]{64}$", error="Must be 64 hex characters.")
    )
    file = fields.Raw(
        metadata={"type": "string", "format": "binary", "description": "The bytes; last field."}
    )

    @post_load
    def _normalise(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return _normalise_declaration(data)


_FILE_CREATE = FileCreateSchema()
_CREATE_FIELDS = frozenset(_FILE_CREATE.fields)
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")  # the same pattern as the schema's validator


def load_file_create(data: dict[str, Any]) -> dict[str, Any]:
    """``FileCreateSchema().load(data)``, without marshmallow for the bodies clients send.

    The hand-written checks only *accept*: when a body passes them all, marshmallow would
    accept it too and load the very same dict (``tests/test_schemas.py`` holds both to a
    table of bodies). Anything else, odd or invalid, goes to the schema itself, so every
    error message and detail is marshmallow's own. Saves ~15 µs per create.
    """
    if _CREATE_FIELDS.issuperset(data) and _plainly_valid(data):
        loaded = dict(data)
        loaded["mime_type"] = normalise_mime_type(data["mime_type"])
        loaded.setdefault("bucket", "default")
        metadata = data.get("metadata")
        loaded["metadata"] = {} if metadata is None else dict(metadata)
        if data.get("sha256"):
            loaded["sha256"] = data["sha256"].lower()
        return loaded
    result: dict[str, Any] = _FILE_CREATE.load(data)
    return result


def _plainly_valid(data: dict[str, Any]) -> bool:  # noqa: PLR0911 (one early exit per rule)
    name, size, mime_type = data.get("name"), data.get("size"), data.get("mime_type")
    if not (type(name) is str and 1 <= len(name) <= 255 and not _CONTROL.search(name)):
        return False
    if not (type(size) is int and size >= 0):
        return False
    if not (type(mime_type) is str and len(mime_type) <= 255 and is_valid_mime_type(mime_type)):
        return False
    if "bucket" in data and not (type(data["bucket"]) is str and NAME_RE.match(data["bucket"])):
        return False
    if "key" in data and not (type(data["key"]) is str and data["key"]):
        return False
    sha256 = data.get("sha256")
    if sha256 is not None and not (type(sha256) is str and _SHA256_RE.match(sha256)):
        return False
    if "metadata" in data and not _plain_metadata(data["metadata"]):
        return False
    if "expires_in" in data and not (type(data["expires_in"]) is int and data["expires_in"] >= 1):
        return False
    return "multipart" not in data or type(data["multipart"]) is bool


def _plain_metadata(metadata: Any) -> bool:
    if type(metadata) is not dict or len(metadata) > MAX_METADATA_ENTRIES:
        return False
    return all(
        type(k) is str
        and 1 <= len(k) <= 64
        and not _CONTROL.search(k)
        and type(v) is str
        and len(v) <= 512
        for k, v in metadata.items()
    )


class PartSchema(StrictSchema):
    """One uploaded part, as the client reports it on completion."""

    part_number = fields.Integer(required=True, strict=True, validate=validate.Range(1, 10000))
    etag = fields.String(required=True, validate=validate.Length(min=1, max=128))


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
    after = fields.String()
    prefix = fields.String(validate=validate.Length(max=1024))
    status = fields.String(validate=validate.OneOf([s.value for s in Status]))


class KeyCreateSchema(StrictSchema):
    """Body of ``POST /v1/keys``."""

    tenant = _name(required=True)
    name = fields.String(validate=[validate.Length(min=1, max=255), _no_control_chars])
    scopes = fields.List(
        fields.String(validate=validate.OneOf([s.value for s in Scope])),
        validate=validate.Length(min=1),
    )


class KeyListQuerySchema(Schema):
    """Query of ``GET /v1/keys``."""

    class Meta:
        unknown = EXCLUDE

    tenant = _name()


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


class FileSchema(Schema):
    """A file object as every route returns it."""

    id = fields.String()
    object = fields.Constant("file")
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

    @pre_dump
    def _flatten(self, view: FileView, **_: Any) -> dict[str, Any]:
        record = view.record
        return {
            "id": record.id,
            "bucket": record.bucket,
            "key": record.key,
            "name": record.name,
            "mime_type": record.mime_type,
            "size": record.size,
            "sha256": record.sha256,
            "metadata": record.metadata,
            "status": record.status.value,
            "offset": view.offset,
            "failure_code": record.failure_code,
            "created_at": record.created_at,
            "completed_at": record.completed_at,
            "expires_at": record.expires_at,
            "upload": view.upload,
            "upload_url": getattr(view.upload, "url", None),
            "download_url": view.download_url,
            "parts_received": view.parts_received,
        }


def render_file(view: FileView) -> dict[str, Any]:
    """``FileSchema().dump(view)`` written out by hand: the same keys in the same order.

    Every route answers files; marshmallow's generic dump costs ~60 µs a file where this
    costs a few. ``tests/test_schemas.py`` holds it equal to the schema for every shape
    (statuses, with and without upload, checksum, metadata, failure).
    """
    record, upload = view.record, view.upload
    return {
        "id": record.id,
        "object": "file",
        "bucket": record.bucket,
        "key": record.key,
        "name": record.name,
        "mime_type": record.mime_type,
        "size": record.size,
        "sha256": record.sha256,
        "metadata": dict(record.metadata),
        "status": record.status.value,
        "offset": view.offset,
        "failure_code": record.failure_code,
        "created_at": record.created_at,
        "completed_at": record.completed_at,
        "expires_at": record.expires_at,
        "upload": _render_upload(upload),
        "upload_url": getattr(upload, "url", None),
        "download_url": view.download_url,
        "parts_received": None
        if view.parts_received is None
        else [
            {"part_number": p.part_number, "size": p.size, "etag": p.etag}
            for p in view.parts_received
        ],
    }


def _render_upload(upload: UploadInstructions | MultipartInstructions | None) -> Any:
    """The ``upload`` section as UploadSchema dumps it (keys a multipart upload lacks,
    ``url`` and ``headers``, are left out; ``part_size`` and ``parts`` come instead)."""
    if upload is None:
        return None
    if isinstance(upload, MultipartInstructions):
        return {
            "method": upload.method,
            "part_size": upload.part_size,
            "parts": [
                {
                    "part_number": p.part_number,
                    "offset": p.offset,
                    "size": p.size,
                    "url": p.url,
                    "headers": dict(p.headers),
                }
                for p in upload.parts
            ],
            "expires_at": upload.expires_at,
        }
    return {
        "method": upload.method,
        "url": upload.url,
        "headers": dict(upload.headers),
        "expires_at": upload.expires_at,
    }


class FilePageSchema(Schema):
    """One page of a bucket listing."""

    data = fields.List(fields.Nested(FileSchema))
    has_more = fields.Boolean()
    next_cursor = fields.String(allow_none=True)


class BucketSchema(Schema):
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


class BucketListSchema(Schema):
    """``GET /v1/buckets``."""

    data = fields.List(fields.Nested(BucketSchema))
    has_more = fields.Boolean()


class KeySchema(Schema):
    """An API key without its secret."""

    id = fields.String()
    object = fields.Constant("api_key")
    tenant = fields.String()
    name = fields.String(allow_none=True)
    scopes = fields.List(fields.String())
    created_at = fields.Integer()
    revoked_at = fields.Integer(allow_none=True)


class KeyCreatedSchema(KeySchema):
    """A new API key: the only time the secret is shown."""

    key = fields.String(metadata={"description": "The secret; shown once, stored hashed."})


class KeyListSchema(Schema):
    """``GET /v1/keys``."""

    data = fields.List(fields.Nested(KeySchema))
    has_more = fields.Boolean()


class ErrorBodySchema(Schema):
    """The error itself."""

    code = fields.String()
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
