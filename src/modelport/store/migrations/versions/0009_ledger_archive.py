"""The ledger's per-minute roll-ups and its Parquet archive.

``ledger_rollups`` is filled from the rows already in the ledger, so window reads answer for
old traffic too; from here on the writer keeps it in step. ``ledger_archive`` lists the Parquet
files ledger rows go to when a model's retention moves them out of the hot store.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

LedgerId = sa.String(36).with_variant(sa.String(36, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "ledger_rollups",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("minute", sa.BigInteger, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("segment", sa.String(100), primary_key=True),
        sa.Column("consumer", sa.String(200), primary_key=True),
        sa.Column("shadow", sa.Boolean, primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("latency_sum", sa.Float, nullable=False),
        sa.Column("latency_max", sa.Float, nullable=False),
    )
    op.create_table(
        "ledger_archive",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("first_id", LedgerId, nullable=False),
        sa.Column("last_id", LedgerId, nullable=False),
        sa.Column("min_ts", sa.Float, nullable=False),
        sa.Column("max_ts", sa.Float, nullable=False),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("predictions", sa.BigInteger, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_ledger_archive_model_ts", "ledger_archive", ["model", "min_ts"])
    op.create_index("ix_ledger_archive_ids", "ledger_archive", ["first_id", "last_id"])
    minute = "CAST(floor(ts / 60) AS BIGINT) * 60"
    if op.get_bind().dialect.name == "sqlite":
        minute = "CAST(ts / 60 AS INTEGER) * 60"  # ts >= 0: truncation is floor
    op.execute(
        "INSERT INTO ledger_rollups (model, minute, version, segment, consumer, shadow, "
        "requests, rows, latency_sum, latency_max) "
        f"SELECT model, {minute}, version, COALESCE(segment, ''), consumer, shadow, count(*), "
        "sum(rows), sum(latency_ms), max(latency_ms) FROM predictions "
        f"GROUP BY model, {minute}, version, COALESCE(segment, ''), consumer, shadow"
    )


def downgrade() -> None:
    op.drop_index("ix_ledger_archive_ids", "ledger_archive")
    op.drop_index("ix_ledger_archive_model_ts", "ledger_archive")
    op.drop_table("ledger_archive")
    op.drop_table("ledger_rollups")
