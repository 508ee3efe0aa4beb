"""nodes: the agent's version and its certificate's expiry, for the admins' node view

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 23:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(
            sa.Column("agent_version", sa.String(length=64), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column("certificate_not_after", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("certificate_not_after")
        batch.drop_column("agent_version")
