"""The MLflow hand-off of a succeeded job (worker/mlflow_handoff.py): run id, registered model
version and alias, or the warning saying why the hand-off failed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: jobs not handed to MLflow (no mlflow section, no service default) have none.
    op.add_column("jobs", sa.Column("mlflow", sa.JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "mlflow")
