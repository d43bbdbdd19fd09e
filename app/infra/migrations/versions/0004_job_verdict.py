"""The verdict of a succeeded job (core.report.summary.VerdictSummary as JSON): the job resource,
its webhook and the CLI's gates read it without opening report.json.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: jobs not (yet) succeeded, run without the evaluation, or that succeeded before
    # this column have none; their report.json still holds the verdict.
    op.add_column("jobs", sa.Column("verdict", sa.JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "verdict")
