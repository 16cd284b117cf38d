"""Requests loaded by a function generated from the schema: it accepts only what is plainly
valid and leaves everything else to ``Schema.load`` itself.

Why: ``Schema.load`` sends every field through ``deserialize``, an error store and hook
lookups on every call: ~180 k instructions for a file declaration. ``loader(schema)`` reads
the schema's own field objects once and writes (``codegen``) a function that, for each
field in order, takes the value, checks its exact type, calls the field's own validators
and ``pre_load``/``post_load`` functions, applies ``load_default``, and then runs the
schema's ``post_load`` hooks. No field is described anywhere but in ``broker/schemas/``.

What keeps it equal to ``Schema.load``:

* It only ever *accepts*. Any doubt (not a ``dict``; an unknown key unless the schema
  excludes them; a required field absent; a value not of the exact type; None where not
  allowed; any validator or hook raising) stops it, and ``schema.load`` loads the request
  again from the start: every error and message is marshmallow's own.
* What it accepts is what marshmallow provably answers unchanged: an exact ``str`` for
  ``String._deserialize``, an exact ``int`` (not a bool) for Integer's, True/False where
  the Boolean field itself answers them unchanged (asked once, at generation), any value
  for ``Field._deserialize`` (Raw); dicts and lists item by item through their own fields;
  nested schemas through their own generated loader.
* It is decided by marshmallow's own methods: a schema keeps ``Schema.load`` and its
  machinery, has no ``pre_load``/``validates``/``validates_schema`` hooks, no ``many`` or
  ``partial``; a field keeps ``Field.deserialize``/``_validate``/``_validate_missing``, has
  no dotted attribute, and its ``_deserialize`` is one of those above. Anything else raises
  ``Unsupported`` and the whole schema is loaded by marshmallow.
* ``tests/test_loading.py`` gives tables of good and bad requests to both and requires the
  same outcome, the good ones taken by the generated code itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from marshmallow import EXCLUDE, INCLUDE, RAISE, Schema, ValidationError, fields, missing
from marshmallow.decorators import POST_LOAD, PRE_LOAD, VALIDATES, VALIDATES_SCHEMA

from .codegen import Source, Unsupported, overrides

Load = Callable[[Any], dict[str, Any]]


class Defer(Exception):
    """Not plainly valid: ``Schema.load`` decides."""


@functools.cache
def loader(schema_class: type[Schema]) -> Load:
    """``schema_class().load``, the plainly valid requests by a generated function."""
    schema = schema_class()
    try:
        fast = generate(schema)
    except Unsupported:
        return schema.load
    slow = schema.load

    def load(data: Any) -> dict[str, Any]:
        try:
            return fast(data)
        except (Defer, ValidationError):
            return slow(data)  # type: ignore[no-any-return]

    return load


def generate(schema: Schema) -> Load:
    """The generated function for ``schema``: it loads what it accepts and raises
    ``Defer`` or ``ValidationError`` otherwise; ``Unsupported`` when it cannot be written."""
    source = Source(f"load {type(schema).__name__}", missing=missing, Defer=Defer)
    return source.compile(_schema(schema, schema.unknown, source))


_MACHINERY = ("load", "_do_load", "_deserialize", "_invoke_load_processors", "_invoke_processors")


def _schema(schema: Schema, unknown: str, source: Source) -> str:
    """Write the function that loads with ``schema`` and ``unknown``; answer its name."""
    kind = type(schema)
    hooks = schema._hooks
    if (
        any(getattr(kind, name) is not getattr(Schema, name) for name in _MACHINERY)
        or overrides(schema, *_MACHINERY)
        or schema.many
        or schema.partial is not None
        or schema.dict_class is not dict
        or hooks[PRE_LOAD]
        or hooks[VALIDATES]
        or hooks[VALIDATES_SCHEMA]
        or unknown not in (RAISE, EXCLUDE, INCLUDE)
    ):
        raise Unsupported(f"{kind.__name__}: a load of its own")
    name = source.local(f"load_{kind.__name__}_")
    body = ["    if type(data) is not dict: raise Defer"]
    if unknown != EXCLUDE:  # RAISE: an error; INCLUDE: kept (rare: left to marshmallow)
        known = frozenset(_key(f, n) for n, f in schema.load_fields.items())
        body.append(f"    if not {source.bind(known, 'known')}.issuperset(data): raise Defer")
    body.append("    out = {}")
    for attr, field in schema.load_fields.items():
        body += _field(field, attr, source)
    # _invoke_load_processors: pass_collection hooks first, then the others; one object.
    for hook_many in (True, False):
        for hook, many, kwargs in hooks[POST_LOAD]:
            if many is hook_many:
                original = ", data" if kwargs.get("pass_original") else ""
                call = f"{source.bind(getattr(schema, hook), 'hook')}(out{original}"
                body.append(f"    out = {call}, many=False, partial=None, unknown={unknown!r})")
    source.function(name, "data", [*body, "    return out"])
    return name


def _field(field: fields.Field[Any], attr: str, source: Source) -> list[str]:
    """Lines loading one top-level field into ``out`` (``Field.deserialize`` in the
    schema's ``_deserialize``)."""
    key, target = _key(field, attr), attr if field.attribute is None else field.attribute
    if "." in target:
        raise Unsupported(f"{field!r}: dotted attribute")
    target = repr(target)
    store = f"out[{target}] = v"
    if field.pre_load or field.post_load or _is_identity(field):
        store = f"if v is not missing: {store}"  # a field answering missing sets nothing
    present = [*_present(field, source), f"    {store}"]
    lines = [f"    v = data.get({key!r}, missing)"]
    default = field.load_default
    if field.required:
        return [*lines, "    if v is missing: raise Defer", *present]
    if default is missing:
        return [*lines, "    if v is not missing:", *[f"    {line}" for line in present]]
    lines.append("    if v is missing:")
    if callable(default):
        lines.append(f"        v = {source.bind(default, 'default')}()")
        lines.append(f"        if v is not missing: out[{target}] = v")
    else:
        lines.append(f"        out[{target}] = {source.bind(default, 'default')}")
    return [*lines, "    else:", *[f"    {line}" for line in present]]


def _key(field: fields.Field[Any], attr: str) -> str:
    """The key a field is read from in the request."""
    return attr if field.data_key is None else field.data_key


def _present(field: fields.Field[Any], source: Source) -> list[str]:
    """Lines taking a present value ``v`` through ``field.deserialize`` (or raising)."""
    kind = type(field)
    if (
        kind.deserialize is not fields.Field.deserialize
        or kind._validate is not fields.Field._validate
        or kind._validate_missing is not fields.Field._validate_missing
        or overrides(field, "deserialize", "_deserialize", "_validate", "_validate_missing")
    ):
        raise Unsupported(f"{field!r}: a deserialize of its own")
    lines = []
    if not field.allow_none and (field.pre_load or _is_identity(field)):
        lines.append("    if v is None: raise Defer")  # else the type check refuses None
    lines += [f"    v = {source.bind(f, 'pre')}(v)" for f in field.pre_load]
    check = [f"    {line}" for line in _deserialize(field, source)]
    check += [
        f"    if {source.bind(f, 'validate')}(v) is False: raise Defer" for f in field.validators
    ]
    check += [f"    v = {source.bind(f, 'post')}(v)" for f in field.post_load]
    if field.allow_none:  # None is loaded as None, unchecked
        return [*lines, "    if v is not None:", *[f"    {line}" for line in check or ["    pass"]]]
    return lines + check


def _is_identity(field: fields.Field[Any]) -> bool:
    """Whether the field's ``_deserialize`` is ``Field``'s: any value, as it is."""
    return type(field)._deserialize is fields.Field._deserialize


def _deserialize(field: fields.Field[Any], source: Source) -> list[str]:  # noqa: PLR0911 (one return per kind of field)
    """Lines accepting ``v`` where ``field._deserialize(v)`` answers it unchanged (dicts
    and lists: rebuilt item by item), raising ``Defer`` otherwise."""
    own: Any = type(field)._deserialize
    if _is_identity(field):
        return []
    if own is fields.String._deserialize:
        return ["if type(v) is not str: raise Defer"]
    if (
        isinstance(field, fields.Integer)
        and own is fields.Number._deserialize
        and type(field)._validated is fields.Integer._validated
        and type(field)._format_num is fields.Number._format_num
        and field.num_type is int
    ):
        return ["if type(v) is not int: raise Defer"]
    if isinstance(field, fields.Boolean) and own is fields.Boolean._deserialize:
        kept = [b for b in (True, False) if _answers_itself(field, b)]
        return [f"if {' and '.join(f'v is not {b}' for b in kept) or 'True'}: raise Defer"]
    if isinstance(field, fields.Mapping) and own is fields.Mapping._deserialize:
        if field.mapping_type is not dict:
            raise Unsupported(f"{field!r}: a mapping other than dict")
        keys, values = (_item(f, source) for f in (field.key_field, field.value_field))
        return [
            "if type(v) is not dict: raise Defer",
            f"v = {{{keys}(k): {values}(x) for k, x in v.items()}}",
        ]
    if isinstance(field, fields.List) and own is fields.List._deserialize:
        return [
            "if type(v) is not list: raise Defer",
            f"v = [{_item(field.inner, source)}(e) for e in v]",
        ]
    if isinstance(field, fields.Nested) and own is fields.Nested._deserialize:
        nested = field.schema
        if nested.many or field.many:
            raise Unsupported(f"{field!r}: many")
        unknown = field.unknown if field.unknown is not None else nested.unknown
        return [f"v = {_schema(nested, unknown, source)}(v)"]
    raise Unsupported(f"{field!r}: a field the generator does not know")


def _item(field: fields.Field[Any] | None, source: Source) -> str:
    """The name of a function taking an item (of a list, a key or value of a dict) through
    ``field.deserialize``; ``""`` (the item itself) without a field."""
    if field is None:
        return ""
    name = source.local("item")
    source.function(name, "v", [*_present(field, source), "    return v"])
    return name


def _answers_itself(field: fields.Boolean, value: bool) -> bool:
    """Whether this Boolean field loads ``value`` as ``value`` (its own truthy/falsy)."""
    try:
        return field._deserialize(value, None, None) is value
    except ValidationError:
        return False
