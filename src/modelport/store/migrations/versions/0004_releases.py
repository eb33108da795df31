"""Releases per consuming app: consumers (pins, adapters), traffic policies, model events,
failures, and the ledger's routing columns.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("traffic", sa.JSON, nullable=True))
        batch.add_column(sa.Column("traffic_rev", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("adapter", sa.JSON, nullable=True))
    op.create_table(
        "consumers",
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
        sa.Column("consumer", sa.String(200), primary_key=True),
        sa.Column("pin_version", sa.Integer, nullable=True),
        sa.Column("pin_alias", sa.String(100), nullable=True),
        sa.Column("adapter", sa.JSON, nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "model_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_model_events_model", "model_events", ["model_id", "id"])
    op.create_table(
        "failures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("policy", sa.String(16), nullable=True),
        sa.Column("arm", sa.String(100), nullable=True),
        sa.Column("traffic_rev", sa.Integer, nullable=True),
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
    )
    op.create_index("ix_failures_model_ts", "failures", ["model", "ts"])
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("policy", sa.String(16), nullable=True))
        batch.add_column(sa.Column("arm", sa.String(100), nullable=True))
        batch.add_column(sa.Column("traffic_rev", sa.Integer, nullable=True))
        batch.add_column(sa.Column("shadow", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("raw_inputs", sa.Text, nullable=True))
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("correct", sa.Boolean, nullable=True))
        batch.add_column(sa.Column("error", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("error")
        batch.drop_column("correct")
    with op.batch_alter_table("predictions") as batch:
        for column in ("raw_inputs", "shadow", "traffic_rev", "arm", "policy"):
            batch.drop_column(column)
    op.drop_index("ix_failures_model_ts", table_name="failures")
    op.drop_table("failures")
    op.drop_index("ix_model_events_model", table_name="model_events")
    op.drop_table("model_events")
    op.drop_table("consumers")
    with op.batch_alter_table("models") as batch:
        for column in ("adapter", "traffic_rev", "traffic"):
            batch.drop_column(column)
