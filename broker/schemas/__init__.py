"""marshmallow schemas, the one definition of every API field: they load requests
(``requests.py``), dump answers (``answers.py``) and feed the OpenAPI document; ``fields.py``
holds the validators and bases they share."""

from __future__ import annotations

from .answers import (
    BlobStoredSchema,
    BucketListSchema,
    BucketSchema,
    ErrorBodySchema,
    ErrorSchema,
    FilePageSchema,
    FileSchema,
    HealthSchema,
    KeyCreatedSchema,
    KeyListSchema,
    KeySchema,
    ObjectSchema,
    PartUploadSchema,
    StoredPartSchema,
    UploadSchema,
)
from .fields import (
    KEY_PATTERN,
    MAX_KEY_CHARS,
    MAX_METADATA_ENTRIES,
    MAX_PREFIX,
    FullMatch,
    StrictSchema,
    ViewSchema,
)
from .requests import (
    HEADERS,
    PATH_PARAMETERS,
    CompleteSchema,
    FileCreateSchema,
    FormUploadSchema,
    KeyCreateSchema,
    KeyListQuerySchema,
    ListQuerySchema,
    PartSchema,
    PartsRequestSchema,
)

__all__ = [
    "HEADERS",
    "KEY_PATTERN",
    "MAX_KEY_CHARS",
    "MAX_METADATA_ENTRIES",
    "MAX_PREFIX",
    "PATH_PARAMETERS",
    "BlobStoredSchema",
    "BucketListSchema",
    "BucketSchema",
    "CompleteSchema",
    "ErrorBodySchema",
    "ErrorSchema",
    "FileCreateSchema",
    "FilePageSchema",
    "FileSchema",
    "FormUploadSchema",
    "FullMatch",
    "HealthSchema",
    "KeyCreateSchema",
    "KeyCreatedSchema",
    "KeyListQuerySchema",
    "KeyListSchema",
    "KeySchema",
    "ListQuerySchema",
    "ObjectSchema",
    "PartSchema",
    "PartUploadSchema",
    "PartsRequestSchema",
    "StoredPartSchema",
    "StrictSchema",
    "UploadSchema",
    "ViewSchema",
]
