"""The storage port: a small core every adapter implements, plus optional abilities.

As in tusd's datastore, the core (``Storage``) is what any place that holds bytes can do;
each ability beyond it is its own small Protocol that an adapter implements or not, and
the broker asks ``isinstance(storage, Ability)`` rather than which adapter it has. Every
method raises ``StorageUnavailable`` (``storage.unavailable``) when storage does not answer
as it should: adapters translate their native errors at this boundary and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
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
    version_id: str | None = None
    """Storage's id of this version of the object, where the bucket keeps versions."""


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


@dataclass(frozen=True)
class Expected:
    """What a body streamed through the broker must be to be kept (``put_stream``)."""

    content_type: str
    max_size: int
    """The bucket's limit: ``upload.size_exceeds_limit`` above it."""
    size: int | None = None
    """The declared length, if any: ``upload.size_mismatch`` for another."""
    sha256: str | None = None
    """The declared SHA-256, if any: ``upload.checksum_mismatch`` for another."""

    @property
    def limit(self) -> int:
        """Bytes worth reading: one more proves the body is refused."""
        return self.max_size if self.size is None else min(self.size, self.max_size)

    def check(self, received: int, digest: str) -> None:
        """Raise the contract's error unless ``received`` bytes (counted up to one past
        ``limit``) hashing to ``digest`` are what was expected."""
        if received > self.max_size:
            raise BrokerError(
                "upload.size_exceeds_limit",
                f"The file is larger than the bucket's limit of {self.max_size} bytes.",
                details={"file": [f"Must be at most {self.max_size} bytes."]},
            )
        check_received(received, digest, size=self.size, sha256=self.sha256)


def already_stored() -> BrokerError:
    """The answer to a write to a key that holds an object: objects are written once."""
    return BrokerError(
        "upload.already_stored",
        "An object is already stored here; a signed URL writes its object once.",
    )


def check_received(
    received: int, digest: str | None, *, size: int | None, sha256: str | None, what: str = "file"
) -> None:
    """``upload.size_mismatch`` unless ``received`` is the declared ``size``, then
    ``upload.checksum_mismatch`` unless ``digest`` is the declared ``sha256`` (each when
    declared); ``what`` names the bytes in the message ("file", "body")."""
    if size is not None and received != size:
        relation = "longer" if received > size else "shorter"
        raise BrokerError(
            "upload.size_mismatch", f"The {what} is {relation} than the declared {size} bytes."
        )
    if sha256 is not None and digest != sha256:
        raise BrokerError(
            "upload.checksum_mismatch", f"The {what}'s SHA-256 differs from the declared checksum."
        )


# -- the core ---------------------------------------------------------------------------------


@runtime_checkable
class Storage(Protocol):
    """Where the bytes live. Keys reaching an adapter are already normalised (naming.py)."""

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
        ``expires_at``, any altered URL, and (write-once, where storage can enforce it) a
        PUT to a key that already holds an object (412). ``headers`` lists exactly what the
        client sends.
        Raises: StorageUnavailable when no URL can be signed (no credentials).
        """
        ...

    def presign_get(
        self,
        key: str,
        *,
        filename: str,
        content_type: str,
        attachment: bool,
        expires_at: int,
        etag: str | None = None,
        version_id: str | None = None,
    ) -> str:
        """A URL that serves the object until ``expires_at`` with this type and disposition.

        With ``version_id`` it serves that version only (S3); with ``etag`` only an object
        with that ETag (the embedded store): each adapter pins what it can enforce, so the
        URL serves the bytes that were validated or nothing.
        Raises: StorageUnavailable when no URL can be signed.
        """
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """What is stored under ``key``, or None when nothing (complete) is there.

        Raises: StorageUnavailable.
        """
        ...

    def iter_bytes(self, key: str, *, version_id: str | None = None) -> Iterator[bytes]:
        """The object's bytes in chunks of at most HASH_CHUNK; with ``version_id``, that
        version's (where storage keeps versions; others ignore it).

        Raises: FileNotFoundError when nothing is stored under ``key`` (also when it goes
        away before the first chunk); StorageUnavailable.
        """
        ...

    def delete(self, key: str) -> None:
        """Remove the object; deleting what is not there is not an error.

        Raises: StorageUnavailable.
        """
        ...

    def ping(self) -> None:
        """Return when storage answers. Raises: StorageUnavailable otherwise."""
        ...


# -- optional abilities -----------------------------------------------------------------------


@runtime_checkable
class MultipartStorage(Protocol):
    """Storage that takes one object in parts, each sent to its own signed URL."""

    def start_multipart(self, key: str, *, content_type: str) -> str:
        """Open a multipart upload of an object of ``content_type``; return its upload id.

        Raises: StorageUnavailable (nothing is left open then).
        """
        ...

    def presign_part(
        self, key: str, upload_id: str, *, part_number: int, size: int, expires_at: int
    ) -> UploadInstructions:
        """Instructions for one part: storage refuses a body of another length, a request
        after ``expires_at`` and any altered URL. Its answer carries the part's ``ETag``.

        Raises: StorageUnavailable when no URL can be signed.
        """
        ...

    def list_parts(self, key: str, upload_id: str) -> list[StoredPart] | None:
        """The parts received so far, by part number; None when the upload is not open
        (completed, aborted or never started).

        Raises: StorageUnavailable.
        """
        ...

    def finish_multipart(self, key: str, upload_id: str, parts: Sequence[StoredPart]) -> ObjectInfo:
        """Join ``parts`` (as ``list_parts`` reported them, in order) into the object and
        close the upload; the object becomes visible whole or not at all, and never over an
        object already stored at ``key`` (write-once, where storage can enforce it). Returns it.

        Raises: ``upload.not_received`` when the upload is not open; ``upload.part_missing``
        when a part is not held as listed; ``upload.already_stored`` when an object is
        there already and the upload is still open; StorageUnavailable.
        """
        ...

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Close the upload and free its parts; an upload that is not open is not an error.

        Raises: StorageUnavailable.
        """
        ...


