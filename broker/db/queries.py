"""Every query the service runs (``MetadataStore``), each one transaction, scoped by tenant."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import ClauseElement, Executable

from ..models import ApiKeyRecord, FileRecord, Status
from .engine import Database
from .prepared import Prepared
from .records import (
    FILE_KEYS,
    IDEMPOTENCY_TTL,
    IdempotencyConflict,
    IdempotentAnswer,
    KeyExists,
    TokenFilesExhausted,
    answer_from,
    answer_params,
    columns,
    file_from,
    file_params,
    key_from,
    key_params,
)
from .tables import LIVE, api_keys, files, idempotency

# Statements are built once; executed with a parameter dict they are found in SQLAlchemy's
# compiled cache without building or hashing a new construct per call. UPDATE statements
# name their WHERE parameters ``where_*``: a column's own key sets that column (SET).
_FILES = select(*columns(files))
_GET_FILE = _FILES.where(files.c.tenant == bindparam("tenant"), files.c.id == bindparam("id"))
_GET_FILE_BY_KEY = (
    _FILES.where(
        files.c.tenant == bindparam("tenant"),
        files.c.bucket == bindparam("bucket"),
        files.c.key == bindparam("key"),
    )
    .order_by(files.c.status.in_(LIVE).desc(), files.c.id.desc())
    .limit(1)
)
_INSERT_FILE = insert(files)
_FILE_ROW = (files.c.tenant == bindparam("where_tenant"), files.c.id == bindparam("where_id"))
_PENDING = files.c.status == Status.PENDING.value
_TRANSITION = update(files).where(*_FILE_ROW, files.c.status == bindparam("where_status"))
_new_expiry = bindparam("new_expires_at", type_=BigInteger)
_EXTEND = (
    update(files)
    .where(*_FILE_ROW, _PENDING)
    .values(
        expires_at=case((files.c.expires_at < _new_expiry, _new_expiry), else_=files.c.expires_at)
    )
)
_EXPIRE = (
    update(files)
    .where(*_FILE_ROW, _PENDING, files.c.expires_at < bindparam("cutoff"))
    .values(status=Status.FAILED.value)
)
_DELETE_FILE = delete(files).where(
    files.c.tenant == bindparam("tenant"), files.c.id == bindparam("id")
)
_LIVE_COUNTS = (
    select(files.c.bucket, func.count())
    .where(files.c.tenant == bindparam("tenant"), files.c.status.in_(LIVE))
    .group_by(files.c.bucket)
)
_PENDING_USAGE = select(
    func.count(), func.coalesce(func.sum(files.c.size), 0), func.min(files.c.expires_at)
).where(files.c.tenant == bindparam("tenant"), _PENDING, files.c.expires_at > bindparam("now"))
_LIVE_FILES = _FILES.where(
    files.c.tenant == bindparam("tenant"),
    files.c.bucket == bindparam("bucket"),
    files.c.status.in_(LIVE),
    or_(
        files.c.key.in_(bindparam("keys", expanding=True)),
        files.c.id.in_(bindparam("ids", expanding=True)),
    ),
)

_TOKEN_FILES = (
    select(func.count())
    .select_from(files)
    .where(files.c.tenant == bindparam("tenant"), files.c.token_id == bindparam("token_id"))
)  # ix_files_token

_INSERT_ANSWER = insert(idempotency)
_ANSWER = (idempotency.c.tenant == bindparam("tenant"), idempotency.c.key == bindparam("key"))
_GET_ANSWER = select(*columns(idempotency)).where(
    *_ANSWER, idempotency.c.created_at >= bindparam("since")
)
_DELETE_EXPIRED_ANSWER = delete(idempotency).where(
    *_ANSWER, idempotency.c.created_at < bindparam("since")
)
_FORGET_ANSWER = delete(idempotency).where(
    *_ANSWER,
    idempotency.c.fingerprint == bindparam("fingerprint"),
    idempotency.c.created_at == bindparam("created_at"),
)

_KEYS = select(*columns(api_keys)).order_by(api_keys.c.id)
_INSERT_KEY = insert(api_keys)
_GET_KEY = _KEYS.where(api_keys.c.id == bindparam("id"))
_TENANT_KEYS = _KEYS.where(api_keys.c.tenant == bindparam("tenant"))
_REVOKE_KEY = (
    update(api_keys)
    .where(api_keys.c.id == bindparam("where_id"), api_keys.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("at"))
)

_FILE_FIELDS = frozenset(FILE_KEYS)


def _insert_file(
    conn: Connection,
    record: FileRecord,
    answer: IdempotentAnswer | None,
    max_token_files: int | None,
) -> None:
    if answer is not None:
        # An expired answer no longer binds its key: clear it so the key can be reused.
        since = answer.created_at - IDEMPOTENCY_TTL
        conn.execute(
            _DELETE_EXPIRED_ANSWER, {"tenant": answer.tenant, "key": answer.key, "since": since}
        )
        try:
            conn.execute(_INSERT_ANSWER, answer_params(answer))
        except IntegrityError as exc:
            raise IdempotencyConflict from exc
    if max_token_files is not None and record.token_id is not None:
        _check_token_files(conn, record, max_token_files)
    try:
        _prepared(conn, _INSERT_FILE, FILE_KEYS).execute(conn, file_params(record))
    except IntegrityError as exc:
        raise KeyExists from exc


def _check_token_files(conn: Connection, record: FileRecord, max_token_files: int) -> None:
    """Count the token's files in the transaction that adds one, so racing declarations
    cannot both take the last place: SQLite runs one write transaction at a time; on
    PostgreSQL a transaction-scoped advisory lock on the token id takes turns."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(record.token_id))))
    params = {"tenant": record.tenant, "token_id": record.token_id}
    if conn.execute(_TOKEN_FILES, params).scalar_one() >= max_token_files:
        raise TokenFilesExhausted


