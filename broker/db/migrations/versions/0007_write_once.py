"""Write-once objects: each file's own object key, and the ETag and version validated.

Files declared from here on keep their bytes at ``{tenant}/{bucket}/{file id}/{key}``
(``object_key``); older rows keep NULL there and their object where it was,
``{tenant}/{bucket}/{key}``. ``etag`` and ``version_id`` record what ``complete`` validated,
so downloads serve exactly that.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("object_key", sa.String(1024), nullable=True))
        batch.add_column(sa.Column("etag", sa.String(255), nullable=True))
        batch.add_column(sa.Column("version_id", sa.String(1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.drop_column("version_id")
        batch.drop_column("etag")
        batch.drop_column("object_key")