@runtime_checkable
class StreamingStorage(Protocol):
    """Storage that takes a body streamed through the broker (a proxied form upload)."""

    def put_stream(self, key: str, chunks: Iterable[bytes], expected: Expected) -> ObjectInfo:
        """Store the bytes of ``chunks`` as the object, streaming in bounded memory; return
        what was stored (its ``sha256`` always computed).

        Visible only if ``expected.check`` passes: at most ``max_size`` bytes (having read at
        most one chunk past ``expected.limit``), exactly ``size`` and this SHA-256 when given;
        never over an object already stored at ``key`` (``upload.already_stored``).
        Raises StorageUnavailable when storage fails; an error of ``chunks`` itself (a
        client gone) passes through as it is. On any error nothing is left visible.
        """
        ...


@runtime_checkable
class InventoryStorage(Protocol):
    """Storage that can list what it holds, for the reaper."""

    def iter_uploads(self) -> Iterator[OpenUpload]:
        """Every multipart upload storage holds open. Raises: StorageUnavailable."""
        ...

    def iter_objects(self) -> Iterator[StoredObject]:
        """Every object storage holds. Raises: StorageUnavailable."""
        ...


@runtime_checkable
class ScratchStorage(Protocol):
    """Storage that keeps leftovers of its own (temp files, unreferenced data) to sweep."""

    def sweep_scratch(self, older_than: float) -> int:
        """Remove leftovers last touched before ``older_than`` (Unix time), never anything
        in use; return how many were removed. Raises: StorageUnavailable."""
        ...


# -- self-served storage: the broker answers its signed URLs itself --------------------------


@dataclass(frozen=True)
class PutGrant:
    """What a verified upload token allows: one body of this size, type and checksum,
    or (with ``upload_id``) one part of that size of a multipart upload."""

    key: str
    size: int
    content_type: str | None
    sha256: str | None
    expires_at: int
    upload_id: str | None = None
    part_number: int | None = None


@dataclass(frozen=True)
class GetGrant:
    """What a verified download token allows: reading one key with this presentation."""

    key: str
    content_type: str
    filename: str
    attachment: bool
    expires_at: int
    etag: str | None = None
    """Serve only an object with this ETag (the one validated), when given."""


@dataclass(frozen=True)
class LocatedBlob:
    """An object found for a download: the data file and what storage says of it."""

    path: Path
    info: ObjectInfo
    stored_at: float


@runtime_checkable
class SelfServedStorage(Protocol):
    """Storage whose signed URLs the broker serves itself, at ``/v1/blobs/{token}``.

    The HTTP layer checks the request's headers against the grant; storage checks the body.
    """

    def grant_put(self, token: str) -> PutGrant:
        """What an upload token allows.

        Raises: ``blob.bad_signature`` (403) if it is not one of this storage's upload
        tokens or was altered; ``blob.expired`` (403) once its expiry has passed.
        """
        ...

    def grant_get(self, token: str) -> GetGrant:
        """What a download token allows. Raises: as ``grant_put``, for download tokens."""
        ...

    def receive(self, grant: PutGrant, body: Readable) -> ObjectInfo:
        """Store ``body`` if and only if it is exactly what ``grant`` declared; return what
        was stored (a part's ETag names that copy of the part).

        Streams in bounded memory and stops reading one byte past the declared size. The
        object is published atomically only when every check holds and the key holds no
        object yet (write-once: of two racing PUTs exactly one wins); a part replaces any
        earlier copy of it. Otherwise nothing new is visible.
        Raises: ``upload.already_stored`` (412) when the key holds an object already;
        ``upload.size_mismatch`` for a body of another length;
        ``upload.checksum_mismatch`` for another SHA-256 than the declared one;
        ``blob.not_found`` for a part of an upload no longer open; StorageUnavailable.
        An error of ``body`` itself (a client gone) passes through as it is.
        """
        ...

    def locate(self, grant: GetGrant) -> LocatedBlob | None:
        """The data file to serve for ``grant``, or None when nothing is stored (or, for a
        grant pinned to an ETag, nothing with that ETag).

        Raises: StorageUnavailable.
        """
        ...