_PREPARED: dict[tuple[int, str], Prepared] = {}


def _prepared(conn: Connection, statement: ClauseElement, keys: Sequence[str]) -> Prepared:
    """``statement`` compiled once for this connection's dialect."""
    dialect = conn.dialect
    found = _PREPARED.get((id(statement), dialect.name))
    if found is None:
        found = _PREPARED[(id(statement), dialect.name)] = Prepared(statement, dialect, keys)
    return found


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class MetadataStore:
    """Every query the service runs; each call is one transaction and scoped by tenant."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _changes(self, statement: Executable, params: dict[str, Any]) -> bool:
        """Run one write statement in its own transaction; whether it changed a row."""
        return self.db.run_write(lambda conn: bool(conn.execute(statement, params).rowcount))

    # -- files -----------------------------------------------------------------------------

    def insert_file(
        self,
        record: FileRecord,
        answer: IdempotentAnswer | None = None,
        *,
        max_token_files: int | None = None,
    ) -> None:
        """Insert a pending file and its replayable answer (KeyExists, IdempotencyConflict);
        with ``max_token_files``, only while its token has declared fewer files than that
        (TokenFilesExhausted)."""
        self.db.run_write(lambda conn: _insert_file(conn, record, answer, max_token_files))

    def get_file(self, tenant: str, file_id: str) -> FileRecord | None:
        """The tenant's file with this id, or None (another tenant's file is None too)."""
        with self.db.read() as conn:
            row = conn.execute(_GET_FILE, {"tenant": tenant, "id": file_id}).first()
        return file_from(row) if row else None

    def get_file_by_key(self, tenant: str, bucket: str, key: str) -> FileRecord | None:
        """The live file holding ``key``, else the newest failed or aborted one, else None."""
        params = {"tenant": tenant, "bucket": bucket, "key": key}
        with self.db.read() as conn:
            row = conn.execute(_GET_FILE_BY_KEY, params).first()
        return file_from(row) if row else None

    def list_files(
        self,
        tenant: str,
        bucket: str,
        *,
        limit: int,
        after_id: str | None = None,
        prefix: str | None = None,
        status: Status | None = None,
    ) -> list[FileRecord]:
        """Newest first, at most ``limit`` files strictly older than ``after_id`` (keyset)."""
        conditions = [files.c.tenant == tenant, files.c.bucket == bucket]
        if after_id is not None:
            conditions.append(files.c.id < after_id)
        if prefix:
            conditions.append(files.c.key.like(_like_prefix(prefix), escape="\\"))
        if status is not None:
            conditions.append(files.c.status == status.value)
        query = _FILES.where(*conditions).order_by(files.c.id.desc()).limit(limit)
        with self.db.read() as conn:
            return [file_from(row) for row in conn.execute(query)]

    def transition(
        self, tenant: str, file_id: str, from_status: Status, to_status: Status, **changes: Any
    ) -> bool:
        """Move a file between statuses only if it is still in ``from_status`` (no lost races)."""
        if unknown := changes.keys() - _FILE_FIELDS:
            # A parameter that names no column would be ignored silently, not SET.
            raise TypeError(f"not columns of files: {sorted(unknown)}")
        params = {
            **changes,
            "status": to_status.value,
            "where_tenant": tenant,
            "where_id": file_id,
            "where_status": from_status.value,
        }
        return self._changes(_TRANSITION, params)

    def extend(self, tenant: str, file_id: str, expires_at: int, updated_at: int) -> bool:
        """Push a pending file's expiry out (never in) when its URLs are re-issued."""
        params = {
            "where_tenant": tenant,
            "where_id": file_id,
            "new_expires_at": expires_at,
            "updated_at": updated_at,
        }
        return self._changes(_EXTEND, params)

    def delete_file(self, tenant: str, file_id: str) -> bool:
        """Remove the row; False when it was already gone."""
        return self._changes(_DELETE_FILE, {"tenant": tenant, "id": file_id})

    def live_counts(self, tenant: str) -> dict[str, int]:
        """Pending plus complete files per bucket for one tenant."""
        with self.db.read() as conn:
            return dict(conn.execute(_LIVE_COUNTS, {"tenant": tenant}).all())

    def pending_usage(self, tenant: str, now: int) -> tuple[int, int, int | None]:
        """The tenant's unexpired pending files: how many, their declared bytes, and the
        earliest expiry among them (None when there are none); ix_files_pending_usage."""
        with self.db.read() as conn:
            row = conn.execute(_PENDING_USAGE, {"tenant": tenant, "now": now}).one()
        return int(row[0]), int(row[1]), row[2]

    # -- housekeeping (broker sweep) -----------------------------------------------------------

    def expired_pending(
        self, cutoff: int, limit: int, after: tuple[int, str] | None = None
    ) -> list[FileRecord]:
        """Pending files (every tenant) that expired before ``cutoff``, oldest expiry first:
        at most ``limit`` after the keyset cursor ``(expires_at, id)`` (ix_files_expiry)."""
        conditions = [_PENDING, files.c.expires_at < cutoff]
        if after is not None:
            expires_at, file_id = after
            conditions.append(
                or_(
                    files.c.expires_at > expires_at,
                    and_(files.c.expires_at == expires_at, files.c.id > file_id),
                )
            )
        query = _FILES.where(*conditions).order_by(files.c.expires_at, files.c.id).limit(limit)
        with self.db.read() as conn:
            return [file_from(row) for row in conn.execute(query)]

    def expire(
        self, tenant: str, file_id: str, *, cutoff: int, failure_code: str, updated_at: int
    ) -> bool:
        """Fail a file that is still pending and still expired before ``cutoff``.

        The sweeper's claim: of several callers exactly one gets True, and a file completed,
        aborted or given fresh URLs (a later expiry) meanwhile is left alone.
        """
        params = {
            "where_tenant": tenant,
            "where_id": file_id,
            "cutoff": cutoff,
            "failure_code": failure_code,
            "updated_at": updated_at,
        }
        return self._changes(_EXPIRE, params)

    def live_files(
        self, tenant: str, bucket: str, *, keys: Collection[str] = (), ids: Collection[str] = ()
    ) -> list[FileRecord]:
        """The live files of this tenant and bucket that hold one of ``keys`` or have one of
        ``ids`` (ux_files_live_key and the primary key): whose objects the reaper keeps."""
        if not keys and not ids:
            return []
        params = {"tenant": tenant, "bucket": bucket, "keys": list(keys), "ids": list(ids)}
        with self.db.read() as conn:
            return [file_from(row) for row in conn.execute(_LIVE_FILES, params)]

    # -- idempotency -------------------------------------------------------------------------

    def get_answer(self, tenant: str, key: str, now: int) -> IdempotentAnswer | None:
        """The recorded answer for this Idempotency-Key if it is younger than 24 hours."""
        params = {"tenant": tenant, "key": key, "since": now - IDEMPOTENCY_TTL}
        with self.db.read() as conn:
            row = conn.execute(_GET_ANSWER, params).first()
        return answer_from(row) if row else None

    def forget_answer(self, answer: IdempotentAnswer) -> None:
        """Free an Idempotency-Key whose attempt failed (only that answer: a newer one that
        another request recorded meanwhile stays)."""
        params = {
            "tenant": answer.tenant,
            "key": answer.key,
            "fingerprint": answer.fingerprint,
            "created_at": answer.created_at,
        }
        self._changes(_FORGET_ANSWER, params)

    # -- API keys ------------------------------------------------------------------------------

    def insert_key(self, record: ApiKeyRecord) -> None:
        """Store a new key (its hash only)."""
        self._changes(_INSERT_KEY, key_params(record))

    def get_key(self, key_id: str) -> ApiKeyRecord | None:
        """A key by id, revoked or not."""
        with self.db.read() as conn:
            row = conn.execute(_GET_KEY, {"id": key_id}).first()
        return key_from(row) if row else None

    def list_keys(self, tenant: str | None = None) -> Sequence[ApiKeyRecord]:
        """Keys, oldest first, optionally of one tenant."""
        query, params = (_KEYS, {}) if tenant is None else (_TENANT_KEYS, {"tenant": tenant})
        with self.db.read() as conn:
            return [key_from(row) for row in conn.execute(query, params)]

    def revoke_key(self, key_id: str, at: int) -> bool:
        """Mark a key revoked; False when there is no such unrevoked key."""
        return self._changes(_REVOKE_KEY, {"where_id": key_id, "at": at})
