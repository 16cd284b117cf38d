"""The use cases: declare, complete, read, list, delete files; manage keys.

Views call these and nothing else; this layer decides, the metadata store remembers, the
storage adapter holds bytes. Completion is judged on what storage reports, never on what
the client says.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .auth import ADMIN_KEY_ID, Authenticator, mint_key, require
from .config import BucketPolicy, Clock, Settings
from .db import IdempotencyConflict, IdempotentAnswer, KeyExists, MetadataStore
from .downloads import DownloadLinks
from .errors import BrokerError, ErrorCode, validation_error
from .ids import decode_cursor, encode_cursor, new_id
from .metrics import COMPLETIONS, DECLARED
from .models import (
    ApiKeyRecord,
    FileRecord,
    FileView,
    MultipartInstructions,
    PartUpload,
    Principal,
    Scope,
    Status,
    StoredPart,
    UploadInstructions,
)
from .naming import (
    InvalidKey,
    content_disposition,
    display_name,
    is_active_content,
    key_from_name,
    normalise_key,
)
from .parts import MAX_SINGLE_PUT, PlannedPart, choose_part_size, plan
from .schemas import render_file
from .storage import InventoryStorage, MultipartStorage, ObjectInfo, Storage, StreamingStorage

log = logging.getLogger("broker.service")

_IDEMPOTENCY_KEY_MAX = 255


class ServiceStorage(Storage, MultipartStorage, StreamingStorage, InventoryStorage, Protocol):
    """The abilities the use cases (and, through the CLI, the reaper) rely on: both adapters
    have them; blob URLs (``SelfServedStorage``) are the HTTP layer's business."""


@dataclass(frozen=True)
class Declared:
    """The answer to a create: the body to send and whether it replays an earlier one."""

    body: Mapping[str, Any]
    replayed: bool


@dataclass(frozen=True)
class Redirect:
    """Answer with a 302 to this URL."""

    url: str


@dataclass(frozen=True)
class Stream:
    """Answer with these bytes and headers (active content from storage without nosniff)."""

    chunks: Iterator[bytes]
    size: int
    content_type: str
    disposition: str


@dataclass(frozen=True)
class FilePage:
    """One page of a listing, newest first."""

    files: list[FileView]
    has_more: bool
    next_cursor: str | None


