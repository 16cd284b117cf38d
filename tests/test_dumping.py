"""The generated dumps (``broker/dumping.py``) answer exactly what ``Schema.dump`` does."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from marshmallow import Schema, fields, post_dump
from test_schemas import _UPLOAD, VIEWS, _record

from broker.api.operations import operation_of
from broker.codegen import Unsupported
from broker.config import BucketPolicy
from broker.dumping import dumper, generate
from broker.files import BucketView, FilePage
from broker.health import Health
from broker.keys import CreatedKey
from broker.models import (
    ApiKeyRecord,
    FileView,
    SignedDownload,
    StoredPart,
    TokenGrant,
    UploadInstructions,
)
from broker.schemas import (
    BlobStoredSchema,
    BucketListSchema,
    DownloadSchema,
    ErrorSchema,
    FilePageSchema,
    FileSchema,
    HealthSchema,
    KeyCreatedSchema,
    KeyListSchema,
    KeySchema,
    TokenSchema,
    UploadSchema,
)
from broker.uploads.tokens import MintedToken

from support import Harness


class Colour(enum.StrEnum):
    RED = "red"


class Count(enum.IntEnum):
    ONE = 1


_ODD_VIEWS: list[Any] = [
    # Values marshmallow converts: str and int subclasses, bools, bytes, odd dict keys.
    FileView(record=_record(name=Colour.RED, size=Count.ONE, created_at=True), offset=False),
    FileView(record=_record(metadata={1: 2, b"k": None, "x": Colour.RED}), offset=0),
    # Nested objects as dicts, with attributes or keys missing, None in lists.
    FileView(record=_record(), offset=0, upload={"method": "PUT", "url": "u"}),  # type: ignore[arg-type]
    FileView(record=_record(), offset=0, upload=SimpleNamespace(method="PUT")),  # type: ignore[arg-type]
    FileView(record=_record(), offset=0, parts_received=[None, StoredPart(1, 2, "e")]),  # type: ignore[list-item]
    SimpleNamespace(record=SimpleNamespace(id="f", status="pending"), offset=3),
    SimpleNamespace(record={"id": "f", "size": 1}, offset=3),  # a mapping: marshmallow's dump
    {"record": _record(), "offset": 1},
]

_KEY = ApiKeyRecord("key_1", "acme", "ci", ("files:read",), "hash", 1_700_000_000)
_GRANT = TokenGrant(
    "tok_2", "avatars", 1_800_000_600, "users/42/", 2048, ("image/*",), 5, {"u": "42"}, "https://a"
)
_POLICY = BucketPolicy("default", allowed_mime_types=("image/*", "text/plain"))

# Every schema the API answers with, and objects of each shape it answers.
ANSWERS: dict[type[Schema], list[Any]] = {
    FileSchema: VIEWS + _ODD_VIEWS,
    FilePageSchema: [
        FilePage(data=VIEWS, has_more=True, next_cursor="c1"),
        FilePage(data=[], has_more=False, next_cursor=None),
        {"data": VIEWS[:2], "has_more": False},
        {"has_more": 1, "next_cursor": Colour.RED, "items": []},
    ],
    BucketListSchema: [
        {"data": [BucketView(policy=_POLICY, file_count=3)], "has_more": False},
        {"data": [], "has_more": False},
        SimpleNamespace(data=[BucketView(policy=BucketPolicy("b"), file_count=0)], has_more=0),
    ],
    KeySchema: [
        _KEY,
        replace(_KEY, name=None, revoked_at=1_700_000_001, scopes=()),
        replace(_KEY, expires_at=1_800_000_000),
    ],
    KeyCreatedSchema: [CreatedKey(record=_KEY, key="secret"), CreatedKey(record=_KEY, key=b"k")],  # type: ignore[arg-type]
    KeyListSchema: [{"data": [_KEY, _KEY], "has_more": False}, {"data": []}],
    TokenSchema: [
        MintedToken(token="bt_x", grant=TokenGrant("tok_1", "default", 1_800_000_600)),
        MintedToken(token="bt_y", grant=_GRANT),
    ],
    HealthSchema: [Health(), Health("degraded", {"database": "ok"}), {"status": "ok"}],
    DownloadSchema: [SignedDownload("https://s3/x?sig", 1_800_000_300), {"url": "u"}],
    UploadSchema: [_UPLOAD, VIEWS[7].upload, {"url": "u", "headers": {}}],
    BlobStoredSchema: [{"etag": '"e"', "size": 3, "sha256": "ab"}, {"etag": "e"}],
    ErrorSchema: [
        {"error": {"code": "c", "message": "m", "details": {"a": [1]}}, "request_id": "r"},
        {"error": None, "request_id": None},
    ],
}

_CASES = [(schema, obj) for schema, objects in ANSWERS.items() for obj in objects]


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types and the same key order all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def outcome(dump: Callable[[Any], Any], obj: Any) -> Any:
    """What a dump answers, or the type of what it raises."""
    try:
        return dump(obj)
    except Exception as exc:
        return type(exc)


@pytest.mark.parametrize(("schema", "obj"), _CASES, ids=lambda x: getattr(x, "__name__", ""))
def test_the_generated_dump_equals_marshmallows(schema: type[Schema], obj: Any) -> None:
    assert same(outcome(dumper(schema), obj), outcome(schema().dump, obj))


@pytest.mark.parametrize("schema", list(ANSWERS), ids=lambda s: s.__name__)
def test_every_answer_schema_is_generated(schema: type[Schema]) -> None:
    """The equality above is about generated code, not marshmallow compared with itself."""
    assert hasattr(dumper(schema), "__source__")


def test_every_schema_a_route_answers_with_is_in_the_table(harness: Harness) -> None:
    answered: set[type[Schema]] = {FileSchema}  # also recorded under an Idempotency-Key
    for view in harness.app.view_functions.values():
        op = operation_of(view)
        if op is not None and op.response[1] is not None:
            answered.add(op.response[1])
    assert answered <= set(ANSWERS)


class _Everything(Schema):
    """Every option the generator knows, to be dumped as marshmallow does."""

    plain = fields.String()
    renamed = fields.Integer(data_key="Renamed")
    moved = fields.String(attribute="elsewhere")
    fixed = fields.Constant(7)
    defaulted = fields.Integer(dump_default=5)
    made = fields.List(fields.String(), dump_default=lambda: ["x"])
    secret = fields.String(load_only=True)
    raw = fields.Raw()
    flag = fields.Boolean()
    url = fields.Url()
    free = fields.Dict()
    keyed = fields.Dict(keys=fields.String())
    valued = fields.Dict(values=fields.Integer())
    some = fields.Nested(KeySchema, only=("id", "tenant"))
    others = fields.List(fields.Nested(KeySchema, exclude=("scopes",)))
    items = fields.String()  # also a dict's attribute


@pytest.mark.parametrize(
    "obj",
    [
        SimpleNamespace(
            plain="p",
            renamed=1,
            elsewhere="m",
            defaulted=None,
            made=None,
            secret="s",
            raw=[1],
            flag=1,
            url="http://x",
            free={"a": 1},
            keyed={1: 2},
            valued={"a": "3"},
            some=_KEY,
            others=[_KEY, None],
            items="i",
        ),
        SimpleNamespace(),
        {"plain": "p", "renamed": True, "elsewhere": b"m", "some": None, "others": None},
        {},
    ],
)
def test_every_option_the_generator_knows_dumps_as_marshmallow_does(obj: Any) -> None:
    assert hasattr(dumper(_Everything), "__source__")
    assert same(dumper(_Everything)(obj), _Everything().dump(obj))


class _Float(FileSchema):
    ratio = fields.Float()


class _Upper(fields.String):
    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return str(value).upper()


class _Custom(FileSchema):
    name = _Upper()


class _Hooked(KeySchema):
    @post_dump
    def _envelope(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {"key": data}


class _Dotted(KeySchema):
    first_scope = fields.String(attribute="scopes.0")


class _AsString(KeySchema):
    created_at = fields.Integer(as_string=True)


class _Method(KeySchema):
    shout = fields.Method("_shout")

    def _shout(self, obj: Any) -> str:
        return "!"


class _Many(Schema):
    keys = fields.Nested(KeySchema, many=True)


@pytest.mark.parametrize(
    ("schema", "obj"),
    [
        (_Float, SimpleNamespace(record=VIEWS[0].record, offset=0, ratio=0.5)),
        (_Custom, VIEWS[0]),
        (_Hooked, _KEY),
        (_Dotted, _KEY),
        (_AsString, _KEY),
        (_Method, _KEY),
        (_Many, SimpleNamespace(keys=[_KEY])),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_what_the_generator_does_not_know_is_dumped_by_marshmallow(
    schema: type[Schema], obj: Any
) -> None:
    """A new kind of field (or option, or hook) falls back for the whole schema."""
    with pytest.raises(Unsupported):
        generate(schema())
    assert not hasattr(dumper(schema), "__source__")
    assert same(dumper(schema)(obj), schema().dump(obj))


def test_a_field_added_to_a_schema_is_dumped_without_a_change_here() -> None:
    class Wider(FileSchema):
        colour = fields.String(dump_default="none")

    view = VIEWS[1]
    assert dumper(Wider)(view) == {**dumper(FileSchema)(view), "colour": "none"}
    assert same(dumper(Wider)(view), Wider().dump(view))


def test_the_generated_source_is_kept_for_tracebacks() -> None:
    source = dumper(FileSchema).__source__  # type: ignore[attr-defined]
    assert "def dump_FileSchema" in source
    assert "getattr(inner, 'mime_type', missing)" in source
    upload = UploadInstructions(method="PUT", url=1, headers={}, expires_at=1)  # type: ignore[arg-type]
    assert dumper(UploadSchema)(upload)["url"] == "1"
