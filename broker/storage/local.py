"""The embedded blob store: local disk plus URLs the broker signs for itself (itsdangerous).

Layout under ``root``::

    tmp/<uuid>.part                       bytes of a PUT in progress (never visible)
    objects/<h2>/<h>.<uuid>.blob          immutable data of one successful PUT
    objects/<h2>/<h>.json                 the pointer: key, size, type, etag, sha256, blob name
    uploads/<upload id>/upload.json       an open multipart upload: key, type, start time
    uploads/<upload id>/<n>.<etag>.part   one received part (n: five digits; etag: its id)

``h`` is the SHA-256 of the storage key, so no key can reach outside ``objects/`` whatever
it contains. An object is visible exactly when its pointer exists; a pointer is replaced
by ``rename``, which is atomic, and only after the data it names was fsynced. A crash or
a rejected body therefore never leaves a partial or wrong object in sight; what it can
leave (a ``.part`` file, an unreferenced ``.blob``) is invisible and swept later.

A multipart upload keeps each verified part as its own file; completing it streams the
parts into one temporary file (hashing as it goes), then publishes that like a PUT.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Clock
from ..errors import BrokerError
from ..models import StoredPart, UploadInstructions
from ..naming import normalise_mime_type
from ..tokens import ExpiringTokens
from .base import (
    HASH_CHUNK,
    ObjectInfo,
    OpenUpload,
    Readable,
    StoredObject,
    check_stream_size,
)

PUT_SALT = "broker.blob.put"
GET_SALT = "broker.blob.get"


_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
_PART_FILE = re.compile(r"^(\d{5})\.([0-9a-f]{32})\.part$")
_UPLOAD_META = "upload.json"


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


def _scan(directory: Path) -> list[os.DirEntry[str]]:
    """The entries of a directory (none when it is gone); storage.unavailable if unreadable."""
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise BrokerError("storage.unavailable", "The blob store cannot be read.") from exc


def _older(entry: os.DirEntry[str], than: float) -> bool:
    """Whether an entry was last modified before ``than`` (False once it is gone)."""
    try:
        return entry.stat(follow_symlinks=False).st_mtime < than
    except FileNotFoundError:
        return False


def _unlink(path: Path) -> int:
    """Remove a file; 1 if this call removed it, 0 if it was gone already."""
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    return 1


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
        self.uploads = root / "uploads"
        for directory in (self.objects, self.tmp, self.uploads):
            directory.mkdir(parents=True, exist_ok=True)
        self._base_url = base_url
        self._clock = clock
        self._put = ExpiringTokens(secret_key, PUT_SALT, clock)
        self._get = ExpiringTokens(secret_key, GET_SALT, clock)

    # -- the storage Protocol -----------------------------------------------------------------

    def presign_put(
        self, key: str, *, size: int, content_type: str, sha256: str | None, expires_at: int
    ) -> UploadInstructions:
        """A PUT URL whose token binds key, exact size, type, optional SHA-256 and expiry."""
        return self._signed_put(
            {"k": key, "s": size, "t": content_type, "h": sha256, "e": expires_at},
            headers={"Content-Type": content_type, "Content-Length": str(size)},
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
        for directory in (self.objects, self.tmp, self.uploads):
            if not os.access(directory, os.W_OK | os.X_OK):
                raise BrokerError("storage.unavailable", f"{directory.name}/ is not writable")

    # -- multipart uploads --------------------------------------------------------------------

    def start_multipart(self, key: str, *, content_type: str) -> str:
        """Open an upload: a directory named by a random id, holding the key and type."""
        upload_id = uuid.uuid4().hex
        directory = self.uploads / upload_id
        try:
            directory.mkdir()
            staged = directory / f".{_UPLOAD_META}"
            with open(staged, "x", encoding="utf-8") as out:
                meta = {"key": key, "content_type": content_type, "started_at": self._clock()}
                json.dump(meta, out)
                out.flush()
                os.fsync(out.fileno())
            os.rename(staged, directory / _UPLOAD_META)
            _fsync_dir(directory)
            _fsync_dir(self.uploads)
        except OSError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise BrokerError("storage.unavailable", "The blob store cannot be written.") from exc
        return upload_id

    def presign_part(
        self, key: str, upload_id: str, *, part_number: int, size: int, expires_at: int
    ) -> UploadInstructions:
        """A PUT URL whose token binds key, upload, part number, exact size and expiry."""
        return self._signed_put(
            {"k": key, "u": upload_id, "p": part_number, "s": size, "e": expires_at},
            headers={"Content-Length": str(size)},
        )

    def list_parts(self, key: str, upload_id: str) -> list[StoredPart] | None:
        """The part files of an open upload, by number (None when it is not open)."""
        directory = self._upload_dir(key, upload_id)
        if directory is None:
            return None
        with _locked(directory):
            return self._parts(directory)

    def finish_multipart(self, key: str, upload_id: str, parts: Sequence[StoredPart]) -> ObjectInfo:
        """Stream the parts into one temp file (hashing), publish it, close the upload."""
        directory = self._upload_dir(key, upload_id)
        if directory is None:
            raise BrokerError("upload.not_received", "The multipart upload is not open.")
        temp = self.tmp / f"{uuid.uuid4().hex}.part"
        try:
            with _locked(directory):
                meta = self._read_pointer(directory / _UPLOAD_META)
                if meta is None:  # aborted or finished while we waited for the lock
                    raise BrokerError("upload.not_received", "The multipart upload is not open.")
                hasher = hashlib.sha256()
                size = 0
                with open(temp, "xb") as out:
                    for part in parts:
                        name = f"{part.part_number:05d}.{part.etag}.part"
                        try:
                            source = open(directory / name, "rb")  # noqa: SIM115
                        except FileNotFoundError:
                            raise BrokerError(
                                "upload.part_missing",
                                f"Part {part.part_number} with ETag {part.etag} is not stored.",
                            ) from None
                        with source:
                            while chunk := source.read(HASH_CHUNK):
                                hasher.update(chunk)
                                out.write(chunk)
                                size += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                digest = hasher.hexdigest()
                info = self._publish(
                    key, temp, size=size, content_type=meta["content_type"], sha256=digest
                )
                shutil.rmtree(directory, ignore_errors=True)
                return info
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise BrokerError("storage.unavailable", "The blob store is out of space.") from exc
            raise BrokerError("storage.unavailable", "The blob store cannot be written.") from exc
        finally:
            temp.unlink(missing_ok=True)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Remove the upload's directory and every part in it."""
        directory = self._upload_dir(key, upload_id)
        if directory is None:
            return
        with _locked(directory):
            shutil.rmtree(directory, ignore_errors=True)

    def _upload_dir(self, key: str, upload_id: str) -> Path | None:
        """The directory of an open upload of ``key``, or None."""
        if not _UPLOAD_ID.match(upload_id):
            return None
        directory = self.uploads / upload_id
        meta = self._read_pointer(directory / _UPLOAD_META)
        if meta is None or meta.get("key") != key:
            return None
        return directory

    @staticmethod
    def _parts(directory: Path) -> list[StoredPart]:
        found: dict[int, StoredPart] = {}
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return []
        for entry in entries:
            match = _PART_FILE.match(entry.name)
            if match is None:
                continue
            number = int(match.group(1))
            try:
                size = entry.stat().st_size
            except FileNotFoundError:
                continue
            found[number] = StoredPart(part_number=number, size=size, etag=match.group(2))
        return [found[n] for n in sorted(found)]

    def _store_part(self, grant: PutGrant, temp: Path, digest: str | None) -> ObjectInfo:
        """Move a verified part into its open upload, replacing an earlier copy."""
        assert grant.upload_id is not None
        assert grant.part_number is not None
        directory = self._upload_dir(grant.key, grant.upload_id)
        if directory is None:
            raise BrokerError("blob.not_found", "The multipart upload is no longer open.")
        etag = digest[:32] if digest else uuid.uuid4().hex  # names this copy of the part
        prefix = f"{grant.part_number:05d}."
        with _locked(directory):
            if not (directory / _UPLOAD_META).exists():
                raise BrokerError("blob.not_found", "The multipart upload is no longer open.")
            final = f"{prefix}{etag}.part"
            os.rename(temp, directory / final)
            for entry in os.scandir(directory):
                if entry.name.startswith(prefix) and entry.name != final:
                    os.unlink(entry.path)
            _fsync_dir(directory)
        return ObjectInfo(key=grant.key, size=grant.size, content_type="", etag=etag, sha256=digest)

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
        """Write ``chunks`` to a temp file (hashing as they come), check, then publish.

        The same path as a PUT to a signed URL: bounded writes to ``tmp/``, no reading
        past one byte over the limit, fsync and the atomic pointer swap only when every
        check holds; on any error (the chunks' own included) the temp file goes away.
        """
        limit = max_size if size is None else min(size, max_size)
        temp = self.tmp / f"{uuid.uuid4().hex}.part"
        hasher = hashlib.sha256()
        received = 0
        try:
            with self._disk_errors():
                out = open(temp, "xb")  # noqa: SIM115 - closed below, errors translated
            with out:
                # The source's own errors (a client gone) pass through untranslated:
                # only the disk's mean that storage is unavailable.
                for chunk in chunks:
                    received += len(chunk)
                    if received > limit:
                        break  # one byte too many is proof enough; stop reading
                    hasher.update(chunk)
                    with self._disk_errors():
                        out.write(chunk)
                check_stream_size(received, max_size=max_size, size=size)
                digest = hasher.hexdigest()
                if sha256 is not None and digest != sha256:
                    raise BrokerError(
                        "upload.checksum_mismatch",
                        "The file's SHA-256 differs from the declared checksum.",
                    )
                with self._disk_errors():
                    out.flush()
                    os.fsync(out.fileno())
            with self._disk_errors():
                return self._publish(
                    key, temp, size=received, content_type=content_type, sha256=digest
                )
        finally:
            temp.unlink(missing_ok=True)

    @staticmethod
    @contextlib.contextmanager
    def _disk_errors() -> Iterator[None]:
        """The blob store's disk failing is ``storage.unavailable``."""
        try:
            yield
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise BrokerError("storage.unavailable", "The blob store is out of space.") from exc
            raise BrokerError("storage.unavailable", "The blob store cannot be written.") from exc

    # -- housekeeping -------------------------------------------------------------------------

    def iter_uploads(self) -> Iterator[OpenUpload]:
        """Every open upload: each ``uploads/<id>/`` whose ``upload.json`` is in place."""
        for entry in _scan(self.uploads):
            if not (_UPLOAD_ID.match(entry.name) and entry.is_dir(follow_symlinks=False)):
                continue
            meta = self._read_pointer(Path(entry.path) / _UPLOAD_META)
            if meta is None:  # being opened, or a crash's leftover: sweep_scratch's business
                continue
            yield OpenUpload(
                key=meta["key"], upload_id=entry.name, started_at=float(meta["started_at"])
            )

    def iter_objects(self) -> Iterator[StoredObject]:
        """Every visible object: each pointer under ``objects/`` (staged ones excluded)."""
        for shard in _scan(self.objects):
            if not shard.is_dir(follow_symlinks=False):
                continue
            for entry in _scan(Path(shard.path)):
                if entry.name.startswith(".") or not entry.name.endswith(".json"):
                    continue
                pointer = self._read_pointer(Path(entry.path))
                if pointer is None:  # deleted since the directory was read
                    continue
                yield StoredObject(
                    key=pointer["key"], size=pointer["size"], modified_at=pointer["stored_at"]
                )

    def sweep_scratch(self, older_than: float) -> int:
        """Remove leftovers of crashes and lost races last touched before ``older_than``:
        ``tmp/*.part`` (a PUT that never finished; a live one's mtime moves with every
        chunk), unreferenced ``.blob`` and staged ``.*.json`` files in the shards, and
        upload directories that have no ``upload.json``."""
        try:
            removed = 0
            for entry in _scan(self.tmp):
                if entry.name.endswith(".part") and _older(entry, older_than):
                    removed += _unlink(Path(entry.path))
            for shard in _scan(self.objects):
                if shard.is_dir(follow_symlinks=False):
                    removed += self._sweep_shard(Path(shard.path), older_than)
            for entry in _scan(self.uploads):
                if entry.is_dir(follow_symlinks=False) and _older(entry, older_than):
                    removed += self._sweep_upload_dir(Path(entry.path))
        except OSError as exc:
            raise BrokerError("storage.unavailable", "The blob store cannot be swept.") from exc
        return removed

    def _sweep_shard(self, shard: Path, older_than: float) -> int:
        """Remove a shard's unreferenced blobs and staged pointers, under its lock.

        Every way to leave a blob behind (a crash between the blob's rename and the pointer
        swap, after the swap but before the old blob's unlink, or inside ``delete``) leaves
        a stem with no pointer or with two blobs, so only such shards are locked, and only
        under the lock, where no publish is half done, is a blob judged unreferenced.
        """
        stems: dict[str, list[str]] = {}
        pointers: set[str] = set()
        staged = False
        for entry in _scan(shard):
            name = entry.name
            if name.endswith(".blob"):
                stems.setdefault(name.split(".", 1)[0], []).append(name)
            elif name.startswith("."):
                staged = True
            elif name.endswith(".json"):
                pointers.add(name.removesuffix(".json"))
        if not staged and all(len(b) == 1 and s in pointers for s, b in stems.items()):
            return 0  # the common case: one pointer, one blob per stem; no lock taken
        removed = 0
        with _locked(shard):
            for entry in _scan(shard):
                name = entry.name
                if not _older(entry, older_than):
                    continue
                if name.startswith(".") and name.endswith(".json"):
                    removed += _unlink(Path(entry.path))  # a publish that died mid-way
                elif name.endswith(".blob"):
                    pointer = self._read_pointer(shard / f"{name.split('.', 1)[0]}.json")
                    if pointer is None or pointer["blob"] != name:
                        removed += _unlink(Path(entry.path))
        return removed

    @staticmethod
    def _sweep_upload_dir(directory: Path) -> int:
        """Remove an upload directory left without ``upload.json`` (a crash while opening
        or aborting it); an open upload is not scratch."""
        if not _UPLOAD_ID.match(directory.name) or (directory / _UPLOAD_META).exists():
            return 0
        try:
            with _locked(directory):
                if (directory / _UPLOAD_META).exists():
                    return 0
                shutil.rmtree(directory, ignore_errors=True)
        except FileNotFoundError:  # removed meanwhile (an abort, another sweeper)
            return 0
        return 1

    # -- the blob endpoints -------------------------------------------------------------------

    def grant_put(self, token: str) -> PutGrant:
        """Verify an upload token; 403 ``blob.bad_signature`` or ``blob.expired`` otherwise."""
        data = self._put.loads(token)
        return PutGrant(
            key=data["k"],
            size=data["s"],
            content_type=data.get("t"),
            sha256=data.get("h"),
            expires_at=data["e"],
            upload_id=data.get("u"),
            part_number=data.get("p"),
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
        body: Readable,
    ) -> ObjectInfo:
        """Store a PUT body if and only if it is exactly what the grant declared.

        Header checks come first so a lie costs no disk. The body is streamed in bounded
        chunks to a temporary file; reading stops one byte past the declared size, so an
        oversized body cannot fill the disk. Only a body of the right length and checksum
        is fsynced and renamed into place.
        """
        if grant.content_type is not None and (
            content_type is None or normalise_mime_type(content_type) != grant.content_type
        ):
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
            digest, received = self._spool(
                body, temp, limit=grant.size, hashed=grant.sha256 is not None
            )
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
            if grant.upload_id is not None and grant.part_number is not None:
                return self._store_part(grant, temp, digest)
            assert grant.content_type is not None
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

    def _signed_put(self, grant: dict[str, Any], headers: dict[str, str]) -> UploadInstructions:
        """A blob PUT URL carrying ``grant`` (its ``e`` is the expiry) in a signed token."""
        return UploadInstructions(
            method="PUT",
            url=f"{self._base_url()}/v1/blobs/{self._put.dumps(grant)}",
            headers=headers,
            expires_at=grant["e"],
        )

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
            etag=pointer.get("etag") or pointer["sha256"][:32],
            sha256=pointer.get("sha256"),
        )

    def _spool(
        self, body: Readable, temp: Path, *, limit: int, hashed: bool
    ) -> tuple[str | None, int]:
        """Copy at most ``limit + 1`` bytes to ``temp``; return (hex SHA-256, bytes read).

        The SHA-256 is computed only when ``hashed`` (a checksum was declared and must be
        checked): hashing costs more CPU than the rest of a PUT, and nothing else needs it.
        """
        hasher = hashlib.sha256() if hashed else None
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
                    if hasher is not None:
                        hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise BrokerError("storage.unavailable", "The blob store is out of space.") from exc
            raise
        return (hasher.hexdigest() if hasher is not None else None), received

    def _publish(
        self, key: str, temp: Path, *, size: int, content_type: str, sha256: str | None
    ) -> ObjectInfo:
        """Move a verified temp file into place and swap the pointer to it atomically.

        The ETag is the SHA-256's first half when it is known, else the new blob's own
        random id: either way it changes whenever the stored bytes do.
        """
        pointer_path = self._pointer_path(key)
        shard = pointer_path.parent
        shard.mkdir(exist_ok=True)
        version = uuid.uuid4().hex
        blob_name = f"{pointer_path.stem}.{version}.blob"
        pointer = {
            "key": key,
            "size": size,
            "content_type": content_type,
            "sha256": sha256,
            "etag": sha256[:32] if sha256 else version,
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
