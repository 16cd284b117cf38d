"""Housekeeping (``broker sweep``): expire pending files whose URLs ran out and free what
storage holds for nobody.

One pass, in order:

a. **Expired files.** Each pending file whose ``expires_at + grace`` has passed is claimed
   with a conditional update (pending and still expired → failed ``upload.expired``); only
   the claim's winner touches storage. It aborts the file's multipart upload (its id
   belongs to this file alone) and deletes the file's object: each file has its own
   (``{tenant}/{bucket}/{file id}/{key}``). A file declared before that layout shares
   ``{tenant}/{bucket}/{key}`` with its key's next holder, so that object is kept while a
   live file of the old layout holds it.
b. **Orphan uploads.** Open multipart uploads started before ``now - grace`` that no pending
   file owns (a crash between opening and recording one, a free that failed) are aborted.
   A pending file without an upload id owns the open uploads of its key: that is a proxied
   upload (``POST /v1/files`` with a form) streaming to S3 in parts.
c. **Orphan objects.** Objects last modified before ``now - grace`` that are no live file's
   object are deleted, after a last look at the database (the objects of deleted, failed
   and aborted files, and bytes a dead file's old URL stored later). A file's row exists before its
   URLs do, so an object can only outlive its row, never precede it.
d. **Scratch.** ``storage.sweep_scratch(now - grace)``: the adapter's own leftovers, where
   it keeps any (a ``ScratchStorage``: the embedded store; S3 keeps none).

Every action is idempotent (claims are conditional; aborting or deleting what is gone is
fine), so sweepers on several machines never break anything. On PostgreSQL a pass also
takes an advisory lock and is skipped while another sweeper holds it: not for safety,
only so N machines do not all do the same work every minute. Storage keys that the broker
cannot have written (neither ``tenant/bucket/file_id/key`` nor the old ``tenant/bucket/key``
with valid names) are never touched.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeVar

from .config import NAME_RE, Clock, Settings
from .db import MetadataStore
from .errors import BrokerError
from .metrics import SWEPT
from .models import Status
from .naming import InvalidKey, normalise_key
from .storage import InventoryStorage, MultipartStorage, ScratchStorage, Storage

log = logging.getLogger("broker.sweep")

T = TypeVar("T")
SWEEP_LOCK = 0x62727377  # "brsw": PostgreSQL advisory lock held for one pass
DEFAULT_GRACE = 15 * 60
"""Seconds past ``expires_at`` before a pending file is expired (see ``broker sweep --help``)."""
_BATCH = 500
_FILE_ID = re.compile(r"file_[0-9A-HJKMNP-TV-Z]{26}")
"""A file id (ids.py) as it is the first segment of a file's own storage key."""


