"""Registered datasets (POST /datasets), and the registered dataset a job reads.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("file_name", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("owner", "sha256", name="uq_datasets_owner_sha256"),
    )
    op.create_index("ix_datasets_owner_created", "datasets", ["owner", "created_at"])
    # Nullable: jobs on builtin, uploaded or remote datasets read no registered one.
    op.add_column("jobs", sa.Column("dataset_id", sa.String(32), nullable=True))
    op.create_index("ix_jobs_dataset_id", "jobs", ["dataset_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_dataset_id", table_name="jobs")
    op.drop_column("jobs", "dataset_id")
    op.drop_index("ix_datasets_owner_created", table_name="datasets")
    op.drop_table("datasets")
