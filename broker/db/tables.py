"""The metadata schema: tables and indexes (Alembic migrations must match it)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
)

from ..models import LIVE_STATUSES

LIVE = [s.value for s in LIVE_STATUSES]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Column keys are FileRecord's field names (a test holds them equal), so rows and records
# map onto each other generically; "metadata" is named otherwise in SQL only because the
# column predates that rule.
files = Table(
    "files",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(63), nullable=False),
    Column("bucket", String(63), nullable=False),
    Column("key", String(1024), nullable=False),
    Column("name", String(255), nullable=False),
    Column("mime_type", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64)),
    Column("user_metadata", JSON, nullable=False, key="metadata"),
    Column("status", String(16), nullable=False),
    Column("failure_code", String(64)),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("completed_at", BigInteger),
    Column("upload_id", String(1024)),
    Column("part_size", BigInteger),
    Column("proxied", Boolean, nullable=False, server_default=false()),
    Column("joining_since", BigInteger),
    Column("token_id", String(40)),
    Column("object_key", String(1024)),
    Column("etag", String(255)),
    Column("version_id", String(1024)),
)
# A key is held by at most one live (pending or complete) file per tenant and bucket;
# failed and aborted files keep their row for the record but free the key.
_live = files.c.status.in_(LIVE)
Index(
    "ux_files_live_key",
    files.c.tenant,
    files.c.bucket,
    files.c.key,
    unique=True,
    sqlite_where=_live,
    postgresql_where=_live,
)
Index("ix_files_listing", files.c.tenant, files.c.bucket, files.c.id)
Index("ix_files_expiry", files.c.status, files.c.expires_at)
# A browser token's files, counted against its max_files.
Index("ix_files_token", files.c.token_id)
# A tenant's unexpired pending uploads, counted and summed at grant time (quotas.py): the
# index covers the aggregate, so it never reads the table.
Index("ix_files_pending_usage", files.c.tenant, files.c.status, files.c.expires_at, files.c.size)

# Column keys are ApiKeyRecord's field names, as for files.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(63), nullable=False),
    Column("name", String(255)),
    Column("scopes", JSON, nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
    Column("expires_at", BigInteger),
    Column("rate_limit", String(255)),
)
Index("ix_api_keys_tenant", api_keys.c.tenant, api_keys.c.id)

idempotency = Table(
    "idempotency_keys",
    metadata,
    Column("tenant", String(63), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)