@dataclass
class SweepReport:
    """What one pass did, by action."""

    files_expired: int = 0
    orphan_uploads_aborted: int = 0
    orphan_objects_deleted: int = 0
    """Deletes issued; without the lock two sweepers may both delete one object (harmless)."""
    scratch_removed: int = 0
    errors: int = 0
    """Passes cut short by an unavailable database or storage (the next run resumes)."""
    objects_scanned: bool = False
    """Whether pass c (listing every object) ran."""
    skipped: bool = False
    """True when another sweeper held the lock, so this one did nothing."""

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data."""
        return asdict(self)


class ReapableStorage(Storage, MultipartStorage, InventoryStorage, Protocol):
    """What the reaper needs of storage: to list, abort and delete what nobody holds."""


class Sweeper:
    """One sweep pass over the metadata store and storage (safe to run concurrently)."""

    def __init__(
        self,
        settings: Settings,
        store: MetadataStore,
        storage: ReapableStorage,
        clock: Clock,
        *,
        exclusive: bool = True,
        batch: int = _BATCH,
    ) -> None:
        self.settings = settings
        self.store = store
        self.storage = storage
        self.clock = clock
        self.exclusive = exclusive
        self.batch = batch

    def run(self, grace: int = DEFAULT_GRACE, *, objects: bool = True) -> SweepReport:
        """Sweep once; ``objects=False`` skips listing every object (pass c)."""
        lock = self.store.db.try_lock(SWEEP_LOCK) if self.exclusive else nullcontext(True)
        report = SweepReport()
        try:
            with lock as got:
                if not got:
                    log.info("sweep skipped: another sweeper holds the lock")
                    report.skipped = True
                    return report
                now = self.clock()
                cutoff = now - grace
                self._step(report, "expire pending files", self._expire, int(cutoff), int(now))
                self._step(report, "abort orphan uploads", self._orphan_uploads, cutoff)
                if objects:
                    report.objects_scanned = self._step(
                        report, "delete orphan objects", self._orphan_objects, cutoff
                    )
                self._step(report, "remove scratch", self._scratch, cutoff)
        except BrokerError as exc:  # the lock itself: the database is not answering
            log.warning("sweep failed: %s", exc.message)
            report.errors += 1
        return report

    @staticmethod
    def _step(report: SweepReport, what: str, action: Callable[..., None], *args: float) -> bool:
        """Run one pass; an unavailable database or storage ends it (the next run resumes:
        whatever was left half done is found again by the orphan passes)."""
        try:
            action(report, *args)
        except BrokerError as exc:
            log.warning("sweep: cannot %s: %s", what, exc.message)
            report.errors += 1
            return False
        return True

    # -- a. expired files -------------------------------------------------------------------

    def _expire(self, report: SweepReport, cutoff: int, now: int) -> None:
        after: tuple[int, str] | None = None
        while True:
            page = self.store.expired_pending(cutoff, self.batch, after)
            for record in page:
                won = self.store.expire(
                    record.tenant,
                    record.id,
                    cutoff=cutoff,
                    failure_code="upload.expired",
                    updated_at=now,
                )
                if not won:  # completed, aborted, re-issued or claimed by another sweeper
                    continue
                report.files_expired += 1
                SWEPT.labels(action="file_expired").inc()
                log.info(
                    "sweep: expired file %s (tenant %s, %s/%s, expired at %d)",
                    record.id, record.tenant, record.bucket, record.key, record.expires_at,
                )  # fmt: skip
                if record.upload_id is not None:
                    self.storage.abort_multipart(record.storage_key, record.upload_id)
                if self._held(record.storage_key):
                    log.info("sweep: kept %s: a newer file holds the key", record.storage_key)
                else:
                    self.storage.delete(record.storage_key)
            if len(page) < self.batch:
                return
            after = (page[-1].expires_at, page[-1].id)

    # -- b. orphan multipart uploads --------------------------------------------------------

    def _orphan_uploads(self, report: SweepReport, cutoff: float) -> None:
        old = (u for u in self.storage.iter_uploads() if u.started_at < cutoff)
        for chunk in _chunks(old, self.batch):
            holders = self._holders(upload.key for upload in chunk)
            for upload in chunk:
                if upload.key not in holders:
                    continue  # not a key the broker writes
                if holders[upload.key] == (Status.PENDING, upload.upload_id):
                    continue  # its pending file's upload (expired ones are pass a's)
                if holders[upload.key] == (Status.PENDING, None):
                    # A proxied upload streaming in parts (put_stream opens the upload and
                    # records no id): its file keeps its expiry fresh while bytes arrive,
                    # and once it is expired or done the upload is aborted or completed.
                    continue
                self.storage.abort_multipart(upload.key, upload.upload_id)
                report.orphan_uploads_aborted += 1
                SWEPT.labels(action="orphan_upload_aborted").inc()
                log.info("sweep: aborted orphan upload %s of %s", upload.upload_id, upload.key)

    # -- c. orphan objects ------------------------------------------------------------------

    def _orphan_objects(self, report: SweepReport, cutoff: float) -> None:
        old = (o for o in self.storage.iter_objects() if o.modified_at < cutoff)
        for chunk in _chunks(old, self.batch):
            holders = self._holders(found.key for found in chunk)
            for found in chunk:
                if holders.get(found.key, ()) != (None, None):
                    continue  # held by a live file, or not a key the broker writes
                if self._held(found.key):
                    continue  # taken by a new file since the batch was looked up
                self.storage.delete(found.key)
                report.orphan_objects_deleted += 1
                SWEPT.labels(action="orphan_object_deleted").inc()
                log.info("sweep: deleted orphan object %s (%d bytes)", found.key, found.size)

    # -- d. scratch -------------------------------------------------------------------------

    def _scratch(self, report: SweepReport, cutoff: float) -> None:
        if not isinstance(self.storage, ScratchStorage):
            return
        removed = self.storage.sweep_scratch(cutoff)
        if removed:
            report.scratch_removed += removed
            SWEPT.labels(action="scratch_removed").inc(removed)
            log.info("sweep: removed %d scratch file(s)", removed)

    # -- helpers ----------------------------------------------------------------------------

    def _holders(self, storage_keys: Iterable[str]) -> dict[str, tuple[Status | None, str | None]]:
        """For each storage key the broker could have written: the live file whose object it
        is (status, upload id), or ``(None, None)`` when it is none's. Other keys are absent."""
        wanted: dict[tuple[str, str], tuple[set[str], set[str]]] = {}
        found: dict[str, tuple[Status | None, str | None]] = {}
        for storage_key in storage_keys:
            parsed = _parse(storage_key)
            if parsed is None:
                continue
            tenant, bucket, key, file_id = parsed
            keys, ids = wanted.setdefault((tenant, bucket), (set(), set()))
            if key is not None:
                keys.add(key)
            if file_id is not None:
                ids.add(file_id)
            found[storage_key] = (None, None)
        for (tenant, bucket), (keys, ids) in wanted.items():
            for record in self.store.live_files(tenant, bucket, keys=keys, ids=ids):
                if record.storage_key in found:  # its object, not merely its key
                    found[record.storage_key] = (record.status, record.upload_id)
        return found

    def _held(self, storage_key: str) -> bool:
        """Whether a live file's object is at ``storage_key`` now."""
        return self._holders([storage_key]).get(storage_key, (None, None)) != (None, None)


def _parse(storage_key: str) -> tuple[str, str, str | None, str | None] | None:
    """``tenant/bucket/rest`` as (tenant, bucket, the key if ``rest`` is the old layout's
    key, the file id if ``rest`` is ``file_id/key``), or None for a key the broker never
    writes (bad names, a key that is not in normal form). Both readings may hold: a file
    of the old layout may have chosen a key that starts like a file id."""
    tenant, _, rest = storage_key.partition("/")
    bucket, _, rest = rest.partition("/")
    if not (NAME_RE.fullmatch(tenant) and NAME_RE.fullmatch(bucket)):
        return None
    head, _, tail = rest.partition("/")
    file_id = head if _FILE_ID.fullmatch(head) and _is_normal(tail) else None
    key = rest if _is_normal(rest) else None
    if key is None and file_id is None:
        return None
    return tenant, bucket, key, file_id


def _is_normal(key: str) -> bool:
    """Whether ``key`` is a valid key in normal form (as the broker stores them)."""
    try:
        return normalise_key(key) == key
    except InvalidKey:
        return False


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of at most ``size`` items (itertools.batched is Python 3.12+)."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
