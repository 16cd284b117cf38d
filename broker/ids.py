"""Sortable, prefixed identifiers (ULIDs) and the opaque cursors built from them."""

from __future__ import annotations

import base64
import binascii
import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80


class _Monotonic:
    """ULID generator that stays strictly increasing within a process, even within 1 ms."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_random = 0

    def next(self) -> str:
        with self._lock:
            now_ms = time.time_ns() // 1_000_000
            if now_ms <= self._last_ms:
                # Same millisecond (or the wall clock stepped back): count up so order holds.
                now_ms = self._last_ms
                random = self._last_random + 1
            else:
                random = int.from_bytes(os.urandom(10), "big")
            self._last_ms, self._last_random = now_ms, random
        value = (now_ms << _RANDOM_BITS) | (random & ((1 << _RANDOM_BITS) - 1))
        return "".join(_ALPHABET[(value >> shift) & 31] for shift in range(125, -1, -5))


_generator = _Monotonic()


def new_id(prefix: str) -> str:
    """A new identifier such as ``file_01JD7…``; later calls sort after earlier ones."""
    return f"{prefix}_{_generator.next()}"


def encode_cursor(last_id: str) -> str:
    """An opaque pagination cursor pointing just after ``last_id``."""
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


CURSOR_PATTERN = r"^(?:[A-Za-z0-9_-]{4}){0,32}(?:[A-Za-z0-9_-]{2,3})?$"
"""Unpadded URL-safe base64 of at most 99 bytes (ECMA-262 and Python alike)."""


def cursor_position(cursor: str) -> str:
    """Where a listing resumes: the id in a cursor this API made, else the cursor's
    letters, digits and '_' (any well-formed cursor is a position in the id order; a
    malformed one was refused by the schema's pattern)."""
    found = decode_cursor(cursor)
    if found is not None:
        return found
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = cursor.encode()
    return "".join(c for c in raw.decode("ascii", "ignore") if c.isalnum() or c == "_")


def decode_cursor(cursor: str) -> str | None:
    """The id inside a cursor, or None when the cursor was not made by encode_cursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    prefix, _, body = raw.partition("_")
    if not prefix or len(body) != 26 or any(c not in _ALPHABET for c in body):
        return None
    return raw
