"""Segmented models and the prediction cache: a model's segment key, each version's segment,
the segment of each ledger row and observation, and which predictions a cache answered.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("segment_by", sa.String(200), nullable=True))
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("segment", sa.String(100), nullable=True))
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("segment", sa.String(100), nullable=True))
        batch.add_column(sa.Column("cached", sa.Text, nullable=True))
    with op.batch_alter_table("observations") as batch:
        batch.add_column(sa.Column("segment", sa.String(100), nullable=True))
    op.create_index("ix_observations_model_segment", "observations", ["model_id", "segment", "id"])


def downgrade() -> None:
    op.drop_index("ix_observations_model_segment", table_name="observations")
    with op.batch_alter_table("observations") as batch:
        batch.drop_column("segment")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("cached")
        batch.drop_column("segment")
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("segment")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("segment_by")
