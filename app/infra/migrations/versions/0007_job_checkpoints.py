"""The checkpoints a running job's attempts saved (core/checkpoint.py, worker/runner.py): name ->
the attempt that stored it, its sha256 and size; the next attempt resumes from them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: a job that saved none (and every job once it ended: they are deleted) has none.
    op.add_column("jobs", sa.Column("checkpoints", sa.JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "checkpoints")
