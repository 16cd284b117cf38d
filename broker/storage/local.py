"""The embedded blob store: local disk plus URLs the broker signs for itself (itsdangerous).

Layout under ``root``::

    tmp/<uuid>.part                       bytes of a PUT in progress (never visible)
    objects/<h2>/<h>.<uuid>.blob          immutable data of one successful PUT
    objects/<h2>/<h>.json                 the pointer: key, size, type, sha256, blob name

``h`` is the SHA-256 of the storage key, so no key can reach outside ``objects/`` whatever
it contains. An object is visible exactly when its pointer exists; a pointer is replaced
by ``rename``, which is atomic, and only after the data it names was fsynced. A crash or
a rejected body therefore never leaves a partial or wrong object in sight; what it can
leave (a ``.part`` file, an unreferenced ``.blob``) is invisible and swept later.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..config import Clock
from ..errors import BrokerError
from ..models import UploadInstructions
from ..naming import normalise_mime_type
from ..tokens import ExpiringTokens
from .base import HASH_CHUNK, ObjectInfo

PUT_SALT = "broker.blob.put"
GET_SALT = "broker.blob.get"


@dataclass(frozen=True)
class PutGrant:
    """What a verified upload token allows: one body of this size, type and checksum."""

    key: str
    size: int
    content_type: str
    sha256: str | None
    expires_at: int


@dataclass(frozen=True)
class GetGrant:
    """What a verified download token allows: reading one key with this presentation."""

    key: str
    content_type: str
    filename: str
    attachment: bool
    expires_at: int


@dataclass(frozen=True)
class LocatedBlob:
    """An object found for a download: the data file and what the pointer says of it."""

    path: Path
    info: ObjectInfo
    stored_at: float


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise pointer swaps within one shard directory (across threads and processes)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class LocalStorage:
    """Storage adapter for a local directory; also serves the ``/v1/blobs`` endpoints."""

    name = "local"
    serves_nosniff = True

    def __init__(
        self, root: Path, secret_key: str, base_url: Callable[[], str], clock: Clock
    ) -> None:
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._base_url = base_url
        self._clock = clock
        self._put = ExpiringTokens(secret_key, PUT_SALT, clock)
        self._get = ExpiringTokens(secret_key, GET_SALT, clock)

    # -- the storage Protocol -----------------------------------------------------------------

    def presign_put(
        self, key: str, *, size: int, content_type: str, sha256: str | None, expires_at: int
    ) -> UploadInstructions:
        """A PUT URL whose token binds key, exact size, type, optional SHA-256 and expiry."""
        token = self._put.dumps(
            {"k": key, "s": size, "t": content_type, "h": sha256, "e": expires_at}
        )
        return UploadInstructions(
            method="PUT",
            url=f"{self._base_url()}/v1/blobs/{token}",
            headers={"Content-Type": content_type, "Content-Length": str(size)},
            expires_at=expires_at,
        )

    def presign_get(
        self, key: str, *, filename: str, content_type: str, attachment: bool, expires_at: int
    ) -> str:
        """A GET URL whose token binds the key, presentation (type, name) and expiry."""
        token = self._get.dumps(
            {"k": key, "t": content_type, "n": filename, "a": int(attachment), "e": expires_at}
        )
        return f"{self._base_url()}/v1/blobs/{token}"

    def head(self, key: str) -> ObjectInfo | None:
        """The object's pointer, or None when no PUT of this key has succeeded."""
        pointer = self._read_pointer(self._pointer_path(key))
        return None if pointer is None else self._info(pointer)

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        """Stream the stored bytes in HASH_CHUNK pieces."""
        pointer_path = self._pointer_path(key)
        pointer = self._read_pointer(pointer_path)
        if pointer is None:
            raise FileNotFoundError(key)
        with open(pointer_path.parent / pointer["blob"], "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                yield chunk

    def delete(self, key: str) -> None:
        """Remove pointer then data; a missing object is not an error."""
        pointer_path = self._pointer_path(key)
        if not pointer_path.parent.exists():
            return
        with _locked(pointer_path.parent):
            pointer = self._read_pointer(pointer_path)
            if pointer is None:
                return
            pointer_path.unlink(missing_ok=True)
            (pointer_path.parent / pointer["blob"]).unlink(missing_ok=True)
            _fsync_dir(pointer_path.parent)

    def ping(self) -> None:
        """Storage answers when both directories exist and accept writes."""
        for directory in (self.objects, self.tmp):
            if not os.access(directory, os.W_OK | os.X_OK):
                raise BrokerError("storage.unavailable", f"{directory.name}/ is not writable")

    # -- the blob endpoints -------------------------------------------------------------------

    def grant_put(self, token: str) -> PutGrant:
        """Verify an upload token; 403 ``blob.bad_signature`` or ``blob.expired`` otherwise."""
        data = self._put.loads(token)
        return PutGrant(
            key=data["k"],
            size=data["s"],
            content_type=data["t"],
            sha256=data["h"],
            expires_at=data["e"],
        )

    def grant_get(self, token: str) -> GetGrant:
        """Verify a download token; 403 ``blob.bad_signature`` or ``blob.expired`` otherwise."""
        data = self._get.loads(token)
        return GetGrant(
            key=data["k"],
            content_type=data["t"],
            filename=data["n"],
            attachment=bool(data["a"]),
            expires_at=data["e"],
        )

    def receive(
        self,
        grant: PutGrant,
        *,
        content_length: int | None,
        content_type: str | None,
        body: IO[bytes],
    ) -> ObjectInfo:
        """Store a PUT body if and only if it is exactly what the grant declared.

        Header checks come first so a lie costs no disk. The body is streamed in bounded
        chunks to a temporary file; reading stops one byte past the declared size, so an
        oversized body cannot fill the disk. Only a body of the right length and checksum
        is fsynced and renamed into place.
        """
        if content_type is None or normalise_mime_type(content_type) != grant.content_type:
            raise BrokerError(
                "upload.type_mismatch",
                f"Content-Type must be {grant.content_type!r}, as declared.",
            )
        if content_length is not None and content_length != grant.size:
            raise BrokerError(
                "upload.size_mismatch",
                f"Content-Length is {content_length}; the declared size is {grant.size}.",
            )
        temp = self.tmp / f"{uuid.uuid4().hex}.part"
        try:
            digest, received = self._spool(body, temp, limit=grant.size)
            if received != grant.size:
                relation = "longer" if received > grant.size else "shorter"
                raise BrokerError(
                    "upload.size_mismatch",
                    f"The body is {relation} than the declared {grant.size} bytes.",
                )
            if grant.sha256 is not None and digest != grant.sha256:
                raise BrokerError(
                    "upload.checksum_mismatch",
                    "The body's SHA-256 differs from the declared checksum.",
                )
            return self._publish(
                grant.key, temp, size=received, content_type=grant.content_type, sha256=digest
            )
        finally:
            temp.unlink(missing_ok=True)

    def locate(self, grant: GetGrant) -> LocatedBlob | None:
        """The data file and pointer for a download, or None when nothing is stored."""
        pointer_path = self._pointer_path(grant.key)
        pointer = self._read_pointer(pointer_path)
        if pointer is None:
            return None
        return LocatedBlob(
            path=pointer_path.parent / pointer["blob"],
            info=self._info(pointer),
            stored_at=pointer["stored_at"],
        )

    # -- internals ----------------------------------------------------------------------------

    def _pointer_path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self.objects / digest[:2] / f"{digest}.json"

    @staticmethod
    def _read_pointer(path: Path) -> dict[str, Any] | None:
        try:
            with open(path, encoding="utf-8") as handle:
                pointer: dict[str, Any] = json.load(handle)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BrokerError("storage.unavailable", "The blob store cannot be read.") from exc
        return pointer

    @staticmethod
    def _info(pointer: dict[str, Any]) -> ObjectInfo:
        return ObjectInfo(
            key=pointer["key"],
            size=pointer["size"],
            content_type=pointer["content_type"],
            etag=pointer["sha256"][:32],
            sha256=pointer["sha256"],
        )

    def _spool(self, body: IO[bytes], temp: Path, *, limit: int) -> tuple[str, int]:
        """Copy at most ``limit + 1`` bytes to ``temp``; return (hex SHA-256, bytes read)."""
        hasher = hashlib.sha256()
        received = 0
        try:
            with open(temp, "xb") as out:
                while True:
                    chunk = body.read(min(HASH_CHUNK, limit + 1 - received))
                    if not chunk:
                        break
                    received += len(chunk)
                    if received > limit:
                        break  # one byte too many is proof enough; stop reading
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise BrokerError("storage.unavailable", "The blob store is out of space.") from exc
            raise
        return hasher.hexdigest(), received

    def _publish(
        self, key: str, temp: Path, *, size: int, content_type: str, sha256: str
    ) -> ObjectInfo:
        """Move a verified temp file into place and swap the pointer to it atomically."""
        pointer_path = self._pointer_path(key)
        shard = pointer_path.parent
        shard.mkdir(exist_ok=True)
        blob_name = f"{pointer_path.stem}.{uuid.uuid4().hex}.blob"
        pointer = {
            "key": key,
            "size": size,
            "content_type": content_type,
            "sha256": sha256,
            "blob": blob_name,
            "stored_at": self._clock(),
        }
        with _locked(shard):
            os.rename(temp, shard / blob_name)
            previous = self._read_pointer(pointer_path)
            staged = shard / f".{blob_name}.json"
            with open(staged, "x", encoding="utf-8") as out:
                json.dump(pointer, out)
                out.flush()
                os.fsync(out.fileno())
            os.rename(staged, pointer_path)
            _fsync_dir(shard)
            if previous is not None and previous["blob"] != blob_name:
                (shard / previous["blob"]).unlink(missing_ok=True)
        return self._info(pointer)
