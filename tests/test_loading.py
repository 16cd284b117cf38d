"""The generated loads (``broker/loading.py``) end as ``Schema.load`` does, for every request."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from marshmallow import (
    EXCLUDE,
    INCLUDE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validates,
    validates_schema,
)
from test_schemas import _HEX, _OK, BAD, GOOD

from broker.api.operations import operation_of
from broker.codegen import Unsupported
from broker.loading import generate, loader
from broker.schemas import (
    CompleteSchema,
    DownloadQuerySchema,
    FileCreateSchema,
    FormUploadSchema,
    KeyCreateSchema,
    KeyListQuerySchema,
    ListQuerySchema,
    PartSchema,
    PartsRequestSchema,
    TokenCreateSchema,
)

from support import Harness

_PART = {"part_number": 1, "etag": '"e1"'}

# For every request schema: bodies the generated code must take itself (exact types, valid)...
PLAIN: dict[type[Schema], list[Any]] = {
    FileCreateSchema: [b for b in GOOD if b.get("multipart") not in ("true", 1)],
    FormUploadSchema: [
        {"name": "a.txt", "mime_type": "text/plain", "file": ""},
        {
            "name": "a",
            "mime_type": "Text/Plain",
            "size": 3,
            "bucket": "b",
            "key": "k/1",
            "file": "",
        },
        {"name": "a", "mime_type": "text/plain", "sha256": _HEX, "file": b"raw"},
    ],
    CompleteSchema: [{}, {"parts": []}, {"parts": [_PART, {**_PART, "part_number": 10000}]}],
    PartsRequestSchema: [{}, {"part_numbers": [1, 2]}, {"expires_in": 60, "part_numbers": [3]}],
    ListQuerySchema: [{}, {"limit": 10}, {"after": "cc", "prefix": "p/", "status": "pending"}],
    KeyCreateSchema: [
        {"tenant": "acme"},
        {"tenant": "a", "name": "ci", "scopes": ["admin"]},
        {"tenant": "a", "scopes": ["files:read", "files:delete"], "expires_at": 1_900_000_000},
    ],
    TokenCreateSchema: [
        {"bucket": "default"},
        {
            "bucket": "avatars",
            "key_prefix": "users/42/",
            "max_size": 2097152,
            "mime_types": ["Image/*", "text/plain", "image/*"],
            "max_files": 5,
            "metadata": {"user": "42"},
            "origin": "https://App.example:8443",
            "ttl": 3600,
        },
        {"bucket": "b", "key_prefix": "..x", "origin": "http://[::1]:3000", "ttl": 1},
    ],
    KeyListQuerySchema: [{}, {"tenant": "acme"}, {"tenant": "acme", "other": "x"}],
    DownloadQuerySchema: [{}, {"other": "x"}],
}

# ... and bodies it leaves to marshmallow: odd but valid, or invalid.
OTHER: dict[type[Schema], list[Any]] = {
    FileCreateSchema: [
        *BAD,
        *(b for b in GOOD if b not in PLAIN[FileCreateSchema]),
        [],
        "body",
        None,
        {**_OK, "metadata": {1: "x"}},
        {**_OK, "size": 2**70},
        {**_OK, "multipart": "no"},
    ],
    FormUploadSchema: [
        {"name": "a", "mime_type": "text/plain", "size": "3"},
        {"name": "a", "mime_type": "text/plain", "size": True},
        {"name": "a", "mime_type": "text/plain", "sha256": None},
        {"name": "a", "mime_type": "text/plain", "file": None},
        {"name": "a"},
        {"name": "a", "mime_type": "text/plain", "size": -1},
    ],
    CompleteSchema: [
        {"parts": None},
        {"parts": "1"},
        {"parts": [1]},
        {"parts": [{**_PART, "part_number": 0}]},
        {"parts": [{**_PART, "part_number": True}]},
        {"parts": [{"part_number": 1}]},
        {"parts": [{**_PART, "extra": 1}]},
        {"parts": [{**_PART, "etag": ""}]},
        {"parts": ({"part_number": 1, "etag": "e"},)},
        {"other": 1},
    ],
    PartsRequestSchema: [
        {"part_numbers": []},
        {"part_numbers": [0]},
        {"part_numbers": [True]},
        {"part_numbers": [1.0]},
        {"part_numbers": "1"},
        {"expires_in": 0},
        {"expires_in": False},
    ],
    ListQuerySchema: [
        {"limit": "10"},
        {"limit": "0"},
        {"limit": "x"},
        {"limit": 0},
        {"status": "nope"},
        {"prefix": "p" * 1025},
        {"other": "x", "limit": "5"},
    ],
    KeyCreateSchema: [
        {},
        {"tenant": "Acme"},
        {"tenant": "acme", "scopes": []},
        {"tenant": "acme", "scopes": ["nope"]},
        {"tenant": "acme", "scopes": "admin"},
        {"tenant": "acme", "name": ""},
        {"tenant": "acme", "name": None},
        {"tenant": "acme", "expires_at": 0},
        {"tenant": "acme", "expires_at": 10**13},
        {"tenant": "acme", "expires_at": "1900000000"},
    ],
    KeyListQuerySchema: [{"tenant": "A"}, {"tenant": ""}, {"tenant": None}],
    TokenCreateSchema: [
        {},
        {"bucket": "default", "ttl": 0},
        {"bucket": "default", "ttl": 3601},
        {"bucket": "default", "ttl": True},
        {"bucket": "default", "key_prefix": ""},
        {"bucket": "default", "key_prefix": "/a"},
        {"bucket": "default", "key_prefix": "a//"},
        {"bucket": "default", "key_prefix": "a/../"},
        {"bucket": "default", "max_size": -1},
        {"bucket": "default", "mime_types": []},
        {"bucket": "default", "mime_types": ["image"]},
        {"bucket": "default", "mime_types": ["image/png; q=1"]},
        {"bucket": "default", "max_files": 0},
        {"bucket": "default", "metadata": {"": "x"}},
        {"bucket": "default", "origin": "https://app.example/path"},
        {"bucket": "default", "origin": "null"},
        {"bucket": "default", "scopes": ["admin"]},
    ],
    DownloadQuerySchema: [
        {"redirect": "false"},
        {"redirect": "true"},
        {"redirect": "True"},
        {"redirect": "0"},
        {"redirect": True},
        {"redirect": ""},
    ],
}


def outcome(load: Any, body: Any) -> tuple[str, Any]:
    """What a load answers, or the messages it refuses with."""
    try:
        return "loaded", load(body)
    except ValidationError as exc:
        return "refused", exc.messages


_CASES = [(s, b) for table in (PLAIN, OTHER) for s, bodies in table.items() for b in bodies]


@pytest.mark.parametrize(("schema", "body"), _CASES, ids=lambda x: getattr(x, "__name__", ""))
def test_the_generated_load_ends_as_marshmallows(schema: type[Schema], body: Any) -> None:
    before = copy.deepcopy(body)
    generated = outcome(loader(schema), body)
    assert body == before  # the request's own data is left alone
    assert generated == outcome(schema().load, body)


@pytest.mark.parametrize(
    ("schema", "body"), [(s, b) for s, bs in PLAIN.items() for b in bs], ids=lambda x: ""
)
def test_plainly_valid_requests_are_loaded_by_the_generated_code(
    schema: type[Schema], body: Any
) -> None:
    """Not deferred to marshmallow: this is what the benchmark pays for."""
    assert generate(schema())(copy.deepcopy(body)) == schema().load(body)


def test_every_schema_a_route_loads_with_is_generated_and_in_the_table(harness: Harness) -> None:
    loaded: set[type[Schema]] = {FormUploadSchema}  # a proxied upload's fields
    for view in harness.app.view_functions.values():
        op = operation_of(view)
        if op is not None:
            loaded |= {s for s in (op.body, op.query) if s is not None}
    assert loaded <= set(PLAIN)
    for schema in PLAIN:
        assert hasattr(generate(schema()), "__source__")


def _unless_x(value: str) -> None:
    if value == "x":
        raise ValidationError("Not x.")


class _Everything(Schema):
    """Every option the generator knows, to be loaded as marshmallow does."""

    class Meta:
        unknown = INCLUDE

    plain = fields.String(required=True, validate=_unless_x)
    renamed = fields.Integer(data_key="Renamed", load_default=7)
    moved = fields.String(attribute="elsewhere", allow_none=True)
    made = fields.List(fields.Raw(), load_default=list)
    flag = fields.Boolean(truthy={"yes"}, falsy={False})
    strict = fields.Boolean(truthy=set())
    raw = fields.Raw(allow_none=True)
    free = fields.Dict()
    keyed = fields.Dict(keys=fields.String(validate=_unless_x))
    nested = fields.Nested(PartSchema, unknown=EXCLUDE)  # PartSchema itself: RAISE
    trimmed = fields.String(pre_load=[str.strip], post_load=[str.upper])
    url = fields.Url()

    @post_load(pass_original=True)
    def _second(self, data: dict[str, Any], original: Any, **_: Any) -> dict[str, Any]:
        return {**data, "seen": sorted(original)}

    @post_load(pass_collection=True)
    def _first(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {**data, "first": True}


@pytest.mark.parametrize(
    ("body", "plain"),
    [
        ({"plain": "p"}, True),
        ({"plain": "p", "Renamed": 1, "moved": None, "made": [1, "a"], "flag": False}, True),
        ({"plain": "p", "strict": True, "raw": None, "free": {"a": [1]}, "keyed": {"k": 1}}, True),
        ({"plain": "p", "nested": {**_PART, "more": 1}, "trimmed": " t "}, True),
        ({"plain": "p", "url": "https://example.com/a"}, True),
        ({"plain": "p", "unknown": 1}, False),  # INCLUDE: kept, by marshmallow
        ({"plain": "p", "flag": True}, False),  # not in its truthy set
        ({"plain": "p", "flag": "yes"}, False),
        ({"plain": "x"}, False),
        ({"plain": "p", "keyed": {"x": 1}}, False),
        ({"plain": "p", "renamed": 1}, False),
        ({"plain": "p", "moved": 1}, False),
        ({"plain": "p", "trimmed": None}, False),
        ({"plain": "p", "url": "nope"}, False),
        ({"plain": "p", "nested": {**_PART, "part_number": 0}}, False),
        ({"plain": "p", "Renamed": None}, False),
    ],
)
def test_every_option_the_generator_knows_loads_as_marshmallow_does(
    body: dict[str, Any], plain: bool
) -> None:
    assert outcome(loader(_Everything), body) == outcome(_Everything().load, body)
    if plain:
        assert generate(_Everything())(body) == _Everything().load(body)
    else:
        with pytest.raises(Exception):
            generate(_Everything())(body)


class _PreLoad(FileCreateSchema):
    @pre_load
    def _strip(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return data


class _Validates(FileCreateSchema):
    @validates("name")
    def _no_x(self, value: str, **_: Any) -> None:
        _unless_x(value)


class _ValidatesSchema(FileCreateSchema):
    @validates_schema
    def _whole(self, data: dict[str, Any], **_: Any) -> None:
        pass


class _Float(FileCreateSchema):
    ratio = fields.Float()


class _Lower(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return str(value).lower()


class _Custom(FileCreateSchema):
    name = _Lower(required=True)


class _Many(Schema):
    parts = fields.Nested(CompleteSchema, many=True)


class _Constant(Schema):
    kind = fields.Constant("file")


@pytest.mark.parametrize(
    "schema", [_PreLoad, _Validates, _ValidatesSchema, _Float, _Custom, _Many, _Constant]
)
def test_what_the_generator_does_not_know_is_loaded_by_marshmallow(schema: type[Schema]) -> None:
    """A new kind of field (or hook) falls back for the whole schema."""
    with pytest.raises(Unsupported):
        generate(schema())
    assert getattr(loader(schema), "__func__", None) is Schema.load  # marshmallow's own
    for body in [_OK, {**_OK, "name": "X"}, {**_OK, "ratio": 0.5}]:
        assert outcome(loader(schema), body) == outcome(schema().load, body)


def test_many_or_partial_schemas_are_loaded_by_marshmallow() -> None:
    for schema in (FileCreateSchema(many=True), FileCreateSchema(partial=True)):
        with pytest.raises(Unsupported):
            generate(schema)
