"""The storage port: what every adapter (embedded blob store, S3) promises the service."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..models import UploadInstructions

HASH_CHUNK = 1024 * 1024
"""Bytes read at a time when an adapter or the service streams an object (bounded memory)."""


@dataclass(frozen=True)
class ObjectInfo:
    """What storage reports about a stored object."""

    key: str
    size: int
    content_type: str
    etag: str
    sha256: str | None
    """Hex SHA-256 that storage itself computed or verified, or None when it cannot tell."""


@runtime_checkable
class Storage(Protocol):
    """Where the bytes live. Keys reaching an adapter are already normalised (naming.py).

    Every method raises ``BrokerError("storage.unavailable")`` when storage cannot be
    reached; adapters translate their native errors at this boundary and nowhere else.
    """

    name: str
    serves_nosniff: bool
    """Whether this storage's download answers carry ``X-Content-Type-Options: nosniff``.
    Where not (S3), the broker streams active content itself rather than redirect to it."""

    def presign_put(
        self, key: str, *, size: int, content_type: str, sha256: str | None, expires_at: int
    ) -> UploadInstructions:
        """Instructions for one PUT of exactly ``size`` bytes of ``content_type``.

        Storage itself must refuse a body of another length or type, a body whose SHA-256
        differs from ``sha256`` (when given, or let completion catch it), a request after
        ``expires_at`` and any altered URL. ``headers`` lists exactly what the client sends.
        """
        ...

    def presign_get(
        self, key: str, *, filename: str, content_type: str, attachment: bool, expires_at: int
    ) -> str:
        """A URL that serves the object until ``expires_at`` with this type and disposition."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """What is stored under ``key``, or None when nothing (complete) is there."""
        ...

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        """The object's bytes in chunks of at most HASH_CHUNK; FileNotFoundError if absent."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; deleting what is not there is not an error."""
        ...

    def ping(self) -> None:
        """Return when storage answers; raise BrokerError(storage.unavailable) otherwise."""
        ...
