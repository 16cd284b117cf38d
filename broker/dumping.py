"""Answers dumped by a function generated from the schema: ``Schema.dump``'s very output.

Why: ``Schema.dump`` sends every field through a generic chain (``serialize``, ``get_value``,
the accessor, ``_serialize``) on every call: ~300 k instructions for a file, more than the
rest of a create's Python. ``dumper(FileSchema)`` reads the schema's own field objects once
and writes (``codegen``) one function per schema doing only what that chain would do for
these fields; no field is described anywhere but in ``broker/schemas/``.

What keeps it equal to ``Schema.dump``:

* It is decided by marshmallow's own methods, never by field names. A schema is generated
  only if it keeps ``Schema.dump``/``_serialize`` and ``Schema``'s or ``ViewSchema``'s
  ``get_attribute``, has no dump hooks, no ``many``, and a ``dict`` result; a field only if
  it keeps ``Field.serialize``/``get_value``, has no dotted attribute, and its
  ``_serialize`` is ``Field``'s (the value itself: Raw, Boolean), ``String``'s, ``Number``'s
  for plain ``int``, ``Mapping``'s for ``dict`` (keys and values alike), ``List``'s,
  ``Nested``'s (one object) or ``Constant``'s. Anything else raises ``Unsupported`` and the
  whole schema is dumped by marshmallow: a new kind of field is never dumped wrong.
* Only the commonest values are converted inline, where marshmallow provably answers the
  value itself (None; an exact ``str`` for String; an exact ``int`` for Integer); any other
  value goes to the field's own ``_serialize``. ``dump_default`` and ``data_key`` are read
  from the field; missing attributes are skipped as marshmallow skips them.
* Values are read as marshmallow reads them: attributes of an object without
  ``__getitem__``, keys of an exact ``dict`` (not for a ``ViewSchema``); any other object
  goes to that schema's own ``dump``. Reading an attribute is assumed to have no effects.
* ``tests/test_dumping.py`` holds every answer schema generated and equal to
  ``Schema.dump`` (key order and value types included) on a table of objects, and the
  fallback for what the generator does not know.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from marshmallow import Schema, fields, missing
from marshmallow.decorators import POST_DUMP, PRE_DUMP

from .codegen import Source, Unsupported, attribute, overrides
from .schemas import ViewSchema

Dump = Callable[[Any], Any]


@functools.cache
def dumper(schema_class: type[Schema]) -> Dump:
    """``schema_class().dump`` as a generated function (marshmallow's own if unsupported)."""
    schema = schema_class()
    try:
        return generate(schema)
    except Unsupported:
        return schema.dump


def generate(schema: Schema) -> Dump:
    """A function equal to ``schema.dump``; ``Unsupported`` when it cannot be written."""
    source = Source(f"dump {type(schema).__name__}", missing=missing)
    return source.compile(_schema(schema, source))


def _schema(schema: Schema, source: Source) -> str:
    """Write the function that dumps with ``schema`` (once); answer its name."""
    if id(schema) in source.written:
        return source.written[id(schema)]
    kind = type(schema)
    if (
        kind.dump is not Schema.dump
        or kind._serialize is not Schema._serialize
        or kind.get_attribute not in (Schema.get_attribute, ViewSchema.get_attribute)
        or overrides(schema, "dump", "_serialize", "get_attribute")
        or schema.many
        or schema.dict_class is not dict
        or schema._hooks[PRE_DUMP]
        or schema._hooks[POST_DUMP]
    ):
        raise Unsupported(f"{kind.__name__}: a dump of its own")
    name = source.written[id(schema)] = source.local(f"dump_{kind.__name__}_")
    slow = f"return {source.bind(schema.dump, 'dump')}(obj)"
    if isinstance(schema, ViewSchema) and kind.get_attribute is ViewSchema.get_attribute:
        # ViewSchema.get_attribute: fields in OWN from the view, the others from INNER.
        own, body = schema.OWN, [f"    if hasattr(obj, '__getitem__'): {slow}"]
        body += [f"    inner = {attribute('obj', schema.INNER)}"]
        body += [f"    if hasattr(inner, '__getitem__'): {slow}", "    out = {}"]
        body += _fields(schema, source, lambda attr: "obj" if attr in own else "inner")
    else:  # Schema.get_attribute: keys of a dict, attributes of what has no __getitem__
        body = ["    if type(obj) is dict:", "        out = {}"]
        body += ["    " + line for line in _fields(schema, source, lambda _: "obj", keyed=True)]
        body += ["        return out", f"    if hasattr(obj, '__getitem__'): {slow}"]
        body += ["    out = {}", *_fields(schema, source, lambda _: "obj")]
    source.function(name, "obj", [*body, "    return out"])
    return name


def _fields(
    schema: Schema, source: Source, source_of: Callable[[str], str], *, keyed: bool = False
) -> list[str]:
    """Lines adding each dumped field to ``out`` in order, read from ``source_of(attr)``:
    its keys if ``keyed``, else its attributes."""
    lines: list[str] = []
    for name, field in schema.dump_fields.items():
        key = repr(name if field.data_key is None else field.data_key)
        attr = name if field.attribute is None else field.attribute
        if (
            type(field).serialize is not fields.Field.serialize
            or type(field).get_value is not fields.Field.get_value
            or overrides(field, "serialize", "get_value", "_serialize")
            or "." in attr
        ):
            raise Unsupported(f"{type(schema).__name__}.{name}: read its own way")
        if not field._CHECK_ATTRIBUTE:
            own: Any = type(field)._serialize
            if not isinstance(field, fields.Constant) or own is not fields.Constant._serialize:
                raise Unsupported(f"{type(schema).__name__}.{name}: not read, not Constant")
            lines.append(f"    out[{key}] = {source.bind(field.constant)}")
            continue
        obj = source_of(attr)
        if not keyed:  # getattr with a default: a miss raises nothing (try/except would)
            lines.append(f"    v = getattr({obj}, {attr!r}, missing)")
        elif hasattr(dict, attr):  # absent, the key is looked up as an attribute of the dict
            lines.append(f"    v = getattr({obj}, {attr!r}, missing)")
            lines.append(f"    v = {obj}[{attr!r}] if {attr!r} in {obj} else v")
        else:
            lines.append(f"    v = {obj}.get({attr!r}, missing)")
        default = field.dump_default
        if default is not missing:
            call = "()" if callable(default) else ""
            lines += [
                "    if v is missing:",
                f"        v = {source.bind(default, 'default')}{call}",
            ]
        value = _value(field, "v", repr(name), "obj", source)
        lines += ["    if v is not missing:", f"        out[{key}] = {value}"]
    return lines


def _value(field: fields.Field[Any], v: str, attr: str, obj: str, source: Source) -> str:  # noqa: PLR0911 (one return per kind of field)
    """An expression equal to ``field._serialize(v, attr, obj)``."""
    own: Any = type(field)._serialize
    if overrides(field, "_serialize", "_format_num"):
        raise Unsupported(f"{field!r}: its own _serialize")
    if own is fields.Field._serialize:
        return v
    slow = f"{source.bind(field._serialize, 'serialize')}({v}, {attr}, {obj})"
    if own is fields.String._serialize:
        return f"{v} if {v} is None or type({v}) is str else {slow}"
    if (
        isinstance(field, fields.Number)
        and own is fields.Number._serialize
        and type(field)._format_num is fields.Number._format_num
        and field.num_type is int
        and not field.as_string
    ):
        return f"{v} if {v} is None or type({v}) is int else {slow}"
    if isinstance(field, fields.Mapping) and own is fields.Mapping._serialize:
        if field.mapping_type is not dict:
            raise Unsupported(f"{field!r}: a mapping other than dict")
        if field.key_field is None and field.value_field is None:
            return f"None if {v} is None else dict({v})"
        k, x = source.local("k"), source.local("x")
        keys = k if field.key_field is None else _value(field.key_field, k, "None", "None", source)
        values = (
            x if field.value_field is None else _value(field.value_field, x, "None", "None", source)
        )
        each = f"{{{keys}: {values} for {k}, {x} in {v}.items()}}"
        return f"None if {v} is None else {{}} if type({v}) is dict and not {v} else {each}"
    if isinstance(field, fields.List) and own is fields.List._serialize:
        e = source.local("e")
        return (
            f"None if {v} is None else [{_value(field.inner, e, attr, obj, source)} for {e} in {v}]"
        )
    if isinstance(field, fields.Nested) and own is fields.Nested._serialize:
        nested = field.schema
        if nested.many or field.many:
            raise Unsupported(f"{field!r}: many")
        return f"None if {v} is None else {_schema(nested, source)}({v})"
    raise Unsupported(f"{field!r}: a field the generator does not know")
