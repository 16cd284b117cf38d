"""Health: whether the database and storage answer (``GET /v1/health``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .context import Context
from .storage.s3_cors import CorsCheck


@dataclass(frozen=True)
class Health:
    """The outcome of a check: each part's state (a failed check raises instead)."""

    status: str = "ok"
    checks: dict[str, str] = field(default_factory=lambda: {"database": "ok", "storage": "ok"})


def check(ctx: Context, storage_cors: CorsCheck | None = None) -> Health:
    """``ok`` when both answer; their 503 error (database or storage) otherwise.

    With browsers configured on S3, ``checks.storage_cors`` says whether the bucket's CORS
    rule admits them (``ok``, ``missing: …``, ``unknown: …``, checked at most every few
    minutes). It does not fail the check: the API still serves every server-side client,
    and no restart of this instance would fix the bucket.
    """
    ctx.store.db.ping()
    ctx.storage.ping()
    health = Health()
    if storage_cors is not None:
        health.checks["storage_cors"] = storage_cors.status()
    return health
