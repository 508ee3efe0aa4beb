"""project start: when a project's data-access approval starts

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 23:55:00
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True))
    # A project an approved application created starts on the application's start date;
    # any other (an admin's) keeps NULL: its approval runs from creation, as before.
    applications = sa.table(
        "dar_applications",
        sa.column("project_name", sa.String),
        sa.column("form", sa.JSON),
        sa.column("approved_at", sa.DateTime(timezone=True)),
    )
    projects = sa.table(
        "projects",
        sa.column("name", sa.String),
        sa.column("starts_at", sa.DateTime(timezone=True)),
    )
    conn = op.get_bind()
    approved = conn.execute(
        sa.select(applications.c.project_name, applications.c.form).where(
            applications.c.approved_at.is_not(None)
        )
    ).all()
    for name, form in approved:
        start = date.fromisoformat(form["start_date"])
        conn.execute(
            projects.update()
            .where(projects.c.name == name, projects.c.starts_at.is_(None))
            .values(starts_at=datetime.combine(start, time(0, 0), tzinfo=UTC))
        )


def downgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("starts_at")
