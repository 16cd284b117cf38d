"""The marshmallow schemas: what a declaration may hold, and how a file is shown."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from marshmallow import ValidationError

from broker.models import (
    FileRecord,
    FileView,
    MultipartInstructions,
    PartUpload,
    Status,
    StoredPart,
    UploadInstructions,
)
from broker.schemas import FileCreateSchema, FileSchema

from support import Harness

_OK: dict[str, Any] = {"name": "a.txt", "size": 1234, "mime_type": "text/plain"}
_HEX = "0123456789abcdefABCDEF" * 2 + "0123456789abcdefABCD"
assert len(_HEX) == 64

# Bodies a client may send: these load...
GOOD: list[dict[str, Any]] = [
    _OK,
    {**_OK, "size": 0},
    {**_OK, "size": 5 * 1024**4},
    {**_OK, "mime_type": "Text/Plain; Charset=UTF-8"},
    {**_OK, "mime_type": 'application/vnd.api+json ;  q=1 ;x="a b"'},
    {**_OK, "name": "ünïcødé 名前.txt"},
    {**_OK, "name": "x" * 255},
    {**_OK, "bucket": "default"},
    {**_OK, "bucket": "images_2-b"},
    {**_OK, "key": "a/b/c.txt"},
    {**_OK, "key": "../x"},  # syntactically a string; the service refuses it later
    {**_OK, "sha256": _HEX},
    {**_OK, "sha256": _HEX.lower()},
    {**_OK, "sha256": None},
    {**_OK, "metadata": {}},
    {**_OK, "metadata": {"a": "b", "k" * 64: "v" * 512}},
    {**_OK, "metadata": {f"k{i}": str(i) for i in range(32)}},
    {**_OK, "expires_in": 1},
    {**_OK, "expires_in": 10**12},
    {**_OK, "multipart": False},
    {**_OK, "multipart": True},
    {
        **_OK,
        "bucket": "b",
        "key": "k",
        "sha256": _HEX,
        "metadata": {"x": "y"},
        "expires_in": 60,
        "multipart": False,
    },
]

# ... and these are refused.
BAD: list[dict[str, Any]] = [
    {},
    {**_OK, "bucket": "abc\n"},
    {**_OK, "sha256": ""},
    {**_OK, "sha256": _HEX + "\n"},
    {**_OK, "mime_type": "text/plain\n"},
    {"name": "a.txt"},
    {**_OK, "extra": 1},
    {**_OK, "extra": 1, "size": -1},
    {**_OK, "name": ""},
    {**_OK, "name": "x" * 256},
    {**_OK, "name": "a\x00b"},
    {**_OK, "name": "a\nb"},
    {**_OK, "name": None},
    {**_OK, "name": 5},
    {**_OK, "size": -1},
    {**_OK, "size": True},
    {**_OK, "size": False},
    {**_OK, "size": 1.0},
    {**_OK, "size": 1.5},
    {**_OK, "size": "12"},
    {**_OK, "size": None},
    {**_OK, "mime_type": "text"},
    {**_OK, "mime_type": ""},
    {**_OK, "mime_type": "text/" + "p" * 251},
    {**_OK, "mime_type": "text/plain\x00"},
    {**_OK, "mime_type": ["text/plain"]},
    {**_OK, "bucket": "Default"},
    {**_OK, "bucket": ""},
    {**_OK, "bucket": None},
    {**_OK, "bucket": "x" * 64},
    {**_OK, "key": ""},
    {**_OK, "key": None},
    {**_OK, "key": 7},
    {**_OK, "sha256": "abc"},
    {**_OK, "sha256": "g" * 64},
    {**_OK, "sha256": 5},
    {**_OK, "metadata": None},
    {**_OK, "metadata": []},
    {**_OK, "metadata": {"": "v"}},
    {**_OK, "metadata": {"k" * 65: "v"}},
    {**_OK, "metadata": {"k\x01": "v"}},
    {**_OK, "metadata": {"k": 1}},
    {**_OK, "metadata": {"k": None}},
    {**_OK, "metadata": {"k": "v" * 513}},
    {**_OK, "metadata": {f"k{i}": str(i) for i in range(33)}},
    {**_OK, "expires_in": 0},
    {**_OK, "expires_in": True},
    {**_OK, "expires_in": 1.5},
    {**_OK, "expires_in": None},
    {**_OK, "multipart": "maybe"},
    {**_OK, "multipart": "true"},
    {**_OK, "multipart": "yes"},
    {**_OK, "multipart": 1},
    {**_OK, "multipart": 0},
    {**_OK, "name": "a\ud800b"},
    {**_OK, "key": "k\udfff"},
    {**_OK, "metadata": {"k\ud800": "v"}},
    {**_OK, "metadata": {"k": "\ud800"}},
    {**_OK, "name": "gnp.\u202eexe"},
    {**_OK, "name": "a\u2066b"},
    {**_OK, "name": "a\u200fb"},
    {**_OK, "name": "a\u061cb"},
    {**_OK, "sha256": "\ud800" * 64},
    {**_OK, "multipart": None},
    {"name": "", "size": -1, "mime_type": "nope", "bucket": "B", "sha256": "x"},
]


@pytest.mark.parametrize("body", GOOD, ids=lambda b: json.dumps(b)[:60])
def test_a_valid_declaration_loads_in_canonical_form(body: dict[str, Any]) -> None:
    before = json.dumps(body)
    loaded = FileCreateSchema().load(body)
    assert json.dumps(body) == before  # the request's own dict is left alone
    assert loaded["bucket"] == body.get("bucket", "default")
    assert loaded["metadata"] == body.get("metadata", {})
    assert loaded["mime_type"] == loaded["mime_type"].strip()
    if body.get("sha256"):
        assert loaded["sha256"] == body["sha256"].lower()


@pytest.mark.parametrize("body", BAD, ids=lambda b: json.dumps(b)[:60])
def test_an_invalid_declaration_is_refused_field_by_field(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as refused:
        FileCreateSchema().load(body)
    assert isinstance(refused.value.messages, dict)
    assert refused.value.messages  # each message names the field it is about


def _record(**fields: Any) -> FileRecord:
    values: dict[str, Any] = {
        "id": "file_01JD7ZZZZZZZZZZZZZZZZZZZZZ",
        "tenant": "acme",
        "bucket": "default",
        "key": "01jd7/a.txt",
        "name": "a.txt",
        "mime_type": "text/plain",
        "size": 1234,
        "sha256": None,
        "metadata": {},
        "status": Status.PENDING,
        "created_at": 1_700_000_000,
        "updated_at": 1_700_000_000,
        "expires_at": 1_700_000_900,
    }
    values.update(fields)
    return FileRecord(**values)


_UPLOAD = UploadInstructions(
    method="PUT",
    url="http://127.0.0.1:8000/v1/blobs/tok",
    headers={"Content-Type": "text/plain", "Content-Length": "1234"},
    expires_at=1_700_000_900,
)

_PARTS = MultipartInstructions(
    method="PUT",
    part_size=5 * 2**20,
    parts=[
        PartUpload(
            part_number=n,
            offset=(n - 1) * 5 * 2**20,
            size=5 * 2**20 if n < 3 else 2 * 2**20,
            url=f"https://s3.example/b/k?partNumber={n}",
            headers={"Content-Length": str(5 * 2**20 if n < 3 else 2 * 2**20)},
        )
        for n in (2, 3)
    ],
    expires_at=1_700_000_900,
)

VIEWS = [
    FileView(record=_record(), offset=0),
    FileView(record=_record(), offset=0, upload=_UPLOAD, download_url="http://h/v1/downloads/t"),
    FileView(record=_record(sha256="ab" * 32, metadata={"k": "v", "ü": "名"}), offset=5),
    FileView(record=_record(key="dir/ä b.txt", name="ä b.txt"), offset=0, upload=_UPLOAD),
    FileView(
        record=_record(status=Status.COMPLETE, completed_at=1_700_000_100),
        offset=1234,
        download_url="https://s3.example/bucket/k?X-Amz-Signature=x",
    ),
    FileView(record=_record(status=Status.FAILED, failure_code="upload.size_mismatch"), offset=0),
    FileView(record=_record(status=Status.ABORTED, size=0), offset=0),
    FileView(
        record=_record(size=12 * 2**20, upload_id="u1", part_size=5 * 2**20),
        offset=5 * 2**20,
        upload=_PARTS,
        parts_received=[StoredPart(part_number=1, size=5 * 2**20, etag="e1")],
        download_url="http://h/v1/downloads/t",
    ),
    FileView(record=_record(upload_id="u1", part_size=5 * 2**20), offset=0, parts_received=[]),
]


@pytest.mark.parametrize("view", VIEWS)
def test_a_file_dumps_every_field_in_the_documented_order(view: FileView) -> None:
    dumped = FileSchema().dump(view)
    assert list(dumped) == list(FileSchema().fields)
    record = view.record
    assert dumped["id"] == record.id
    assert dumped["object"] == "file"
    assert dumped["status"] == record.status.value
    assert dumped["metadata"] == record.metadata
    assert dumped["metadata"] is not record.metadata  # a copy
    assert dumped["offset"] == view.offset
    assert dumped["parts_received"] == (
        None
        if view.parts_received is None
        else [
            {"part_number": p.part_number, "size": p.size, "etag": p.etag}
            for p in view.parts_received
        ]
    )
    if isinstance(view.upload, UploadInstructions):
        assert dumped["upload_url"] == view.upload.url == dumped["upload"]["url"]
        assert dumped["upload"]["headers"] == view.upload.headers
    elif isinstance(view.upload, MultipartInstructions):
        assert dumped["upload_url"] is None
        assert set(dumped["upload"]) == {"method", "part_size", "parts", "expires_at"}
        assert [p["part_number"] for p in dumped["upload"]["parts"]] == [2, 3]
    else:
        assert dumped["upload"] is None
        assert dumped["upload_url"] is None


def test_a_created_file_answers_as_the_schema_renders_it(harness: Harness) -> None:
    """End to end: an idempotent create's body, fresh and replayed, is the schema's dump."""
    body = {**_OK, "sha256": _HEX, "metadata": {"team": "x"}, "key": "docs/a.txt"}
    headers = {**harness.key(), "Idempotency-Key": "k-1"}
    first = harness.client.post("/v1/files", json=body, headers=headers)
    assert first.status_code == 201
    again = harness.client.post("/v1/files", json=body, headers=headers)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    service = harness.service
    record = service.store.get_file("acme", first.json["id"])
    assert record is not None
    with harness.app.test_request_context(base_url="http://localhost"):
        upload = service.declarations.views.upload(record)  # deterministic local tokens
    view = FileView(record=record, offset=0, upload=upload, download_url=first.json["download_url"])
    assert first.json == FileSchema().dump(view)


_INTERNAL_FIELDS = {
    "tenant", "updated_at", "upload_id", "part_size", "proxied", "joining_since", "token_id",
    "object_key", "etag", "version_id",
}  # fmt: skip
"""FileRecord fields the API never shows (the tenant is the caller's own; the rest are
bookkeeping of the upload, of the object stored for it and of the browser token that
declared it)."""


def test_every_file_field_is_in_the_schema_or_named_internal() -> None:
    """A new field is added in FileSchema, FileRecord, the files table (held equal to
    FileRecord by tests/db/test_records.py) and a migration, and nowhere else: every layer
    in between maps fields generically. This fails when one of the first two is missed."""
    record_fields = {f.name for f in dataclasses.fields(FileRecord)}
    schema_fields = set(FileSchema().fields) - FileSchema.OWN - {"object"}
    assert schema_fields == record_fields - _INTERNAL_FIELDS
