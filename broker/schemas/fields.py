"""The building blocks of the schemas: validators, field factories and the two base
schemas (strict requests, answers that wrap a record)."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
)

from ..config import NAME_RE
from ..naming import MAX_DECLARED_KEY, MIME_PATTERN, is_valid_mime_type, normalise_mime_type

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
KEY_PREFIX_PATTERN = (
    r"^(?:(?:[^/\\\x00-\x1f\x7f.][^/\\\x00-\x1f\x7f]*|\.[^/\\\x00-\x1f\x7f.]"
    r"[^/\\\x00-\x1f\x7f]*|\.\.[^/\\\x00-\x1f\x7f]+)/)*[^/\\\x00-\x1f\x7f]*$"
)
"""The start of a valid key: whole segments each followed by '/', then part of one (any
key-prefix ``p`` for which ``p + "x"`` is a valid key)."""
MIME_GLOB_PATTERN = (
    r"^(?:\*|[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126})/(?:\*|[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126})$"
)
"""A MIME type pattern as buckets' ``allowed_mime_types`` take them: ``image/*``, ``*/*``."""
ORIGIN_PATTERN = r"^https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
"""A web origin as browsers send it: scheme, host and optional port, no path."""


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


def _metadata_field(**kwargs: Any) -> fields.Dict:
    """A file's metadata: up to 32 text entries (keys 1-64 plain characters, values up to
    512 characters)."""
    return fields.Dict(
        keys=_text(
            validate.Length(min=1, max=MAX_METADATA_KEY),
            _no_control_chars,
            metadata={"pattern": _PLAIN_TEXT},
        ),
        values=_text(validate.Length(max=MAX_METADATA_VALUE)),
        validate=_metadata,
        metadata={"maxProperties": MAX_METADATA_ENTRIES, **kwargs.pop("metadata", {})},
        **kwargs,
    )


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
