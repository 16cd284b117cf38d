"""Rate limits and quotas: a key's own request limit; an index for a tenant's pending usage.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("rate_limit", sa.String(255)))
    op.create_index("ix_files_pending_usage", "files", ["tenant", "status", "expires_at", "size"])


def downgrade() -> None:
    op.drop_index("ix_files_pending_usage", table_name="files")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("rate_limit")
