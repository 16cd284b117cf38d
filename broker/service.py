"""The use cases: declare, complete, read, list, delete files; manage keys; serve blobs.

Views call these and nothing else; this layer decides, the metadata store remembers, the
storage adapter holds bytes. Completion is judged on what storage reports, never on what
the client says.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import IO, Any

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
    Principal,
    Scope,
    Status,
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
from .schemas import render_file
from .storage import LocalStorage, ObjectInfo, Storage
from .storage.local import GetGrant, LocatedBlob

log = logging.getLogger("broker.service")

_IDEMPOTENCY_KEY_MAX = 255


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
        storage: Storage,
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
        fingerprint = None
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= _IDEMPOTENCY_KEY_MAX:
                raise validation_error({"Idempotency-Key": "Must be 1-255 characters."})
            fingerprint = hashlib.sha256(
                json.dumps(request, sort_keys=True, default=str).encode()
            ).hexdigest()
            earlier = self._replay(principal, idempotency_key, fingerprint, now)
            if earlier is not None:
                return earlier

        policy = self._policy(request["bucket"])
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
        if request.get("multipart"):
            raise validation_error(
                {"multipart": "Multipart uploads are not available in this version."}
            )
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
        view = FileView(
            record=record,
            offset=0,
            upload=self._upload(record),
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
            self.store.insert_file(record, answer)
        except IdempotencyConflict:
            assert idempotency_key is not None
            assert fingerprint is not None
            earlier = self._replay(principal, idempotency_key, fingerprint, now)
            if earlier is None:
                raise BrokerError("idempotency.in_progress") from None
            return earlier
        except KeyExists:
            raise BrokerError(
                "file.key_exists",
                f"Bucket {policy.name!r} already has a file with key {key!r}.",
            ) from None
        DECLARED.labels(bucket=policy.name).inc()
        return Declared(body=body, replayed=False)

    def _replay(
        self, principal: Principal, idempotency_key: str, fingerprint: str, now: int
    ) -> Declared | None:
        answer = self.store.get_answer(principal.tenant, idempotency_key, now)
        if answer is None:
            return None
        if answer.fingerprint != fingerprint:
            raise BrokerError("idempotency.mismatch")
        return Declared(body=answer.response, replayed=True)

    # -- files: complete ----------------------------------------------------------------------

    def complete(
        self, principal: Principal, file_id: str, parts: list[Mapping[str, Any]] | None = None
    ) -> FileView:
        """Check storage against the declaration; complete, or fail and delete the object."""
        require(principal, Scope.FILES_WRITE)
        record = self._file(principal, file_id)
        if record.status is Status.COMPLETE:
            return self._view(record)
        if record.status is not Status.PENDING:
            raise BrokerError(
                "upload.not_pending", f"File {record.id} is {record.status.value}; upload again."
            )
        if parts:
            raise validation_error({"parts": "This file was not uploaded in parts."})
        info = self.storage.head(record.storage_key)
        if info is None:
            raise BrokerError(
                "upload.not_received",
                f"Nothing is stored for file {record.id} yet; PUT the bytes first.",
            )
        mismatch = self._mismatch(record, info)
        now = self.now()
        if mismatch is not None:
            code, message = mismatch
            self.storage.delete(record.storage_key)
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
            self.storage.delete(record.storage_key)
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
        self.storage.delete(record.storage_key)
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

    # -- blobs (embedded store only) ----------------------------------------------------------

    def receive_blob(
        self, token: str, *, content_length: int | None, content_type: str | None, body: IO[bytes]
    ) -> ObjectInfo:
        """Accept a PUT to a signed blob URL if it matches the declaration exactly."""
        local = self._local()
        grant = local.grant_put(token)
        return local.receive(
            grant, content_length=content_length, content_type=content_type, body=body
        )

    def locate_blob(self, token: str) -> tuple[GetGrant, LocatedBlob]:
        """Resolve a signed download URL to the stored data (404 while nothing is stored)."""
        local = self._local()
        grant = local.grant_get(token)
        found = local.locate(grant)
        if found is None:
            raise BrokerError("blob.not_found")
        return grant, found

    def _local(self) -> LocalStorage:
        if not isinstance(self.storage, LocalStorage):
            raise BrokerError("route.not_found", "Blob URLs exist only with local storage.")
        return self.storage

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

    def _upload(self, record: FileRecord) -> UploadInstructions:
        return self.storage.presign_put(
            record.storage_key,
            size=record.size,
            content_type=record.mime_type,
            sha256=record.sha256,
            expires_at=record.expires_at,
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
        if record.status is Status.PENDING and probe:
            info = self.storage.head(record.storage_key)
            upload = self._upload(record) if record.expires_at > self.now() else None
            return FileView(record=record, offset=info.size if info else 0, upload=upload)
        return FileView(record=record, offset=0)


def _key_fields(record: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "tenant": record.tenant,
        "name": record.name,
        "scopes": list(record.scopes),
        "created_at": record.created_at,
        "revoked_at": record.revoked_at,
    }
