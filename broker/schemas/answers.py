"""The answer schemas: how every object the API returns is shown (required: always there)."""

from __future__ import annotations

from marshmallow import (
    Schema,
    fields,
    validate,
)

from ..models import Status
from .fields import ViewSchema


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
    expires_at = fields.Integer(
        allow_none=True, metadata={"description": "When the key stops working (null: never)."}
    )
    rate_limit = fields.String(
        allow_none=True, metadata={"description": "The key's own limit; null: the default."}
    )


class KeyCreatedSchema(ViewSchema, KeySchema):
    """A new API key: the only time the secret is shown."""

    key = fields.String(metadata={"description": "The secret; shown once, stored hashed."})

    OWN = frozenset({"key"})


class KeyListSchema(Schema):
    """``GET /v1/keys``."""

    data = fields.List(fields.Nested(KeySchema))
    has_more = fields.Boolean()


class TokenSchema(ViewSchema):
    """A new browser upload token and what it allows (a null limit: only the bucket's own
    policy applies)."""

    id = fields.String()
    object = fields.Constant(
        "browser_token", metadata={"type": "string", "enum": ["browser_token"]}
    )
    token = fields.String(
        metadata={"description": "Sent like a key (Authorization: Bearer, or x-api-key)."}
    )
    expires_at = fields.Integer()
    bucket = fields.String()
    key_prefix = fields.String(allow_none=True)
    max_size = fields.Integer(allow_none=True)
    mime_types = fields.List(fields.String(), allow_none=True)
    max_files = fields.Integer(allow_none=True)
    metadata = fields.Dict(keys=fields.String(), values=fields.String())
    origin = fields.String(allow_none=True)

    OWN = frozenset({"token"})
    INNER = "grant"


class ErrorBodySchema(Schema):
    """The error itself."""

    code = fields.String(metadata={"pattern": r"^[a-z_]+(?:\.[a-z_]+)?$"})
    message = fields.String()
    details = fields.Dict()


class ErrorSchema(Schema):
    """Every non-2xx answer."""

    error = fields.Nested(ErrorBodySchema)
    request_id = fields.String()


class DownloadSchema(Schema):
    """The JSON form of a download (``?redirect=false`` or ``Accept: application/json``)."""

    url = fields.String(
        metadata={
            "description": "A signed GET URL: storage's own, or for active content that "
            "storage cannot mark nosniff (S3), a broker link that streams the bytes. It needs "
            "no key; fetch it before expires_at."
        }
    )
    expires_at = fields.Integer(metadata={"description": "When url stops working."})


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
    TokenSchema,
    ErrorBodySchema,
    ErrorSchema,
    DownloadSchema,
    HealthSchema,
    BlobStoredSchema,
)
_always_present(UploadSchema, but=("url", "headers", "part_size", "parts"))
