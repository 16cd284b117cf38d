"""Browser tokens and least-privilege keys: the token that declared a file, key expiry, and
``files:delete`` for the keys that could delete before scopes were split.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import json
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_KEYS = sa.table("api_keys", sa.column("id", sa.String), sa.column("scopes", sa.JSON))


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("token_id", sa.String(40), nullable=True))
        batch.create_index("ix_files_token", ["token_id"])
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", sa.BigInteger(), nullable=True))
    # Before scopes were split, files:write also deleted: keys keep the rights they had.
    _rescope(lambda scopes: [*scopes, "files:delete"] if _writes_only(scopes) else scopes)


def downgrade() -> None:
    _rescope(lambda scopes: [s for s in scopes if s != "files:delete"])
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
    with op.batch_alter_table("files") as batch:
        batch.drop_index("ix_files_token")
        batch.drop_column("token_id")


def _writes_only(scopes: list[str]) -> bool:
    return "files:write" in scopes and "files:delete" not in scopes


def _rescope(change: Callable[[list[str]], list[str]]) -> None:
    """Rewrite each key's scope list with ``change`` (in Python: JSON functions differ
    between SQLite and PostgreSQL, and there are few keys)."""
    conn = op.get_bind()
    for key_id, scopes in conn.execute(sa.select(_KEYS.c.id, _KEYS.c.scopes)).all():
        listed = json.loads(scopes) if isinstance(scopes, str) else list(scopes)
        changed = change(listed)
        if changed != listed:
            conn.execute(_KEYS.update().where(_KEYS.c.id == key_id).values(scopes=changed))
