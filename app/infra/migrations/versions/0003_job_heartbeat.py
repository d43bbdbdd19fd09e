"""The heartbeat of a running job: when its worker last said it is alive (the reaper requeues
jobs whose heartbeat stopped).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: queued and ended jobs have none; a job running under a worker of the previous
    # version has none either, and is judged by its updated_at (its progress writes) instead.
    op.add_column("jobs", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "heartbeat_at")
