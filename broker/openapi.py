"""The OpenAPI 3 document, built with apispec from the marshmallow schemas."""

from __future__ import annotations

from functools import cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema

from . import __version__, schemas
from .errors import CATALOGUE

_JSON = "application/json"


def _ref(schema: str) -> dict[str, Any]:
    return {"content": {_JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status in statuses:
        codes = sorted(code for code, (s, _) in CATALOGUE.items() if s == status)
        out[str(status)] = {"description": "Error: " + ", ".join(codes), **_ref("Error")}
    return out


_AUTH: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
_FILE_ID = {"name": "file_id", "in": "path", "required": True, "schema": {"type": "string"}}
_BUCKET = {"name": "bucket", "in": "path", "required": True, "schema": {"type": "string"}}
_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "Object key; may contain '/'.",
}
_TOKEN = {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}


def _op(
    summary: str,
    ok: tuple[int, str | None],
    *errors: int,
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    auth: bool = True,
) -> dict[str, Any]:
    status, schema = ok
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {
            str(status): {"description": summary, **(_ref(schema) if schema else {})},
            **_errors(*errors),
            "default": {
                "description": "Any route: method.not_allowed (405), rate_limited (429), "
                "internal (500), in the same envelope",
                **_ref("Error"),
            },
        },
    }
    if body:
        operation["requestBody"] = {"required": True, **_ref(body)}
    if params:
        operation["parameters"] = params
    if auth:
        operation["security"] = _AUTH
    return operation


PATHS: dict[str, dict[str, Any]] = {
    "/v1/files": {
        "post": {
            **_op(
                "Declare a file and get its upload and download URLs",
                (201, "File"),
                400,
                401,
                403,
                404,
                409,
                413,
                422,
                503,
                body="FileCreate",
            ),
            "description": "JSON declares a file and answers it pending with its upload URL. "
            "multipart/form-data is a proxied upload: the broker streams the form's last field "
            "`file` to storage and answers the file complete.",
            "requestBody": {
                "required": True,
                "content": {
                    _JSON: {"schema": "FileCreate"},
                    "multipart/form-data": {
                        "schema": "FormUpload",
                        "encoding": {"file": {"contentType": "*/*"}},
                    },
                },
            },
            "parameters": [
                {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}
            ],
        },
    },
    "/v1/files/{file_id}": {
        "get": _op(
            "A file; while pending, the bytes received", (200, "File"), 401, 404, params=[_FILE_ID]
        ),
        "delete": _op(
            "Delete a file and its stored object",
            (200, "File"),
            401,
            403,
            404,
            503,
            params=[_FILE_ID],
        ),
    },
    "/v1/files/{file_id}/complete": {
        "post": _op(
            "Validate the stored object and finalise",
            (200, "File"),
            400,
            401,
            404,
            409,
            422,
            503,
            body="Complete",
            params=[_FILE_ID],
        ),
    },
    "/v1/files/{file_id}/parts": {
        "post": _op(
            "Sign part URLs again for a pending multipart upload (resume)",
            (200, "File"),
            400,
            401,
            403,
            404,
            409,
            422,
            503,
            body="PartsRequest",
            params=[_FILE_ID],
        ),
    },
    "/v1/files/{file_id}/content": {
        "get": _op(
            "Redirect to a fresh signed download URL", (302, None), 401, 404, 409, params=[_FILE_ID]
        ),
    },
    "/v1/files/{file_id}/abort": {
        "post": _op(
            "Give up a pending upload", (200, "File"), 401, 404, 409, 503, params=[_FILE_ID]
        ),
    },
    "/v1/buckets": {"get": _op("Buckets and their policies", (200, "BucketList"), 401)},
    "/v1/buckets/{bucket}/files": {
        "get": _op(
            "List files, newest first (keyset pagination)",
            (200, "FilePage"),
            401,
            404,
            422,
            params=[
                _BUCKET,
                *[
                    {"name": n, "in": "query", "schema": {"type": t}}
                    for n, t in (
                        ("limit", "integer"),
                        ("after", "string"),
                        ("prefix", "string"),
                        ("status", "string"),
                    )
                ],
            ],
        ),
    },
    "/v1/buckets/{bucket}/files/{key}": {
        "get": _op("A file by key", (200, "File"), 401, 404, 422, params=[_BUCKET, _KEY]),
        "delete": _op(
            "Delete a file by key", (200, "File"), 401, 403, 404, 422, 503, params=[_BUCKET, _KEY]
        ),
    },
    "/v1/blobs/{token}": {
        "put": _op(
            "Upload bytes to the embedded store (signed URL)",
            (200, None),
            403,
            411,
            422,
            503,
            params=[_TOKEN],
            auth=False,
        ),
        "get": _op(
            "Download bytes from the embedded store (signed URL; Range, ETag)",
            (200, None),
            403,
            404,
            416,
            params=[_TOKEN],
            auth=False,
        ),
    },
    "/v1/downloads/{token}": {
        "get": _op(
            "Follow a broker download link: 302 to storage once complete (409 before); "
            "active content from storage without nosniff is streamed",
            (302, None),
            403,
            404,
            409,
            params=[_TOKEN],
            auth=False,
        ),
    },
    "/v1/keys": {
        "post": _op(
            "Mint an API key (admin)", (201, "KeyCreated"), 400, 401, 403, 422, body="KeyCreate"
        ),
        "get": _op("List API keys (admin)", (200, "KeyList"), 401, 403),
    },
    "/v1/keys/{key_id}": {
        "delete": _op(
            "Revoke an API key (admin)",
            (200, "Key"),
            401,
            403,
            404,
            params=[
                {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
        ),
    },
    "/v1/health": {"get": _op("Database and storage answer", (200, "Health"), 503, auth=False)},
    "/openapi.json": {"get": _op("This document", (200, None), auth=False)},
    "/metrics": {"get": _op("Prometheus metrics", (200, None), auth=False)},
}

SCHEMAS: dict[str, type[Schema]] = {
    "FileCreate": schemas.FileCreateSchema,
    "FormUpload": schemas.FormUploadSchema,
    "Complete": schemas.CompleteSchema,
    "File": schemas.FileSchema,
    "FilePage": schemas.FilePageSchema,
    "BucketList": schemas.BucketListSchema,
    "KeyCreate": schemas.KeyCreateSchema,
    "KeyCreated": schemas.KeyCreatedSchema,
    "Key": schemas.KeySchema,
    "KeyList": schemas.KeyListSchema,
    "PartsRequest": schemas.PartsRequestSchema,
    "Health": schemas.HealthSchema,
    "Error": schemas.ErrorSchema,
}


@cache
def document() -> dict[str, Any]:
    """Build the document once per process."""
    spec = APISpec(
        title="broker",
        version=__version__,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={
            "description": "Signed upload and download URLs for files in an embedded "
            "blob store or S3. Errors use one envelope."
        },
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.security_scheme(
        "apiKey", {"type": "apiKey", "in": "header", "name": "x-api-key"}
    )
    for name, schema in SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    for path, operations in PATHS.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()
