"""Idempotency keys: a prediction request and an observations request may carry one
(``Idempotency-Key``); a repeat from the same consumer answers from the ledger instead of
scoring or storing again. Partial indexes: rows without a key (most) cost nothing.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_KEYED = sa.text("idempotency_key IS NOT NULL")


def upgrade() -> None:
    # A plain ADD COLUMN (nullable, no default) on both databases: no table rebuild.
    op.add_column("predictions", sa.Column("idempotency_key", sa.String(200), nullable=True))
    op.add_column("observations", sa.Column("idempotency_key", sa.String(200), nullable=True))
    op.create_index(
        "ix_predictions_idempotency",
        "predictions",
        ["consumer", "idempotency_key"],
        sqlite_where=_KEYED,
        postgresql_where=_KEYED,
    )
    op.create_index(
        "ix_observations_idempotency",
        "observations",
        ["model_id", "idempotency_key"],
        sqlite_where=_KEYED,
        postgresql_where=_KEYED,
    )


def downgrade() -> None:
    op.drop_index("ix_observations_idempotency", "observations")
    op.drop_index("ix_predictions_idempotency", "predictions")
    with op.batch_alter_table("observations") as batch:
        batch.drop_column("idempotency_key")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("idempotency_key")
