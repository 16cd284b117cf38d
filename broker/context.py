"""What every use case works with: settings, the metadata store, storage and its abilities,
the clock, and the lookups they share (a bucket's policy, a tenant's file, a valid key)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import BucketPolicy, Clock, Settings
from .db import MetadataStore
from .errors import BrokerError
from .links import DownloadLinks
from .models import FileRecord, Principal
from .naming import MAX_DECLARED_KEY, MAX_KEY_BYTES, InvalidKey, normalise_key
from .quotas import PendingQuota
from .storage.base import MultipartStorage, Storage, StreamingStorage


@dataclass(frozen=True)
class Context:
    """The parts a use case needs; one per app (or CLI run), shared by every thread."""

    settings: Settings
    store: MetadataStore
    storage: Storage
    links: DownloadLinks
    clock: Clock
    multipart: MultipartStorage | None = field(init=False)
    """Storage's multipart ability, or None when it has none."""
    streaming: StreamingStorage | None = field(init=False)
    """Storage's ability to take a stream (proxied uploads), or None."""
    quota: PendingQuota = field(init=False)
    """The tenants' quotas of pending uploads (one per process: it remembers usage)."""

    def __post_init__(self) -> None:
        # Ask for each ability once: a runtime Protocol check is too slow per request.
        storage = self.storage
        multipart = storage if isinstance(storage, MultipartStorage) else None
        streaming = storage if isinstance(storage, StreamingStorage) else None
        object.__setattr__(self, "multipart", multipart)
        object.__setattr__(self, "streaming", streaming)
        quota = PendingQuota(
            self.store,
            max_files=self.settings.quota_pending_files,
            max_bytes=self.settings.quota_pending_bytes,
        )
        object.__setattr__(self, "quota", quota)

    def now(self) -> int:
        """Current time in whole seconds, from the injectable clock."""
        return int(self.clock())

    # -- the shared lookups -------------------------------------------------------------------

    def bucket(self, name: str) -> BucketPolicy:
        """A configured bucket's policy (404 ``bucket.not_found`` otherwise)."""
        policy = self.settings.buckets.get(name)
        if policy is None:
            raise BrokerError("bucket.not_found", f"No bucket {name!r}.")
        return policy

    def policy_of(self, record: FileRecord) -> BucketPolicy:
        """The policy a file's bucket has now; a bucket dropped from the configuration
        still serves the files it holds, under the default policy."""
        return self.settings.buckets.get(record.bucket) or BucketPolicy(record.bucket)

    def file(self, principal: Principal, file_id: str) -> FileRecord:
        """The principal's tenant's file (404 ``file.not_found``, also for another tenant's,
        and for a browser token, for any file it did not declare)."""
        record = self.store.get_file(principal.tenant, file_id)
        if record is None or not _sees(principal, record):
            raise BrokerError("file.not_found", f"No file {file_id} in this tenant.")
        return record

    def file_by_key(self, principal: Principal, bucket: str, key: str) -> FileRecord:
        """The file holding ``key`` in ``bucket`` (the live one, else the newest)."""
        self.bucket(bucket)
        record = self.store.get_file_by_key(principal.tenant, bucket, self.key(key))
        if record is None or not _sees(principal, record):
            raise BrokerError("file.not_found", f"No file with key {key!r} in {bucket!r}.")
        return record

    @staticmethod
    def key(raw: str, *, namespace: str | None = None) -> str:
        """A client's key normalised against traversal (422 ``key.invalid``); with the
        ``namespace`` it is stored under (``{tenant}/{bucket}/{file id}``), also refused when
        the storage key would be over S3's 1,024 UTF-8 bytes (storage could never hold it)."""
        try:
            key = normalise_key(raw)
            if namespace is not None and len(key) > MAX_DECLARED_KEY:
                raise InvalidKey(f"the key is longer than {MAX_DECLARED_KEY} characters")
            if (
                namespace is not None
                and len(namespace.encode()) + 1 + len(key.encode()) > MAX_KEY_BYTES
            ):
                raise InvalidKey(
                    f"the storage key '{namespace}/<key>' would be longer than "
                    f"{MAX_KEY_BYTES} UTF-8 bytes"
                )
        except InvalidKey as exc:
            raise BrokerError(
                "key.invalid", f"Invalid key: {exc}.", details={"key": [str(exc)]}
            ) from None
        return key

    # -- storage actions more than one use case takes ----------------------------------------

    def free(self, record: FileRecord) -> None:
        """Remove whatever storage holds for a file: its open upload and its object."""
        self.abandon_upload(record)
        self.storage.delete(record.storage_key)

    def abandon_upload(self, record: FileRecord) -> None:
        """Abort the file's multipart upload, if it has one."""
        if record.upload_id is not None and self.multipart is not None:
            self.multipart.abort_multipart(record.storage_key, record.upload_id)


def _sees(principal: Principal, record: FileRecord) -> bool:
    """Whether a file of the principal's tenant is the principal's to see: a key sees them
    all, a browser token only those it declared."""
    return principal.token is None or record.token_id == principal.token.id
