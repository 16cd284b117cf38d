"""The embedded store's on-disk layout and the primitives every disk operation is built from.

Layout under ``root``::

    tmp/<uuid>.part                       bytes of a PUT in progress (never visible)
    objects/<h2>/<h>.<uuid>.blob          immutable data of one successful PUT
    objects/<h2>/<h>.json                 the pointer: key, size, type, etag, sha256, blob name
    uploads/<upload id>/upload.json       an open multipart upload: key, type, start time
    uploads/<upload id>/<n>.<etag>.part   one received part (n: five digits; etag: its id)

``h`` is the SHA-256 of the storage key, so no key can reach outside ``objects/`` whatever
it contains. An object is visible exactly when its pointer exists; a pointer is created by
``link``, which is atomic and never replaces one (objects are write-once), and only after
the data it names was fsynced. A crash or
a rejected body therefore never leaves a partial or wrong object in sight; what it can
leave (a ``.part`` file, an unreferenced ``.blob``) is invisible and swept later.

The primitives let the disk's own ``OSError`` out; ``disk_errors`` is the one place that
turns it into ``StorageUnavailable``, and the adapter runs every disk operation inside it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import BrokerError, StorageUnavailable
from ..models import StoredPart
from .base import HASH_CHUNK, ObjectInfo, already_stored

log = logging.getLogger("broker.storage.local")

UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
PART_FILE = re.compile(r"^(\d{5})\.([0-9a-f]{32})\.part$")
UPLOAD_META = "upload.json"
_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskErrors:
    """Context manager: an ``OSError`` inside it is ``StorageUnavailable`` for ``action``.

    A class rather than a generator so one instance can guard every write of a long body
    at the cost of two method calls per chunk.
    """

    def __init__(self, action: str) -> None:
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not isinstance(exc, OSError):
            return  # success, or not the disk's error: let it pass as it is
        log.warning("blob store: cannot %s: %s", self.action, exc)
        if exc.errno in _FULL:
            raise StorageUnavailable("The blob store is out of space.", action=self.action) from exc
        reason = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        raise StorageUnavailable(
            f"The blob store cannot {self.action} ({reason}).", action=self.action
        ) from exc


def disk_errors(action: str) -> DiskErrors:
    """Guard a disk operation: the disk failing is ``storage.unavailable``, never a 500."""
    return DiskErrors(action)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, an unlink) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Busy(Exception):
    """Another thread or process has held a directory's lock longer than we would wait."""


@contextlib.contextmanager
def locked(directory: Path, *, wait: float | None = None) -> Iterator[None]:
    """Serialise changes within one directory (across threads and processes).

    ``wait``: give up with ``Busy`` after that many seconds (None waits as long as it takes).
    Raises FileNotFoundError when the directory is gone.
    """
    fd = os.open(directory, os.O_RDONLY)
    try:
        if wait is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise Busy(str(directory)) from None
                    time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_durably(staged: Path, final: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``staged`` (which must not exist), fsync it, and rename it
    to ``final``: readers see the old file or the whole new one, never a part."""
    with open(staged, "x", encoding="utf-8") as out:
        json.dump(data, out)
        out.flush()
        os.fsync(out.fileno())
    os.rename(staged, final)


def write_once(staged: Path, final: Path, data: dict[str, Any]) -> None:
    """As ``write_durably``, but ``final`` is created only if it does not exist: a hard
    link, which fails with FileExistsError rather than replace it (O_EXCL for a name), so
    of two racing writers exactly one wins. ``staged`` is gone either way."""
    try:
        with open(staged, "x", encoding="utf-8") as out:
            json.dump(data, out)
            out.flush()
            os.fsync(out.fileno())
        os.link(staged, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)


def part_name(number: int, etag: str) -> str:
    """The file name of part ``number`` whose copy is named ``etag``."""
    return f"{number:05d}.{etag}.part"


def join_parts(directory: Path, parts: Sequence[StoredPart]) -> Iterator[bytes]:
    """The bytes of ``parts`` in order, from their files in an upload's directory.

    Raises ``upload.part_missing`` when a part is not stored under that ETag.
    """
    for part in parts:
        try:
            source = open(directory / part_name(part.part_number, part.etag), "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise BrokerError(
                "upload.part_missing",
                f"Part {part.part_number} with ETag {part.etag} is not stored.",
            ) from None
        with source:
            while chunk := source.read(HASH_CHUNK):
                yield chunk


def discard(path: Path) -> None:
    """Remove a temporary file if it is there; a failure leaves it for ``sweep_scratch``
    rather than replace the error (or answer) the caller is busy with."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def spool(
    chunks: Iterable[bytes], temp: Path, *, limit: int, hashed: bool
) -> tuple[str | None, int]:
    """Copy ``chunks`` to the new file ``temp`` until they end or pass ``limit`` bytes, then
    fsync it; return (hex SHA-256 when ``hashed``, bytes received, at most ``limit + 1``).

    Only the file's own operations are guarded: an error of ``chunks`` (a client gone)
    passes through untranslated. Hashing costs more CPU than the rest of a PUT, so it is
    done only when asked (a checksum was declared, or the caller reports one).
    """
    hasher = hashlib.sha256() if hashed else None
    received = 0
    writing = disk_errors("write a body")
    with writing:
        out = open(temp, "xb")  # noqa: SIM115 - closed in the finally below
    try:
        for chunk in chunks:
            received += len(chunk)
            if received > limit:
                break  # one byte too many is proof enough; stop reading
            if hasher is not None:
                hasher.update(chunk)
            with writing:
                out.write(chunk)
        with writing:
            out.flush()
            os.fsync(out.fileno())
    finally:
        # Flushed and synced already, or failing anyway: the close has nothing to lose.
        with contextlib.suppress(OSError):
            out.close()
    return (hasher.hexdigest() if hasher is not None else None), received


