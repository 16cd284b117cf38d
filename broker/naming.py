"""Object keys, file names and MIME types: normalised and checked before they touch storage."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from urllib.parse import quote

MAX_KEY_BYTES = 1024  # the S3 limit, so a key valid here is valid everywhere
FILE_ID_LENGTH = len("file_") + 26
"""A file id: its prefix and a ULID (ids.py); it is part of every new file's storage key."""
MAX_DECLARED_KEY = MAX_KEY_BYTES - 2 * (63 + 1) - (FILE_ID_LENGTH + 1)
"""Characters of a declared key: S3's limit less the longest ``{tenant}/{bucket}/{file id}/``
(models.object_namespace), so any ASCII key this long fits (the storage key's UTF-8 bytes
are checked at declare too)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MIME_PATTERN = (
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
    r"(?:[ \t]*;[ \t]*[A-Za-z0-9!#$&^_.+-]+=(?:\"[ !#-~]*\"|[A-Za-z0-9!#$&^_.+-]+))*$"
)
"""``type/subtype[; param=value]``: one pattern for the check here and the OpenAPI document
(ECMA-262 and Python alike: ASCII classes, no case-folding flag, spaces and tabs only).
Quoted parameter values are printable ASCII: the type is sent back in a Content-Type
header, which HTTP/1.1 servers encode as ISO-8859-1 at most."""
_MIME_RE = re.compile(MIME_PATTERN)
_ACTIVE_TYPES = (
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
    "text/javascript",
    "application/javascript",
    "application/ecmascript",
    "text/ecmascript",
    "application/x-javascript",
)


class InvalidKey(ValueError):
    """A key that could escape its namespace or that storage would mangle."""


def normalise_key(key: str) -> str:
    """Return the key in NFC form, or raise InvalidKey with the reason.

    Refused: empty, over 1024 UTF-8 bytes, absolute (leading ``/``), a backslash, NUL or
    other control characters, and any empty, ``.`` or ``..`` segment — so no key can climb
    out of its tenant's namespace on a file system or through a proxy that folds paths.
    """
    key = unicodedata.normalize("NFC", key)
    if not key:
        raise InvalidKey("the key is empty")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKey(f"the key is longer than {MAX_KEY_BYTES} bytes")
    if _CONTROL.search(key):
        raise InvalidKey("the key contains a control character")
    if "\\" in key:
        raise InvalidKey("the key contains a backslash")
    if key.startswith("/"):
        raise InvalidKey("the key is absolute (starts with '/')")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey("the key has an empty, '.' or '..' segment")
    return key


def is_valid_mime_type(value: str) -> bool:
    """Whether ``value`` is a syntactically valid ``type/subtype[; param=value]``."""
    return bool(_MIME_RE.fullmatch(value))


def mime_type_matches(patterns: Iterable[str], mime_type: str) -> bool:
    """Whether a MIME type (parameters ignored) matches one of ``patterns`` (``image/*``
    style). A pattern given as ``mime_type`` matches only patterns at least as wide."""
    base = mime_type.split(";", 1)[0].strip().lower()
    kind, _, sub = base.partition("/")
    for pattern in patterns:
        p_kind, _, p_sub = pattern.partition("/")
        if p_kind in ("*", kind) and p_sub in ("*", sub):
            return True
    return False


def normalise_mime_type(value: str) -> str:
    """Lower-case the type and subtype and tidy parameter spacing, keeping parameter values."""
    base, sep, params = value.partition(";")
    parts = [base.strip().lower()]
    if sep:
        parts += [p.strip() for p in params.split(";") if p.strip()]
    return "; ".join(parts)


def is_active_content(mime_type: str) -> bool:
    """Types a browser would execute or render as a page: always served as attachments."""
    base = mime_type.split(";", 1)[0].strip().lower()
    return base in _ACTIVE_TYPES or base.endswith("+xml")


def display_name(name: str) -> str:
    """The last path component of a declared name, for Content-Disposition."""
    return re.split(r"[\\/]", name)[-1] or "download"


def key_from_name(prefix: str, name: str, *, max_bytes: int = MAX_KEY_BYTES) -> str:
    """A generated, collision-free key that still reads well: ``<unique>/<file name>``
    (just ``<unique>`` when that is not a valid key or is over ``max_bytes`` UTF-8 bytes)."""
    try:
        key = normalise_key(f"{prefix}/{display_name(name)}")
    except InvalidKey:
        return prefix
    return key if len(key.encode("utf-8")) <= max_bytes else prefix


def content_disposition(filename: str, *, attachment: bool) -> str:
    """An RFC 6266 Content-Disposition value: an ASCII ``filename`` and, when the name is
    not ASCII, the exact name as ``filename*`` (RFC 5987)."""
    kind = "attachment" if attachment else "inline"
    fallback = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    fallback = re.sub(r'[\x00-\x1f\x7f"\\;]', "_", fallback) or "download"
    value = f'{kind}; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='!#$&+-.^_`|~')}"
    return value
