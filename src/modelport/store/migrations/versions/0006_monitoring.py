"""Monitoring: each version's drift reference, each model's monitoring settings (thresholds,
webhook), and the drift state per version that the servers' checks agree on.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("monitoring", sa.JSON, nullable=True))
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("reference", sa.JSON, nullable=True))
    op.create_table(
        "drift_state",
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("drifted", sa.Boolean, nullable=False),
        sa.Column("detail", sa.JSON, nullable=True),
        sa.Column("changed_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("drift_state")
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("reference")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("monitoring")
