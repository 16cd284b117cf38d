"""The storage port: what every adapter (embedded blob store, S3) promises the service."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..errors import BrokerError
from ..models import StoredPart, UploadInstructions

HASH_CHUNK = 1024 * 1024
"""Bytes read at a time when an adapter or the service streams an object (bounded memory)."""


class Readable(Protocol):
    """What a body to store must offer: ``read(n)`` answers at most ``n`` bytes, and
    ``b""`` only at the end (a file, a WSGI input stream)."""

    def read(self, size: int = -1, /) -> bytes:
        """At most ``size`` bytes; ``b""`` at the end."""
        ...


@dataclass(frozen=True)
class ObjectInfo:
    """What storage reports about a stored object."""

    key: str
    size: int
    content_type: str
    etag: str
    sha256: str | None
    """Hex SHA-256 that storage itself computed or verified, or None when it cannot tell."""


@dataclass(frozen=True)
class OpenUpload:
    """A multipart upload storage holds open (for the reaper)."""

    key: str
    upload_id: str
    started_at: float


@dataclass(frozen=True)
class StoredObject:
    """An object storage holds (for the reaper)."""

    key: str
    size: int
    modified_at: float


def check_stream_size(received: int, *, max_size: int, size: int | None) -> None:
    """Raise the contract's error when a streamed body of ``received`` bytes (counted up to
    one past the limit) broke ``max_size`` or differs from the declared ``size``."""
    if received > max_size:
        raise BrokerError(
            "upload.size_exceeds_limit",
            f"The file is larger than the bucket's limit of {max_size} bytes.",
            details={"file": [f"Must be at most {max_size} bytes."]},
        )
    if size is not None and received != size:
        relation = "longer" if received > size else "shorter"
        raise BrokerError(
            "upload.size_mismatch", f"The file is {relation} than the declared {size} bytes."
        )


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

    # -- multipart uploads --------------------------------------------------------------------

    def start_multipart(self, key: str, *, content_type: str) -> str:
        """Open a multipart upload of an object of ``content_type``; return its upload id."""
        ...

    def presign_part(
        self, key: str, upload_id: str, *, part_number: int, size: int, expires_at: int
    ) -> UploadInstructions:
        """Instructions for one part: storage refuses a body of another length, a request
        after ``expires_at`` and any altered URL. Its answer carries the part's ``ETag``."""
        ...

    def list_parts(self, key: str, upload_id: str) -> list[StoredPart] | None:
        """The parts received so far, by part number; None when the upload is not open
        (completed, aborted or never started)."""
        ...

    def finish_multipart(self, key: str, upload_id: str, parts: Sequence[StoredPart]) -> ObjectInfo:
        """Join ``parts`` (as ``list_parts`` reported them, in order) into the object and
        close the upload; the object becomes visible whole or not at all."""
        ...

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Close the upload and free its parts; an upload that is not open is not an error."""
        ...

    # -- proxied uploads ----------------------------------------------------------------------

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str,
        max_size: int,
        size: int | None,
        sha256: str | None,
    ) -> ObjectInfo:
        """Store the bytes of ``chunks`` as the object, streaming in bounded memory.

        Visible only if all holds: at most ``max_size`` bytes (else ``upload.size_exceeds_limit``),
        exactly ``size`` when given (else ``upload.size_mismatch``), this SHA-256 when given
        (else ``upload.checksum_mismatch``). On any error nothing is left visible.
        """
        ...

    # -- housekeeping (the reaper) ------------------------------------------------------------

    def iter_uploads(self) -> Iterator[OpenUpload]:
        """Every multipart upload storage holds open."""
        ...

    def iter_objects(self) -> Iterator[StoredObject]:
        """Every object storage holds."""
        ...

    def sweep_scratch(self, older_than: float) -> int:
        """Remove the adapter's own leftovers (temp files, unreferenced data) last touched
        before ``older_than`` (Unix time); return how many were removed."""
        ...


# Capability names the use cases ask for (placeholders until storage is split by ability).
MultipartStorage = Storage
StreamingStorage = Storage
