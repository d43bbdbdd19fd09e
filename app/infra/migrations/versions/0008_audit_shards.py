"""The shards of a job's audit that worker processes claim and finish (worker/shards.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_shards",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("shard", sa.Integer, primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("claimant", sa.String(128), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claims", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("audit_shards")
