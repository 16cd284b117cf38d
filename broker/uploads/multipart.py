"""Multipart uploads: join the parts on complete, and sign part URLs again to resume."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..auth import require
from ..context import Context
from ..errors import BrokerError, StorageUnavailable, validation_error
from ..models import FileRecord, FileView, Principal, Scope, Status, StoredPart
from ..parts import missing, numbers_text, plan, received
from ..storage.base import ObjectInfo
from ..views import UseCase

JOIN_WAIT = 1.0
"""Seconds a complete waits for another request of this process to finish joining the same
upload before it answers 409 ``upload.in_progress``."""

_RECENT = 1024
"""Joined uploads whose object this process remembers, for completes that waited."""

_joining: set[str] = set()
_recent: OrderedDict[str, ObjectInfo] = OrderedDict()
_joined = threading.Condition()


def join_parts(
    ctx: Context, record: FileRecord, claimed: list[Mapping[str, Any]] | None
) -> ObjectInfo:
    """Check every planned part is in storage with its planned length (and, when the
    client lists parts, that its ETags are storage's), then join them into the object.

    Nothing received yet answers 409 ``upload.not_received``, as for a single PUT. A part
    not received (absent, of another length, or not the copy the client names) answers
    409 ``upload.part_missing`` with ``details.missing_parts``. Either way nothing is
    joined and the file stays pending: the client sends those parts and completes again.

    One join of an upload at a time in this process: another complete waits up to
    JOIN_WAIT for it and answers the object it joined, else 409 ``upload.in_progress``
    rather than hold a thread longer. Across processes storage decides (the embedded
    store's upload lock, S3's own completion), and the file's ``joining_since`` mark tells
    a complete that finds the upload closed and no object yet that another process is
    joining it (409 ``upload.in_progress``, not "not received"); a complete that finds the
    upload joined already answers the object joined from it.
    """
    upload_id = record.upload_id
    assert upload_id is not None
    with _joined:
        if not _joined.wait_for(lambda: upload_id not in _joining, timeout=JOIN_WAIT):
            raise BrokerError(
                "upload.in_progress",
                "Another request is joining this upload's parts; complete again shortly.",
            )
        done = _recent.get(upload_id)
        if done is not None:
            return done
        _joining.add(upload_id)
    info: ObjectInfo | None = None
    try:
        info = _join(ctx, record, claimed)
        return info
    finally:
        with _joined:
            _joining.discard(upload_id)
            if info is not None:
                _recent[upload_id] = info
                while len(_recent) > _RECENT:
                    _recent.popitem(last=False)
            _joined.notify_all()


def _join(ctx: Context, record: FileRecord, claimed: list[Mapping[str, Any]] | None) -> ObjectInfo:
    """``join_parts``, once this process holds the upload."""
    assert record.upload_id is not None
    assert record.part_size is not None
    assert ctx.multipart is not None
    stored = ctx.multipart.list_parts(record.storage_key, record.upload_id)
    if stored is None:
        # Not open: another complete may have joined it a moment ago, or be joining it.
        info = ctx.storage.head(record.storage_key)
        if info is None:
            raise _closed(ctx, record)
        return info
    planned = plan(record.size, record.part_size)
    have = {part.part_number: part for part in received(planned, stored)}
    if claimed is not None:
        _check_claimed([p.number for p in planned], claimed, have)
    if not have:
        # No part: nothing was sent yet, or another complete has just joined them all.
        joined = ctx.storage.head(record.storage_key) if not stored else None
        if joined is not None:
            return joined
        raise BrokerError(
            "upload.not_received",
            f"Storage holds no part of file {record.id} yet; PUT the parts first.",
        )
    absent = missing(planned, list(have.values()))
    if absent:
        odd = sorted({part.part_number for part in stored} & set(absent))
        raise BrokerError(
            "upload.part_missing",
            f"Storage has not received part(s) {numbers_text(absent)} of file {record.id}"
            + (f" (part(s) {numbers_text(odd)} arrived with another length)." if odd else "."),
            details={"missing_parts": absent},
        )
    _mark_joining(ctx, record, ctx.now())
    try:
        return ctx.multipart.finish_multipart(
            record.storage_key, record.upload_id, [have[p.number] for p in planned]
        )
    except StorageUnavailable:
        raise  # storage may finish the join all the same: the mark stands until its bound
    except BrokerError as refused:
        _mark_joining(ctx, record, None)
        if refused.code == "upload.not_received":
            raise _closed(ctx, record) from None
        raise


def join_bound(ctx: Context) -> int:
    """Seconds a join may be under way in storage: its call's bound, twice (the call that
    joins, then the HEAD of the object), and the wait of a complete in its process."""
    return math.ceil(2 * ctx.settings.storage_timeout + JOIN_WAIT)


def _mark_joining(ctx: Context, record: FileRecord, since: int | None) -> None:
    """Tell completes in every process that this one is joining the parts (or no more)."""
    ctx.store.transition(
        record.tenant, record.id, Status.PENDING, Status.PENDING,
        joining_since=since, updated_at=ctx.now(),
    )  # fmt: skip


def _closed(ctx: Context, record: FileRecord) -> BrokerError:
    """The answer when the upload is closed in storage and no object is there (yet): 409
    ``upload.in_progress`` while a complete joins it in some process, else not received."""
    current = ctx.store.get_file(record.tenant, record.id)
    since = current.joining_since if current is not None else None
    if since is not None and ctx.now() - since <= join_bound(ctx):
        return BrokerError(
            "upload.in_progress",
            "Another request is joining this upload's parts; complete again shortly.",
        )
    return BrokerError(
        "upload.not_received", f"File {record.id}'s multipart upload is not open in storage."
    )


def _check_claimed(
    planned: list[int], claimed: list[Mapping[str, Any]], stored: Mapping[int, StoredPart]
) -> None:
    """The client's part list must name each planned part once, with storage's ETag
    (as S3 answers InvalidPart, a part whose ETag storage does not hold is missing)."""
    numbers = [int(part["part_number"]) for part in claimed]
    unknown = sorted(set(numbers) - set(planned))
    if unknown:
        raise BrokerError(
            "upload.parts_mismatch",
            f"This file's parts are 1-{len(planned)}; not {numbers_text(unknown)}.",
            details={"parts": [f"Not in this file's plan: {numbers_text(unknown)}."]},
        )
    if len(set(numbers)) != len(numbers):
        raise validation_error({"parts": "Each part number may appear once."})
    unlisted = sorted(set(planned) - set(numbers))
    if unlisted:
        raise BrokerError(
            "upload.part_missing",
            f"The list of parts lacks part(s) {numbers_text(unlisted)}.",
            details={"missing_parts": unlisted},
        )
    for part in claimed:
        held = stored.get(int(part["part_number"]))
        if held is not None and str(part["etag"]).strip('"') != held.etag:
            raise BrokerError(
                "upload.part_missing",
                f"Storage holds part {held.part_number} with ETag {held.etag!r}, not "
                f"{part['etag']!r}: send the part again, or complete with storage's ETag.",
                details={"missing_parts": [held.part_number]},
            )


class PartReissue(UseCase):
    """``reissue``: fresh part URLs for a pending multipart upload (resume)."""

    def reissue(
        self,
        principal: Principal,
        file_id: str,
        part_numbers: list[int] | None = None,
        expires_in: int | None = None,
    ) -> FileView:
        """Sign the parts not yet received (or those asked for) again; the file's expiry
        moves out to theirs."""
        require(principal, Scope.FILES_WRITE, token=True)
        ctx = self.ctx
        record = ctx.file(principal, file_id)
        if record.status is not Status.PENDING:
            raise BrokerError(
                "upload.not_pending", f"File {record.id} is {record.status.value}, not pending."
            )
        if record.part_size is None or record.upload_id is None or ctx.multipart is None:
            raise BrokerError("upload.not_multipart", "This file is not uploaded in parts.")
        planned = plan(record.size, record.part_size)
        stored = ctx.multipart.list_parts(record.storage_key, record.upload_id)
        if stored is None:
            raise BrokerError(
                "upload.not_pending", f"File {record.id}'s multipart upload is no longer open."
            )
        have = received(planned, stored)
        if part_numbers is None:
            part_numbers = missing(planned, have)
        else:
            unknown = sorted(set(part_numbers) - {p.number for p in planned})
            if unknown:
                raise BrokerError(
                    "upload.parts_mismatch",
                    f"This file's parts are 1-{len(planned)}; not {numbers_text(unknown)}.",
                    details={
                        "part_numbers": [f"Not in this file's plan: {numbers_text(unknown)}."]
                    },
                )
        now = ctx.now()
        ttl = min(expires_in or ctx.settings.upload_ttl, ctx.policy_of(record).max_url_ttl)
        expires_at = max(record.expires_at, now + ttl)
        if not ctx.store.extend(record.tenant, record.id, expires_at, updated_at=now):
            return self.views.view(ctx.file(principal, file_id))
        record = replace(record, expires_at=expires_at, updated_at=now)
        return FileView(
            record=record,
            offset=sum(part.size for part in have),
            upload=self.views.parts(record, wanted=set(part_numbers)),
            parts_received=have,
        )
