"""The ledger keeps one row per scored request; feedback points at its ledger row.

A request's predictions have consecutive ids, so one ledger row (first id, row count, field
names, the inputs encoded as modelport.ledger does, outputs as lists) holds them all: a 100-row
request is one insert, not a hundred. Rows of
the earlier layout (one prediction each) become one-prediction ledger rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.String(36).with_variant(sa.String(36, collation="C"), "postgresql")
_CHUNK = 1000


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _block(inputs: Any, outputs: Any) -> tuple[str, bytes, dict[str, Any]]:
    inputs, outputs = _loads(inputs) or {}, _loads(outputs) or {}
    fields = json.dumps(list(inputs))
    rows = b"JS" + json.dumps([list(inputs.values())]).encode()  # modelport.ledger's encoding
    new_outputs: dict[str, Any] = {"predictions": [outputs.get("prediction")]}
    probabilities = outputs.get("probabilities")
    if isinstance(probabilities, dict):
        new_outputs["classes"] = list(probabilities)
        new_outputs["probabilities"] = [list(probabilities.values())]
    return fields, rows, new_outputs


def upgrade() -> None:
    conn = op.get_bind()
    op.rename_table("predictions", "predictions_0002")
    op.drop_index("ix_predictions_model_id", table_name="predictions_0002")
    op.drop_index("ix_predictions_model_ts", table_name="predictions_0002")
    op.create_table(
        "predictions",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("alias", sa.String(100), nullable=True),
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("fields", sa.Text, nullable=False),
        sa.Column("inputs", sa.LargeBinary, nullable=False),
        sa.Column("outputs", sa.JSON, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
    )
    columns = "id, ts, model, version, alias, consumer, request_id, inputs, outputs, latency_ms"
    new = sa.table(
        "predictions",
        *(sa.column(c) for c in ("id", "rows", "ts", "model", "version", "alias", "consumer")),
        *(sa.column(c) for c in ("request_id", "latency_ms")),
        sa.column("fields", sa.Text),
        sa.column("inputs", sa.LargeBinary),
        sa.column("outputs", sa.JSON),
    )
    last = ""
    while True:
        old = conn.execute(
            sa.text(
                f"SELECT {columns} FROM predictions_0002 WHERE id > :last ORDER BY id LIMIT {_CHUNK}"
            ),
            {"last": last},
        ).all()
        if not old:
            break
        batch = []
        for row in old:
            fields, inputs, outputs = _block(row.inputs, row.outputs)
            batch.append(
                {**row._asdict(), "rows": 1, "fields": fields, "inputs": inputs, "outputs": outputs}
            )
        conn.execute(new.insert(), batch)
        last = old[-1].id
    op.drop_table("predictions_0002")
    op.create_index("ix_predictions_model_id", "predictions", ["model", "id"])
    op.create_index("ix_predictions_model_ts", "predictions", ["model", "ts"])

    with op.batch_alter_table("feedback") as batch_op:
        batch_op.add_column(sa.Column("ledger_id", _ID, nullable=True))
        batch_op.add_column(sa.Column("ledger_row", sa.Integer, nullable=True))
    conn.execute(sa.text("UPDATE feedback SET ledger_id = prediction_id, ledger_row = 0"))
    with op.batch_alter_table("feedback") as batch_op:
        batch_op.alter_column("ledger_id", existing_type=_ID, nullable=False)
        batch_op.alter_column("ledger_row", existing_type=sa.Integer, nullable=False)
        batch_op.create_index("ix_feedback_ledger", ["ledger_id", "ledger_row"])


def downgrade() -> None:
    raise NotImplementedError("the ledger layout of 0003 is not reversible; restore a backup")
