"""Per-stage durations of a job (seconds), for GET /metrics' stage-duration histogram.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: jobs that ran before this column, or ended before finishing, have no timings.
    op.add_column("jobs", sa.Column("timings_s", sa.JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "timings_s")