class Broker:
    """The service layer; one instance per app, shared by every request thread."""

    def __init__(
        self,
        settings: Settings,
        store: MetadataStore,
        storage: ServiceStorage,
        clock: Clock,
        links: DownloadLinks,
    ) -> None:
        self.settings = settings
        self.store = store
        self.storage = storage
        self.clock = clock
        self.links = links
        self.authenticator = Authenticator(
            store, admin_key=settings.admin_key, allow_anonymous=settings.allow_anonymous
        )

    def now(self) -> int:
        """Current time in whole seconds, from the injectable clock."""
        return int(self.clock())

    # -- auth ---------------------------------------------------------------------------------

    def authenticate(self, presented: str | None) -> Principal:
        """The principal for a presented key (401 when missing, unknown or revoked)."""
        return self.authenticator.authenticate(presented)

    # -- files: create ------------------------------------------------------------------------

    def declare(
        self, principal: Principal, request: Mapping[str, Any], idempotency_key: str | None = None
    ) -> Declared:
        """Record a pending file and sign its upload and download URLs."""
        require(principal, Scope.FILES_WRITE)
        now = self.now()
        fingerprint = _fingerprint(idempotency_key, request)

        def replay() -> Declared | None:
            if idempotency_key is None or fingerprint is None:
                return None
            return self._replay(principal, idempotency_key, fingerprint, now)

        earlier = replay()
        if earlier is not None:
            return earlier

        policy = self._policy(request["bucket"])
        multipart = self._admit(policy, request)
        file_id = new_id("file")
        if "key" in request:
            key = self._key(request["key"])
        else:
            key = key_from_name(file_id.removeprefix("file_").lower(), request["name"])
        ttl = min(request.get("expires_in", self.settings.upload_ttl), policy.max_url_ttl)
        record = FileRecord(
            id=file_id,
            tenant=principal.tenant,
            bucket=policy.name,
            key=key,
            name=request["name"],
            mime_type=request["mime_type"],
            size=request["size"],
            sha256=request.get("sha256"),
            metadata=dict(request.get("metadata", {})),
            status=Status.PENDING,
            created_at=now,
            updated_at=now,
            expires_at=now + ttl,
        )
        if multipart:
            record = replace(record, part_size=choose_part_size(record.size, policy.part_size))
            record = replace(
                record,
                upload_id=self.storage.start_multipart(
                    record.storage_key, content_type=record.mime_type
                ),
            )
        view = FileView(
            record=record,
            offset=0,
            upload=self._upload(record),
            parts_received=[] if multipart else None,
            # A link through the broker: it serves nothing until the file is complete.
            download_url=self.links.sign(
                record.tenant,
                record.id,
                min(record.expires_at + self.settings.download_ttl, now + policy.max_url_ttl),
            ),
        )
        body = render_file(view)
        answer = None
        if idempotency_key is not None and fingerprint is not None:
            answer = IdempotentAnswer(
                tenant=principal.tenant,
                key=idempotency_key,
                fingerprint=fingerprint,
                status_code=201,
                response=body,
                created_at=now,
            )
        try:
            earlier = self._insert_pending(record, answer, replay)
        except BaseException:
            self._abandon_upload(record)  # leave no open upload behind a failed create
            raise
        if earlier is not None:
            self._abandon_upload(record)  # the first request's answer stands, not ours
            return earlier
        return Declared(body=body, replayed=False)

    def _insert_pending(
        self,
        record: FileRecord,
        answer: IdempotentAnswer | None,
        replay: Callable[[], Declared | None],
    ) -> Declared | None:
        """Insert a pending file (with its replayable answer); None when it is in.

        When another request took the same Idempotency-Key first, its answer (``replay``),
        or 409 ``idempotency.in_progress`` while it has none yet; a key another live file
        holds is 409 ``file.key_exists``.
        """
        try:
            self.store.insert_file(record, answer)
        except IdempotencyConflict:
            earlier = replay()
            if earlier is None:
                raise BrokerError("idempotency.in_progress") from None
            return earlier
        except KeyExists:
            raise BrokerError(
                "file.key_exists",
                f"Bucket {record.bucket!r} already has a file with key {record.key!r}.",
            ) from None
        DECLARED.labels(bucket=record.bucket).inc()
        return None

    def _abandon_upload(self, record: FileRecord) -> None:
        """Abort the multipart upload a create opened but will not use."""
        if record.upload_id is not None:
            self.storage.abort_multipart(record.storage_key, record.upload_id)

    @staticmethod
    def _admit(policy: BucketPolicy, request: Mapping[str, Any]) -> bool:
        """Check a declaration against the bucket's policy; say whether it goes in parts."""
        if request["size"] > policy.max_size:
            raise BrokerError(
                "upload.size_exceeds_limit",
                f"{request['size']} bytes exceeds bucket {policy.name!r}'s limit of "
                f"{policy.max_size} bytes.",
                details={"size": [f"Must be at most {policy.max_size}."]},
            )
        if not policy.allows(request["mime_type"]):
            raise BrokerError(
                "upload.mime_type_not_allowed",
                f"Bucket {policy.name!r} does not accept {request['mime_type']!r}.",
                details={"mime_type": [f"Allowed: {', '.join(policy.allowed_mime_types)}."]},
            )
        size: int = request["size"]
        multipart = bool(request.get("multipart")) or size > min(
            policy.multipart_threshold, MAX_SINGLE_PUT
        )
        if multipart and size == 0:
            raise validation_error({"multipart": "An empty file cannot be sent in parts."})
        return multipart

    def _recorded(
        self, principal: Principal, idempotency_key: str, fingerprint: str, now: int
    ) -> IdempotentAnswer | None:
        """The answer recorded under this Idempotency-Key, if any (422 for another request)."""
        answer = self.store.get_answer(principal.tenant, idempotency_key, now)
        if answer is not None and answer.fingerprint != fingerprint:
            raise BrokerError("idempotency.mismatch")
        return answer

    def _replay(
        self, principal: Principal, idempotency_key: str, fingerprint: str, now: int
    ) -> Declared | None:
        answer = self._recorded(principal, idempotency_key, fingerprint, now)
        return None if answer is None else Declared(body=answer.response, replayed=True)

    # -- files: proxied upload ----------------------------------------------------------------

    def receive_form(
        self,
        principal: Principal,
        request: Mapping[str, Any],
        chunks: Iterable[bytes],
        idempotency_key: str | None = None,
    ) -> Declared:
        """Store a file whose bytes come through the broker; answer it complete.

        The same checks as a declaration (bucket, size and type policy, key) run before a
        byte is read; a pending row reserves the key; storage takes the stream in bounded
        memory and refuses a body over the bucket's limit, of another ``size`` or SHA-256;
        only then is the file complete. On any failure (a lie, a cut-off body, storage
        down) nothing is left in storage and the file is ``failed``, never pending.

        With an ``Idempotency-Key``, a retry of an upload that completed answers that file
        again; one still in progress is 409; one that failed does not bind the key, so the
        retry is a fresh attempt.
        """
        require(principal, Scope.FILES_WRITE)
        now = self.now()
        fingerprint = _fingerprint(idempotency_key, {"form": request})

        def replay() -> Declared | None:
            if idempotency_key is None or fingerprint is None:
                return None
            return self._replay_form(principal, idempotency_key, fingerprint, now)

        earlier = replay()
        if earlier is not None:
            return earlier

        policy = self._policy(request["bucket"])
        declared_size: int | None = request.get("size")
        self._admit(policy, {**request, "size": declared_size or 0})  # parts never apply here
        file_id = new_id("file")
        if "key" in request:
            key = self._key(request["key"])
        else:
            key = key_from_name(file_id.removeprefix("file_").lower(), request["name"])
        record = FileRecord(
            id=file_id,
            tenant=principal.tenant,
            bucket=policy.name,
            key=key,
            name=request["name"],
            mime_type=request["mime_type"],
            size=declared_size or 0,
            sha256=request.get("sha256"),
            metadata={},
            status=Status.PENDING,
            created_at=now,
            updated_at=now,
            # The reaper may fail a pending file past this; a body still arriving then is
            # refused at the end (below) rather than completing a file the reaper gave up.
            expires_at=now + min(self.settings.upload_ttl, policy.max_url_ttl),
            proxied=True,
        )
        answer = None
        if idempotency_key is not None and fingerprint is not None:
            # What binds the key is the file; a replay answers the file as it is then.
            answer = IdempotentAnswer(
                tenant=principal.tenant,
                key=idempotency_key,
                fingerprint=fingerprint,
                status_code=201,
                response={"id": file_id, "object": "file", "status": Status.PENDING.value},
                created_at=now,
            )
        earlier = self._insert_pending(record, answer, replay)
        if earlier is not None:
            return earlier

        try:
            info = self.storage.put_stream(
                record.storage_key,
                self._keep_pending(record, chunks),
                content_type=record.mime_type,
                max_size=policy.max_size,
                size=declared_size,
                sha256=record.sha256,
            )
        except BaseException as exc:
            self._fail_received(record, exc)
            raise
        now = self.now()
        done = replace(
            record,
            size=info.size,
            sha256=info.sha256 or record.sha256,
            status=Status.COMPLETE,
            completed_at=now,
            updated_at=now,
        )
        moved = self.store.transition(
            record.tenant, record.id, Status.PENDING, Status.COMPLETE,
            size=done.size, sha256=done.sha256, completed_at=now, updated_at=now,
        )  # fmt: skip
        if not moved:
            # Deleted, aborted or reaped while the bytes arrived: keep none of them.
            self.storage.delete(record.storage_key)
            COMPLETIONS.labels(result="upload.not_pending").inc()
            raise BrokerError(
                "upload.not_pending",
                f"File {record.id} was deleted or expired while its bytes arrived.",
            )
        COMPLETIONS.labels(result="complete").inc()
        return Declared(body=render_file(self._view(done)), replayed=False)

    def _keep_pending(self, record: FileRecord, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Pass ``chunks`` on, pushing the file's expiry out while they keep coming, so a
        slow but live upload is not taken for an abandoned one."""
        ttl = record.expires_at - record.created_at
        expires_at = record.expires_at
        for chunk in chunks:
            now = self.now()
            if now > expires_at - ttl // 2:
                expires_at = now + ttl
                self.store.extend(record.tenant, record.id, expires_at, updated_at=now)
            yield chunk

    def _fail_received(self, record: FileRecord, exc: BaseException) -> None:
        """After a refused or interrupted proxied upload: the file is failed, and storage
        holds nothing (the adapter promises that; a storage error may leave it unsure)."""
        code = exc.code if isinstance(exc, BrokerError) else "upload.interrupted"
        if code == "storage.unavailable":
            with contextlib.suppress(BrokerError):
                self.storage.delete(record.storage_key)
        try:
            self.store.transition(
                record.tenant, record.id, Status.PENDING, Status.FAILED,
                failure_code=code, updated_at=self.now(),
            )  # fmt: skip
        except Exception:  # the original error is the answer; the reaper fails it later
            log.exception("could not mark file %s failed", record.id)
        COMPLETIONS.labels(result=code).inc()

    def _replay_form(
        self, principal: Principal, idempotency_key: str, fingerprint: str, now: int
    ) -> Declared | None:
        """The file an earlier proxied upload with this key made, if it completed."""
        answer = self._recorded(principal, idempotency_key, fingerprint, now)
        if answer is None:
            return None
        record = self.store.get_file(principal.tenant, str(answer.response.get("id")))
        if record is not None and record.status is Status.COMPLETE:
            return Declared(body=render_file(self._view(record)), replayed=True)
        if record is not None and record.status is Status.PENDING:
            raise BrokerError("idempotency.in_progress")
        # It failed (or is gone): that attempt stored nothing, so this one starts afresh.
        self.store.forget_answer(answer)
        return None

    # -- files: complete ----------------------------------------------------------------------

    def complete(
        self, principal: Principal, file_id: str, parts: list[Mapping[str, Any]] | None = None
    ) -> FileView:
        """Check storage against the declaration; complete, or fail and delete the object."""
        require(principal, Scope.FILES_WRITE)
        record = self._file(principal, file_id)
        if record.status is Status.COMPLETE:
            return self._view(record)
        if record.failure_code == "upload.expired":
            raise BrokerError("upload.expired", f"File {record.id}'s upload expired.")
        if record.status is not Status.PENDING:
            raise BrokerError(
                "upload.not_pending", f"File {record.id} is {record.status.value}; upload again."
            )
        if record.proxied:
            raise BrokerError(
                "upload.not_received",
                f"File {record.id} is still arriving through the broker; it completes itself.",
            )
        if record.multipart:
            info = self._join_parts(record, parts)
        else:
            if parts:
                raise validation_error({"parts": "This file was not uploaded in parts."})
            found = self.storage.head(record.storage_key)
            if found is None:
                raise BrokerError(
                    "upload.not_received",
                    f"Nothing is stored for file {record.id} yet; PUT the bytes first.",
                )
            info = found
        mismatch = self._mismatch(record, info)
        now = self.now()
        if mismatch is not None:
            code, message = mismatch
            self._free(record)
            self.store.transition(
                record.tenant,
                record.id,
                Status.PENDING,
                Status.FAILED,
                failure_code=code,
                updated_at=now,
            )
            COMPLETIONS.labels(result=code).inc()
            raise BrokerError(code, message)
        moved = self.store.transition(
            record.tenant,
            record.id,
            Status.PENDING,
            Status.COMPLETE,
            completed_at=now,
            updated_at=now,
        )
        if not moved:
            # Someone else completed, aborted or deleted it meanwhile: report what is true now.
            return self._view(self._file(principal, file_id))
        COMPLETIONS.labels(result="complete").inc()
        return self._view(replace(record, status=Status.COMPLETE, completed_at=now, updated_at=now))

    def _join_parts(
        self, record: FileRecord, claimed: list[Mapping[str, Any]] | None
    ) -> ObjectInfo:
        """Check every planned part is in storage with its planned length (and, when the
        client lists parts, that its ETags are storage's), then join them into the object.

        Nothing received yet answers 409 ``upload.not_received``, as for a single PUT. A part
        not received (absent, of another length, or not the copy the client names) answers
        422 ``upload.part_missing`` with ``details.missing_parts``. Either way nothing is
        joined and the file stays pending: the client sends those parts and completes again.
        """
        assert record.upload_id is not None
        assert record.part_size is not None
        stored = self.storage.list_parts(record.storage_key, record.upload_id)
        if stored is None:
            # Not open: another complete may have joined it a moment ago.
            info = self.storage.head(record.storage_key)
            if info is None:
                raise BrokerError(
                    "upload.not_received",
                    f"File {record.id}'s multipart upload is not open in storage.",
                )
            return info
        planned = plan(record.size, record.part_size)
        # A stored part of another length (a peer that does not enforce the signed length,
        # or keeps a cut-off body) is not received; sending that part again replaces it.
        received = {part.part_number: part for part in _received(planned, stored)}
        if claimed is not None:
            self._check_claimed(planned_numbers=[p.number for p in planned], claimed=claimed,
                                stored=received)  # fmt: skip
        if not received:
            raise BrokerError(
                "upload.not_received",
                f"Storage holds no part of file {record.id} yet; PUT the parts first.",
            )
        missing = _missing(planned, list(received.values()))
        if missing:
            odd = sorted({part.part_number for part in stored} & set(missing))
            raise BrokerError(
                "upload.part_missing",
                f"Storage has not received part(s) {_numbers(missing)} of file {record.id}"
                + (f" (part(s) {_numbers(odd)} arrived with another length)." if odd else "."),
                details={"missing_parts": missing},
            )
        return self.storage.finish_multipart(
            record.storage_key, record.upload_id, [received[p.number] for p in planned]
        )

    @staticmethod
    def _check_claimed(
        *,
        planned_numbers: list[int],
        claimed: list[Mapping[str, Any]],
        stored: Mapping[int, StoredPart],
    ) -> None:
        """The client's part list must name each planned part once, with storage's ETag
        (as S3 answers InvalidPart, a part whose ETag storage does not hold is missing)."""
        numbers = [int(part["part_number"]) for part in claimed]
        unknown = sorted(set(numbers) - set(planned_numbers))
        if unknown:
            raise validation_error(
                {"parts": f"Parts are 1-{len(planned_numbers)}; not {_numbers(unknown)}."}
            )
        if len(set(numbers)) != len(numbers):
            raise validation_error({"parts": "Each part number may appear once."})
        unlisted = sorted(set(planned_numbers) - set(numbers))
        if unlisted:
            raise BrokerError(
                "upload.part_missing",
                f"The list of parts lacks part(s) {_numbers(unlisted)}.",
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

    def reissue_parts(
        self,
        principal: Principal,
        file_id: str,
        part_numbers: list[int] | None = None,
        expires_in: int | None = None,
    ) -> FileView:
        """Fresh part URLs for a pending multipart upload (all parts not yet received, or
        the ones asked for); the file's expiry moves out to theirs."""
        require(principal, Scope.FILES_WRITE)
        record = self._file(principal, file_id)
        if record.status is not Status.PENDING:
            raise BrokerError(
                "upload.not_pending", f"File {record.id} is {record.status.value}, not pending."
            )
        if not record.multipart or record.part_size is None or record.upload_id is None:
            raise validation_error({"part_numbers": "This file is not uploaded in parts."})
        planned = plan(record.size, record.part_size)
        stored = self.storage.list_parts(record.storage_key, record.upload_id)
        if stored is None:
            raise BrokerError(
                "upload.not_pending", f"File {record.id}'s multipart upload is no longer open."
            )
        stored = _received(planned, stored)
        if part_numbers is None:
            part_numbers = _missing(planned, stored)
        else:
            unknown = sorted(set(part_numbers) - {p.number for p in planned})
            if unknown:
                raise validation_error(
                    {"part_numbers": f"Parts are 1-{len(planned)}; not {_numbers(unknown)}."}
                )
        policy = self.settings.buckets.get(record.bucket) or BucketPolicy(record.bucket)
        now = self.now()
        ttl = min(expires_in or self.settings.upload_ttl, policy.max_url_ttl)
        expires_at = max(record.expires_at, now + ttl)
        if not self.store.extend(record.tenant, record.id, expires_at, updated_at=now):
            return self._view(self._file(principal, file_id))
        record = replace(record, expires_at=expires_at, updated_at=now)
        return FileView(
            record=record,
            offset=sum(part.size for part in stored),
            upload=self._multipart_upload(record, wanted=set(part_numbers)),
            parts_received=stored,
        )

    def _free(self, record: FileRecord) -> None:
        """Remove whatever storage holds for a file: its object and any open upload."""
        if record.upload_id is not None:
            self.storage.abort_multipart(record.storage_key, record.upload_id)
        self.storage.delete(record.storage_key)

    def _mismatch(self, record: FileRecord, info: ObjectInfo) -> tuple[ErrorCode, str] | None:
        """The first way the stored object differs from the declaration, or None."""
        if info.size != record.size:
            return (
                "upload.size_mismatch",
                f"Storage holds {info.size} bytes; {record.size} were declared.",
            )
        if info.content_type.lower() != record.mime_type.lower():
            return (
                "upload.type_mismatch",
                f"Storage holds {info.content_type!r}; {record.mime_type!r} was declared.",
            )
        if record.sha256 is not None:
            actual = info.sha256
            if actual is None:
                # Storage did not verify it: hash the object ourselves, in bounded memory.
                hasher = hashlib.sha256()
                for chunk in self.storage.iter_bytes(record.storage_key):
                    hasher.update(chunk)
                actual = hasher.hexdigest()
            if actual != record.sha256:
                return ("upload.checksum_mismatch", "The stored bytes' SHA-256 differs.")
        return None

    # -- files: read --------------------------------------------------------------------------

    def get(self, principal: Principal, file_id: str) -> FileView:
        """One file with what storage has received so far and fresh URLs."""
        require(principal, Scope.FILES_READ)
        return self._view(self._file(principal, file_id))

    def get_by_key(self, principal: Principal, bucket: str, key: str) -> FileView:
        """Like ``get``, addressed by bucket and key."""
        require(principal, Scope.FILES_READ)
        return self._view(self._file_by_key(principal, bucket, key))

    def download_url(self, principal: Principal, file_id: str) -> str:
        """A fresh signed GET URL for a complete file (409 while pending)."""
        require(principal, Scope.FILES_READ)
        record = self._file(principal, file_id)
        if record.status is not Status.COMPLETE:
            raise BrokerError(
                "upload.not_received", f"File {record.id} is {record.status.value}, not complete."
            )
        policy = self.settings.buckets.get(record.bucket) or BucketPolicy(record.bucket)
        return self._download_url(record, policy)

    def list_files(
        self,
        principal: Principal,
        bucket: str,
        *,
        limit: int,
        after: str | None = None,
        prefix: str | None = None,
        status: str | None = None,
    ) -> FilePage:
        """A page of the tenant's files in a bucket, newest first, by keyset cursor."""
        require(principal, Scope.FILES_READ)
        self._policy(bucket)
        after_id = None
        if after is not None:
            after_id = decode_cursor(after)
            if after_id is None:
                raise validation_error({"after": "Not a cursor this API returned."})
        records = self.store.list_files(
            principal.tenant,
            bucket,
            limit=limit + 1,
            after_id=after_id,
            prefix=prefix,
            status=Status(status) if status else None,
        )
        has_more = len(records) > limit
        records = records[:limit]
        return FilePage(
            files=[self._view(r, probe=False) for r in records],
            has_more=has_more,
            next_cursor=encode_cursor(records[-1].id) if has_more else None,
        )

    def buckets(self, principal: Principal) -> list[dict[str, Any]]:
        """Every bucket's policy with the tenant's live file count."""
        require(principal, Scope.FILES_READ)
        counts = self.store.live_counts(principal.tenant)
        return [
            {
                "name": p.name,
                "max_size": p.max_size,
                "allowed_mime_types": list(p.allowed_mime_types),
                "max_url_ttl": p.max_url_ttl,
                "multipart_threshold": p.multipart_threshold,
                "part_size": p.part_size,
                "file_count": counts.get(p.name, 0),
            }
            for p in self.settings.buckets.values()
        ]

    # -- files: delete, abort -----------------------------------------------------------------

    def delete(self, principal: Principal, file_id: str) -> FileView:
        """Remove the object, then the row; answer the file as it was."""
        require(principal, Scope.FILES_WRITE)
        return self._delete(self._file(principal, file_id))

    def delete_by_key(self, principal: Principal, bucket: str, key: str) -> FileView:
        """Like ``delete``, addressed by bucket and key."""
        require(principal, Scope.FILES_WRITE)
        return self._delete(self._file_by_key(principal, bucket, key))

    def _delete(self, record: FileRecord) -> FileView:
        # Storage first: if it fails the row stays and a retry finishes the job. The other
        # order could leave bytes that no row points at.
        if record.status in (Status.PENDING, Status.COMPLETE):
            self._free(record)
        if not self.store.delete_file(record.tenant, record.id):
            raise BrokerError("file.not_found", f"No file {record.id} in this tenant.")
        offset = record.size if record.status is Status.COMPLETE else 0
        return FileView(record=record, offset=offset)

    def abort(self, principal: Principal, file_id: str) -> FileView:
        """Give up a pending upload: free what storage holds and mark it aborted."""
        require(principal, Scope.FILES_WRITE)
        record = self._file(principal, file_id)
        if record.status is Status.ABORTED:
            return self._view(record)
        if record.status is Status.COMPLETE:
            raise BrokerError("upload.already_complete", f"File {record.id} is complete.")
        if record.status is not Status.PENDING:
            raise BrokerError("upload.not_pending", f"File {record.id} is {record.status.value}.")
        self._free(record)
        now = self.now()
        if not self.store.transition(
            record.tenant, record.id, Status.PENDING, Status.ABORTED, updated_at=now
        ):
            return self._view(self._file(principal, file_id))
        return self._view(replace(record, status=Status.ABORTED, updated_at=now))

    # -- keys ---------------------------------------------------------------------------------

    def create_key(
        self, principal: Principal, tenant: str, name: str | None, scopes: list[str] | None
    ) -> dict[str, Any]:
        """Mint a key for a tenant (admin only); the answer is the only time it is shown."""
        require(principal, Scope.ADMIN)
        record, key = mint_key(tenant, name, tuple(dict.fromkeys(scopes or ())), self.now())
        self.store.insert_key(record)
        return {**_key_fields(record), "key": key}

    def list_keys(self, principal: Principal, tenant: str | None) -> list[dict[str, Any]]:
        """Every key (never a secret), optionally of one tenant (admin only)."""
        require(principal, Scope.ADMIN)
        return [_key_fields(r) for r in self.store.list_keys(tenant)]

    def revoke_key(self, principal: Principal, key_id: str) -> dict[str, Any]:
        """Revoke a key at once (admin only); revoking twice answers the same."""
        require(principal, Scope.ADMIN)
        record = self.store.get_key(key_id) if key_id != ADMIN_KEY_ID else None
        if record is None:
            raise BrokerError("key.not_found", f"No API key {key_id}.")
        if record.revoked_at is None:
            now = self.now()
            self.store.revoke_key(key_id, now)
            record = replace(record, revoked_at=now)
        return _key_fields(record)

    # -- download links -----------------------------------------------------------------------

    def open_download(self, token: str) -> Redirect | Stream:
        """Resolve a download link: 409 until complete; then a redirect to storage, or the
        bytes themselves for active content that storage cannot mark ``nosniff``."""
        grant = self.links.verify(token)
        record = self.store.get_file(grant.tenant, grant.file_id)
        if record is None:
            raise BrokerError("file.not_found", f"No file {grant.file_id}.")
        if record.status is not Status.COMPLETE:
            raise BrokerError(
                "upload.not_received", f"File {record.id} is {record.status.value}, not complete."
            )
        if not (is_active_content(record.mime_type) and not self.storage.serves_nosniff):
            policy = self.settings.buckets.get(record.bucket) or BucketPolicy(record.bucket)
            return Redirect(self._download_url(record, policy))
        chunks = self.storage.iter_bytes(record.storage_key)
        try:  # open it now, so a missing object is an error answer, not a cut-off body
            first = next(chunks, b"")
        except FileNotFoundError:
            raise BrokerError(
                "file.not_found", f"File {record.id} has no bytes in storage."
            ) from None
        return Stream(
            chunks=itertools.chain([first], chunks),
            size=record.size,
            content_type=record.mime_type,
            disposition=content_disposition(display_name(record.name), attachment=True),
        )

    # -- health -------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """200 when the database and storage answer; their 503 error otherwise."""
        self.store.db.ping()
        self.storage.ping()
        return {"status": "ok", "checks": {"database": "ok", "storage": "ok"}}

    # -- helpers ------------------------------------------------------------------------------

    def _policy(self, bucket: str) -> BucketPolicy:
        policy = self.settings.buckets.get(bucket)
        if policy is None:
            raise BrokerError("bucket.not_found", f"No bucket {bucket!r}.")
        return policy

    @staticmethod
    def _key(raw: str) -> str:
        try:
            return normalise_key(raw)
        except InvalidKey as exc:
            raise BrokerError(
                "key.invalid", f"Invalid key: {exc}.", details={"key": [str(exc)]}
            ) from None

    def _file(self, principal: Principal, file_id: str) -> FileRecord:
        record = self.store.get_file(principal.tenant, file_id)
        if record is None:
            raise BrokerError("file.not_found", f"No file {file_id} in this tenant.")
        return record

    def _file_by_key(self, principal: Principal, bucket: str, key: str) -> FileRecord:
        self._policy(bucket)
        record = self.store.get_file_by_key(principal.tenant, bucket, self._key(key))
        if record is None:
            raise BrokerError("file.not_found", f"No file with key {key!r} in {bucket!r}.")
        return record

    def _upload(self, record: FileRecord) -> UploadInstructions | MultipartInstructions:
        if record.multipart:
            return self._multipart_upload(record)
        return self.storage.presign_put(
            record.storage_key,
            size=record.size,
            content_type=record.mime_type,
            sha256=record.sha256,
            expires_at=record.expires_at,
        )

    def _multipart_upload(
        self, record: FileRecord, wanted: set[int] | None = None
    ) -> MultipartInstructions:
        """Signed part URLs (every part, or those in ``wanted``), each binding its length."""
        assert record.upload_id is not None
        assert record.part_size is not None
        parts = []
        for planned in plan(record.size, record.part_size):
            if wanted is not None and planned.number not in wanted:
                continue
            signed = self.storage.presign_part(
                record.storage_key,
                record.upload_id,
                part_number=planned.number,
                size=planned.size,
                expires_at=record.expires_at,
            )
            parts.append(
                PartUpload(
                    part_number=planned.number,
                    offset=planned.offset,
                    size=planned.size,
                    url=signed.url,
                    headers=signed.headers,
                )
            )
        return MultipartInstructions(
            method="PUT", part_size=record.part_size, parts=parts, expires_at=record.expires_at
        )

    def _download_url(self, record: FileRecord, policy: BucketPolicy) -> str:
        """A fresh URL for a complete file: storage's own, unless storage cannot serve it
        safely (active content without nosniff), then the broker's streaming link."""
        until = self.now() + min(self.settings.download_ttl, policy.max_url_ttl)
        if is_active_content(record.mime_type) and not self.storage.serves_nosniff:
            return self.links.sign(record.tenant, record.id, until)
        return self.storage.presign_get(
            record.storage_key,
            filename=display_name(record.name),
            content_type=record.mime_type,
            attachment=is_active_content(record.mime_type),
            expires_at=until,
        )

    def _view(self, record: FileRecord, *, probe: bool = True) -> FileView:
        """The API's view of a record: storage's offset while pending, fresh URLs.

        Listings pass ``probe=False``: a page must not cost one storage round trip per
        pending file, so there a pending file shows offset 0 and no upload section; GET
        of the file itself asks storage.
        """
        if record.status is Status.COMPLETE:
            # A bucket dropped from the configuration still serves the files it holds.
            policy = self.settings.buckets.get(record.bucket) or BucketPolicy(record.bucket)
            return FileView(
                record=record, offset=record.size, download_url=self._download_url(record, policy)
            )
        if record.status is Status.PENDING and probe and record.upload_id is not None:
            planned = plan(record.size, record.part_size or record.size)
            stored = _received(
                planned, self.storage.list_parts(record.storage_key, record.upload_id) or []
            )
            missing = set(_missing(planned, stored))
            return FileView(
                record=record,
                offset=sum(part.size for part in stored),
                upload=self._multipart_upload(record, wanted=missing)
                if record.expires_at > self.now()
                else None,
                parts_received=stored,
            )
        if record.status is Status.PENDING and record.proxied:
            return FileView(record=record, offset=0)  # arriving through the broker: no URL
        if record.status is Status.PENDING and probe:
            info = self.storage.head(record.storage_key)
            upload = self._upload(record) if record.expires_at > self.now() else None
            return FileView(record=record, offset=info.size if info else 0, upload=upload)
        return FileView(record=record, offset=0)


def _fingerprint(idempotency_key: str | None, payload: Any) -> str | None:
    """What identifies a request under an Idempotency-Key (None without a key)."""
    if idempotency_key is None:
        return None
    if not 1 <= len(idempotency_key) <= _IDEMPOTENCY_KEY_MAX:
        raise validation_error({"Idempotency-Key": "Must be 1-255 characters."})
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _received(planned: list[PlannedPart], stored: list[StoredPart]) -> list[StoredPart]:
    """The stored parts that count as received: planned, and of their planned length."""
    sizes = {p.number: p.size for p in planned}
    return [part for part in stored if sizes.get(part.part_number) == part.size]


def _missing(planned: list[PlannedPart], received: list[StoredPart]) -> list[int]:
    """The numbers of the planned parts not among ``received``."""
    have = {part.part_number for part in received}
    return [p.number for p in planned if p.number not in have]


def _numbers(numbers: list[int]) -> str:
    """``1, 2, 5`` (at most ten, then an ellipsis) for messages."""
    shown = ", ".join(str(n) for n in numbers[:10])
    return shown + (", …" if len(numbers) > 10 else "")


def _key_fields(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "tenant": record.tenant,
        "name": record.name,
        "scopes": list(record.scopes),
        "created_at": record.created_at,
        "revoked_at": record.revoked_at,
    }