class Disk:
    """The directories of one blob store and the operations on its layout."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self.uploads = root / "uploads"
        for directory in (self.objects, self.tmp, self.uploads):
            directory.mkdir(parents=True, exist_ok=True)

    def new_temp(self) -> Path:
        """A fresh name under ``tmp/`` for bytes on their way in."""
        return self.tmp / f"{uuid.uuid4().hex}.part"

    # -- objects ----------------------------------------------------------------------------

    def pointer_path(self, key: str) -> Path:
        """Where the pointer of ``key`` lives (whether or not it exists)."""
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self.objects / digest[:2] / f"{digest}.json"

    @staticmethod
    def read_pointer(path: Path) -> dict[str, Any] | None:
        """A pointer (or upload.json), or None when there is none."""
        try:
            with open(path, encoding="utf-8") as handle:
                pointer: dict[str, Any] = json.load(handle)
        except FileNotFoundError:
            return None
        return pointer

    @staticmethod
    def info(pointer: dict[str, Any]) -> ObjectInfo:
        """What a pointer says of its object."""
        return ObjectInfo(
            key=pointer["key"],
            size=pointer["size"],
            content_type=pointer["content_type"],
            etag=pointer.get("etag") or pointer["sha256"][:32],
            sha256=pointer.get("sha256"),
        )

    def publish(
        self,
        key: str,
        temp: Path,
        *,
        size: int,
        content_type: str,
        sha256: str | None,
        stored_at: float,
        upload_id: str | None = None,
    ) -> ObjectInfo:
        """Move a verified, fsynced temp file into place and create its pointer atomically,
        only if the key has none: objects are write-once, so a key that holds one already
        is 412 ``upload.already_stored`` (the loser's bytes are removed, the winner's stay).

        The ETag is the SHA-256's first half when it is known, else the new blob's own
        random id. ``upload_id`` names the multipart upload whose parts were joined into it
        (kept in the pointer).
        """
        pointer_path = self.pointer_path(key)
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
            "stored_at": stored_at,
        }
        if upload_id is not None:
            pointer["upload_id"] = upload_id
        with locked(shard):
            os.rename(temp, shard / blob_name)
            try:
                write_once(shard / f".{blob_name}.json", pointer_path, pointer)
            except FileExistsError:
                (shard / blob_name).unlink(missing_ok=True)
                raise already_stored() from None
            fsync_dir(shard)
        return self.info(pointer)

    # -- multipart uploads ------------------------------------------------------------------

    def upload_dir(self, key: str, upload_id: str) -> Path | None:
        """The directory of an open upload of ``key``, or None."""
        if not UPLOAD_ID.match(upload_id):
            return None
        directory = self.uploads / upload_id
        meta = self.read_pointer(directory / UPLOAD_META)
        if meta is None or meta.get("key") != key:
            return None
        return directory

    @contextlib.contextmanager
    def open_upload(
        self, key: str, upload_id: str, *, wait: float | None = None
    ) -> Iterator[Path | None]:
        """The directory of an open upload of ``key``, locked; None when it is not open,
        checked again under the lock (an abort or a completion may have won the race).

        With ``wait``, a lock held longer (its parts being joined) is 409
        ``upload.in_progress``.
        """
        directory = self.upload_dir(key, upload_id)
        with contextlib.ExitStack() as stack:
            if directory is not None:
                try:
                    stack.enter_context(locked(directory, wait=wait))
                except FileNotFoundError:  # removed since it was looked up
                    directory = None
                except Busy:
                    raise BrokerError(
                        "upload.in_progress",
                        "The upload's parts are being joined by another request; "
                        "complete again shortly.",
                    ) from None
            if directory is not None and not (directory / UPLOAD_META).exists():
                directory = None
            yield directory

    @staticmethod
    def put_part(directory: Path, temp: Path, *, number: int, etag: str) -> None:
        """Move a verified part into its (locked) upload directory, replacing other copies."""
        final = part_name(number, etag)
        os.rename(temp, directory / final)
        for entry in os.scandir(directory):
            match = PART_FILE.match(entry.name)
            if match and int(match.group(1)) == number and entry.name != final:
                os.unlink(entry.path)
        fsync_dir(directory)

    @staticmethod
    def parts(directory: Path) -> list[StoredPart]:
        """The part files of an upload directory, by part number."""
        found: dict[int, StoredPart] = {}
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return []
        for entry in entries:
            match = PART_FILE.match(entry.name)
            if match is None:
                continue
            number = int(match.group(1))
            try:
                size = entry.stat().st_size
            except FileNotFoundError:
                continue
            found[number] = StoredPart(part_number=number, size=size, etag=match.group(2))
        return [found[n] for n in sorted(found)]
