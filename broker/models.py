"""The records the broker keeps: files, API keys, and the principal a request acts as."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Status(StrEnum):
    """A file's life: pending → complete, or pending → failed/aborted."""

    PENDING = "pending"
    COMPLETE = "complete"
    FAILED = "failed"
    ABORTED = "aborted"


LIVE_STATUSES = (Status.PENDING, Status.COMPLETE)
"""Statuses that hold their key: a failed or aborted file frees it for a new upload."""


class Scope(StrEnum):
    """What an API key may do."""

    FILES_READ = "files:read"
    """Read files: get, download, list, buckets."""
    FILES_WRITE = "files:write"
    """Upload files: declare, complete, abort, re-sign parts, mint browser tokens."""
    FILES_DELETE = "files:delete"
    """Delete files (by id and by key)."""
    ADMIN = "admin"
    """Every scope, and key management."""


DEFAULT_SCOPES = (Scope.FILES_READ, Scope.FILES_WRITE, Scope.FILES_DELETE)
"""What a key created without ``scopes`` gets: what such a key could do before scopes were
split (``files:write`` then also deleted)."""


@dataclass(frozen=True)
class FileRecord:
    """One declared file as the metadata store keeps it."""

    id: str
    tenant: str
    bucket: str
    key: str
    name: str
    mime_type: str
    size: int
    sha256: str | None
    metadata: dict[str, str]
    status: Status
    created_at: int
    updated_at: int
    expires_at: int
    completed_at: int | None = None
    failure_code: str | None = None
    upload_id: str | None = None
    """Storage's multipart upload id while a multipart upload is open, else None."""
    part_size: int | None = None
    """Bytes per part (the last may be shorter) for a multipart upload, else None."""
    proxied: bool = False
    """The bytes come through the broker (a form upload): there is no URL to send them to,
    and the file completes when that upload ends, not on ``complete``."""
    joining_since: int | None = None
    """When a complete began joining this multipart upload's parts in storage: until the
    join ends, other completes (in any process) answer ``upload.in_progress``."""
    token_id: str | None = None
    """The browser token that declared the file (it may read and finish only its own)."""
    object_key: str | None = None
    """The storage key of this file's own object (``object_namespace(...)/key``), so no URL
    signed for it can reach another file's bytes; None for files declared before it was
    kept (migration 0007), whose object is at ``{tenant}/{bucket}/{key}``."""
    etag: str | None = None
    """The ETag of the object that ``complete`` validated; downloads serve only that."""
    version_id: str | None = None
    """Storage's version id of the validated object, where the bucket is versioned."""

    @property
    def multipart(self) -> bool:
        """Whether the bytes go up in parts."""
        return self.part_size is not None

    @property
    def storage_key(self) -> str:
        """Where the bytes live: the file's own object, namespaced by tenant and bucket so
        tenants never meet (files declared before 0007: shared by every file of the key)."""
        return self.object_key or f"{self.tenant}/{self.bucket}/{self.key}"


def object_namespace(tenant: str, bucket: str, file_id: str) -> str:
    """What precedes a file's key in its storage key: ``{tenant}/{bucket}/{file id}``, so
    each file writes its own object and a URL dies with its file."""
    return f"{tenant}/{bucket}/{file_id}"


@dataclass(frozen=True)
class ApiKeyRecord:
    """An API key as stored: its secret only as a SHA-256 hash."""

    id: str
    tenant: str
    name: str | None
    scopes: tuple[str, ...]
    secret_hash: str
    created_at: int
    revoked_at: int | None = None
    expires_at: int | None = None
    """When the key stops working (401 ``auth.expired_key``); None: never."""
    rate_limit: str | None = None
    """Requests this key may make (flask-limiter notation); None: ``BROKER_RATE_LIMIT``."""


@dataclass(frozen=True)
class TokenGrant:
    """What a browser upload token allows: declaring files in one bucket within its limits,
    then finishing and reading those files only. Limits that are None do not apply (the
    bucket's policy still does)."""

    id: str
    bucket: str
    expires_at: int
    key_prefix: str | None = None
    max_size: int | None = None
    mime_types: tuple[str, ...] | None = None
    max_files: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    origin: str | None = None


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: a tenant and the scopes of the key that was presented, or
    the grant of a browser token (then ``key_id`` is its parent key's)."""

    tenant: str
    scopes: frozenset[str]
    key_id: str | None = None
    expires_at: int | None = None
    """When the credential stops working (a token: its own expiry or its parent key's,
    whichever is first); None: never."""
    token: TokenGrant | None = None
    rate_limit: str | None = None
    """The key's own request limit (flask-limiter notation), else None: the default."""

    def can(self, scope: Scope) -> bool:
        """Admin implies every scope."""
        return scope in self.scopes or Scope.ADMIN in self.scopes

    @property
    def subject(self) -> str | None:
        """Who is acting, for limits and logs: ``token:<id>`` or ``key:<id>``; None when
        anonymous (the client's address stands in)."""
        if self.token is not None:
            return f"token:{self.token.id}"
        return None if self.key_id is None else f"key:{self.key_id}"


@dataclass(frozen=True)
class UploadInstructions:
    """How the client sends the bytes: exactly this method, URL and headers."""

    method: str
    url: str
    headers: dict[str, str]
    expires_at: int


@dataclass(frozen=True)
class PartUpload:
    """How the client sends one part: exactly ``size`` bytes from ``offset`` of the file."""

    part_number: int
    offset: int
    size: int
    url: str
    headers: dict[str, str]


@dataclass(frozen=True)
class MultipartInstructions:
    """How the client sends the bytes in parts, each to its own URL, before ``expires_at``."""

    method: str
    part_size: int
    parts: list[PartUpload]
    expires_at: int


@dataclass(frozen=True)
class StoredPart:
    """A part storage has received: its number, length and the ETag storage gave it."""

    part_number: int
    size: int
    etag: str


@dataclass(frozen=True)
class SignedDownload:
    """Where a complete file's bytes can be fetched, until ``expires_at``."""

    url: str
    expires_at: int


@dataclass(frozen=True)
class FileView:
    """A file as the API shows it: the record plus what storage says and fresh URLs."""

    record: FileRecord
    offset: int
    upload: UploadInstructions | MultipartInstructions | None = None
    download_url: str | None = None
    parts_received: list[StoredPart] | None = None
    """For a pending multipart upload: the parts storage holds (what a resume can skip)."""

    @property
    def upload_url(self) -> str | None:
        """The single PUT's URL (None for a multipart upload or when there is none)."""
        return self.upload.url if isinstance(self.upload, UploadInstructions) else None
