"""Health: whether the database and storage answer (``GET /v1/health``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .context import Context


@dataclass(frozen=True)
class Health:
    """The outcome of a check: each part's state (a failed check raises instead)."""

    status: str = "ok"
    checks: dict[str, str] = field(default_factory=lambda: {"database": "ok", "storage": "ok"})


def check(ctx: Context) -> Health:
    """``ok`` when both answer; their 503 error (database or storage) otherwise."""
    ctx.store.db.ping()
    ctx.storage.ping()
    return Health()
