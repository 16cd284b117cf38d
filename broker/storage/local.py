"""The embedded blob store: local disk plus URLs the broker signs for itself (itsdangerous).

The adapter: objects, multipart uploads, proxied uploads, and the ``SelfServedStorage``
ability (the broker's HTTP layer serves the signed URLs at an address this store is given;
it verifies tokens and stores or locates bytes). The layout and its primitives are in
``disk.py``, listing and scratch in ``local_housekeeping.py``. Every disk operation runs
inside ``disk_errors``, so a failing disk is always ``storage.unavailable``.

A multipart upload keeps each verified part as its own file; completing it streams the
parts into one temporary file (hashing as it goes), then publishes that like a PUT.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from io import BufferedReader
from pathlib import Path
from typing import Any

from ..config import Clock
from ..errors import BrokerError, StorageUnavailable
from ..models import StoredPart, UploadInstructions
from ..tokens import ExpiringTokens
from . import local_housekeeping as housekeeping
from .base import (
    HASH_CHUNK,
    Expected,
    GetGrant,
    LocatedBlob,
    ObjectInfo,
    OpenUpload,
    PutGrant,
    Readable,
    StoredObject,
    already_stored,
    check_received,
)
from .disk import (
    UPLOAD_META,
    Disk,
    discard,
    disk_errors,
    fsync_dir,
    join_parts,
    locked,
    spool,
    write_durably,
)

JOIN_WAIT = 1.0
"""Seconds a complete (or a listing of parts) waits for an upload another request holds;
past it the answer is 409 ``upload.in_progress`` (a join of large parts takes longer)."""
PUT_SALT = "broker.blob.put"
GET_SALT = "broker.blob.get"


class LocalStorage:
    """Storage adapter for a local directory whose signed URLs the broker serves itself."""

    name = "local"
    serves_nosniff = True

    def __init__(
        self, root: Path, secret_key: str, *, blob_url: Callable[[str], str], clock: Clock
    ) -> None:
        self.disk = Disk(root)
        self._blob_url = blob_url
        self._clock = clock
        self._put = ExpiringTokens(secret_key, PUT_SALT, clock)
        self._get = ExpiringTokens(secret_key, GET_SALT, clock)

    # -- Storage ----------------------------------------------------------------------------------

    def presign_put(
        self, key: str, *, size: int, content_type: str, sha256: str | None, expires_at: int
    ) -> UploadInstructions:
        """A PUT URL whose token binds key, exact size, type, optional SHA-256 and expiry."""
        return self._signed_put(
            {"k": key, "s": size, "t": content_type, "h": sha256, "e": expires_at},
            headers={"Content-Type": content_type, "Content-Length": str(size)},
        )

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
        """A GET URL whose token binds the key, presentation (type, name), expiry and (when
        given) the ETag of the object it may serve; versions are not kept here."""
        grant: dict[str, Any] = {
            "k": key, "t": content_type, "n": filename, "a": int(attachment), "e": expires_at
        }  # fmt: skip
        if etag is not None:
            grant["v"] = etag
        return self._blob_url(self._get.dumps(grant))

    def head(self, key: str) -> ObjectInfo | None:
        """The object's pointer, or None when no PUT of this key has succeeded."""
        with disk_errors("read an object's pointer"):
            pointer = self.disk.read_pointer(self.disk.pointer_path(key))
        return None if pointer is None else self.disk.info(pointer)

    def iter_bytes(self, key: str, *, version_id: str | None = None) -> Iterator[bytes]:
        """Stream the stored bytes in HASH_CHUNK pieces (no versions are kept here: objects
        are written once)."""
        reading = disk_errors("read an object")
        with reading:
            handle = self._open_blob(key)
        if handle is None:
            raise FileNotFoundError(key)
        with handle:
            while True:
                with reading:
                    chunk = handle.read(HASH_CHUNK)
                if not chunk:
                    return
                yield chunk

    def delete(self, key: str) -> None:
        """Remove pointer then data; a missing object is not an error."""
        pointer_path = self.disk.pointer_path(key)
        with disk_errors("delete an object"):
            if not pointer_path.parent.exists():
                return
            with locked(pointer_path.parent):
                pointer = self.disk.read_pointer(pointer_path)
                if pointer is None:
                    return
                pointer_path.unlink(missing_ok=True)
                (pointer_path.parent / pointer["blob"]).unlink(missing_ok=True)
                fsync_dir(pointer_path.parent)

    def ping(self) -> None:
        """Storage answers when its directories exist and accept writes."""
        for directory in (self.disk.objects, self.disk.tmp, self.disk.uploads):
            if not os.access(directory, os.W_OK | os.X_OK):
                raise StorageUnavailable(
                    f"{directory.name}/ is not writable", action="check its directories"
                )

    # -- MultipartStorage -------------------------------------------------------------------------

    def start_multipart(self, key: str, *, content_type: str) -> str:
        """Open an upload: a directory named by a random id, holding the key and type."""
        upload_id = uuid.uuid4().hex
        directory = self.disk.uploads / upload_id
        meta = {"key": key, "content_type": content_type, "started_at": self._clock()}
        try:
            with disk_errors("open a multipart upload"):
                directory.mkdir()
                write_durably(directory / f".{UPLOAD_META}", directory / UPLOAD_META, meta)
                fsync_dir(directory)
                fsync_dir(self.disk.uploads)
        except StorageUnavailable:
            shutil.rmtree(directory, ignore_errors=True)
            raise
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
        with (
            disk_errors("list an upload's parts"),
            self.disk.open_upload(key, upload_id, wait=JOIN_WAIT) as found,
        ):
            return None if found is None else self.disk.parts(found)

    def finish_multipart(self, key: str, upload_id: str, parts: Sequence[StoredPart]) -> ObjectInfo:
        """Stream the parts into one temp file (hashing), publish it, close the upload.

        The upload's lock is held throughout: a concurrent complete waits ``JOIN_WAIT`` for
        it, then answers 409 ``upload.in_progress``; one that finds the upload joined
        already answers the object joined from it."""
        temp = self.disk.new_temp()
        try:
            with (
                disk_errors("complete a multipart upload"),
                self.disk.open_upload(key, upload_id, wait=JOIN_WAIT) as directory,
            ):
                meta = (
                    None if directory is None else self.disk.read_pointer(directory / UPLOAD_META)
                )
                if directory is None or meta is None:
                    joined = self.disk.read_pointer(self.disk.pointer_path(key))
                    if joined is not None and joined.get("upload_id") == upload_id:
                        return self.disk.info(joined)
                    raise BrokerError("upload.not_received", "The multipart upload is not open.")
                listed = sum(part.size for part in parts)
                digest, size = spool(join_parts(directory, parts), temp, limit=listed, hashed=True)
                if size != listed:
                    raise BrokerError(
                        "upload.part_missing", "A part is not stored with the length listed."
                    )
                info = self._publish(
                    key,
                    temp,
                    size=size,
                    content_type=meta["content_type"],
                    sha256=digest,
                    upload_id=upload_id,
                )
                shutil.rmtree(directory, ignore_errors=True)
                return info
        finally:
            discard(temp)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Remove the upload's directory and every part in it."""
        with (
            disk_errors("abort a multipart upload"),
            self.disk.open_upload(key, upload_id) as found,
        ):
            if found is not None:
                shutil.rmtree(found, ignore_errors=True)

    # -- StreamingStorage -------------------------------------------------------------------------

    def put_stream(self, key: str, chunks: Iterable[bytes], expected: Expected) -> ObjectInfo:
        """Write ``chunks`` to a temp file (hashing as they come), check, then publish.

        The same path as a PUT to a signed URL: bounded writes to ``tmp/``, no reading
        past one byte over the limit, the atomic pointer swap only when every check holds;
        on any error (the chunks' own included) the temp file goes away.
        """
        temp = self.disk.new_temp()
        try:
            digest, received = spool(chunks, temp, limit=expected.limit, hashed=True)
            assert digest is not None
            expected.check(received, digest)
            return self._publish(
                key, temp, size=received, content_type=expected.content_type, sha256=digest
            )
        finally:
            discard(temp)

    # -- InventoryStorage and ScratchStorage (local_housekeeping.py) ------------------------------

    def iter_uploads(self) -> Iterator[OpenUpload]:
        """Every open upload: each ``uploads/<id>/`` whose ``upload.json`` is in place."""
        return housekeeping.iter_uploads(self.disk)

    def iter_objects(self) -> Iterator[StoredObject]:
        """Every visible object: each pointer under ``objects/``."""
        return housekeeping.iter_objects(self.disk)

    def sweep_scratch(self, older_than: float) -> int:
        """Remove temp files, unreferenced blobs and half-made uploads older than that."""
        return housekeeping.sweep_scratch(self.disk, older_than)

    # -- SelfServedStorage ------------------------------------------------------------------------

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
            etag=data.get("v"),
        )

    def receive(self, grant: PutGrant, body: Readable) -> ObjectInfo:
        """Store a PUT body if and only if it is exactly what the grant declared.

        The body is streamed in bounded chunks to a temporary file; reading stops one byte
        past the declared size, so an oversized body cannot fill the disk. Only a body of
        the right length and checksum is published, and only to a key that holds no object:
        a key that does is refused before a byte of the body is read, and a racing PUT that
        published first wins (``Disk.publish``).
        """
        if grant.upload_id is None and self.head(grant.key) is not None:
            raise already_stored()
        temp = self.disk.new_temp()
        try:
            digest, received = spool(
                _read_up_to(body, grant.size + 1),
                temp,
                limit=grant.size,
                hashed=grant.sha256 is not None,
            )
            check_received(received, digest, size=grant.size, sha256=grant.sha256, what="body")
            if grant.upload_id is not None and grant.part_number is not None:
                return self._store_part(grant, temp, digest)
            assert grant.content_type is not None
            return self._publish(
                grant.key, temp, size=received, content_type=grant.content_type, sha256=digest
            )
        finally:
            discard(temp)

    def locate(self, grant: GetGrant) -> LocatedBlob | None:
        """The data file and pointer for a download, or None when nothing is stored."""
        pointer_path = self.disk.pointer_path(grant.key)
        with disk_errors("read an object's pointer"):
            pointer = self.disk.read_pointer(pointer_path)
        if pointer is None:
            return None
        if grant.etag is not None and self.disk.info(pointer).etag != grant.etag:
            return None  # not the object the URL was signed for
        return LocatedBlob(
            path=pointer_path.parent / pointer["blob"],
            info=self.disk.info(pointer),
            stored_at=pointer["stored_at"],
        )

    # -- internals --------------------------------------------------------------------------------

    def _signed_put(self, grant: dict[str, Any], headers: dict[str, str]) -> UploadInstructions:
        """A blob PUT URL carrying ``grant`` (its ``e`` is the expiry) in a signed token."""
        return UploadInstructions(
            method="PUT",
            url=self._blob_url(self._put.dumps(grant)),
            headers=headers,
            expires_at=grant["e"],
        )

    def _open_blob(self, key: str) -> BufferedReader | None:
        """The object's data file, open for reading; None when nothing is stored (also when
        it was replaced or deleted between reading the pointer and opening the file)."""
        pointer_path = self.disk.pointer_path(key)
        pointer = self.disk.read_pointer(pointer_path)
        if pointer is None:
            return None
        try:
            return open(pointer_path.parent / pointer["blob"], "rb")
        except FileNotFoundError:
            return None

    def _publish(
        self,
        key: str,
        temp: Path,
        *,
        size: int,
        content_type: str,
        sha256: str | None,
        upload_id: str | None = None,
    ) -> ObjectInfo:
        """Publish a verified temp file as the object (``Disk.publish``), guarded."""
        with disk_errors("publish an object"):
            return self.disk.publish(
                key,
                temp,
                size=size,
                content_type=content_type,
                sha256=sha256,
                stored_at=self._clock(),
                upload_id=upload_id,
            )

    def _store_part(self, grant: PutGrant, temp: Path, digest: str | None) -> ObjectInfo:
        """Move a verified part into its open upload, replacing an earlier copy."""
        assert grant.upload_id is not None
        assert grant.part_number is not None
        etag = digest[:32] if digest else uuid.uuid4().hex  # names this copy of the part
        with (
            disk_errors("store a part"),
            self.disk.open_upload(grant.key, grant.upload_id) as directory,
        ):
            if directory is None:
                raise BrokerError("blob.not_found", "The multipart upload is no longer open.")
            self.disk.put_part(directory, temp, number=grant.part_number, etag=etag)
        return ObjectInfo(key=grant.key, size=grant.size, content_type="", etag=etag, sha256=digest)


def _read_up_to(body: Readable, limit: int) -> Iterator[bytes]:
    """The body in chunks of at most HASH_CHUNK, reading no more than ``limit`` bytes."""
    left = limit
    while left > 0:
        chunk = body.read(min(HASH_CHUNK, left))
        if not chunk:
            return
        left -= len(chunk)
        yield chunk
