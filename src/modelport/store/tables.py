"""The database schema, as SQLAlchemy Core tables.

Times are Unix epoch seconds (floats, UTC): cheap to write on the hot path, the same on SQLite and
PostgreSQL, and converted to ISO-8601 at the API edge. Changing a table means a new migration in
``migrations/versions``; ``tests/store/test_migrations.py`` fails when the two disagree.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

models = sa.Table(
    "models",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("task", sa.String(32), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    # Per-model serving settings, e.g. {"max_batch_rows": 64}; absent keys use the defaults.
    sa.Column("serving", sa.JSON, nullable=True),
    # The traffic policy of the unversioned routes (modelport.releases.traffic); null: production alias.
    sa.Column("traffic", sa.JSON, nullable=True),
    # Bumped by every policy change: ledger rows record it, so each experiment stands alone.
    sa.Column("traffic_rev", sa.Integer, nullable=False, server_default="0"),
    # The adapter every consumer's payloads go through (modelport.inputs.adapters), unless the
    # consumer has its own.
    sa.Column("adapter", sa.JSON, nullable=True),
    # A model made from a built-in algorithm: {"algorithm", "params", "schema", "target",
    # "online": {...}} (modelport.learning.observations); null for models pushed as artifacts.
    sa.Column("spec", sa.JSON, nullable=True),
    # The promotion gate and the retraining triggers (modelport.learning.observations).
    sa.Column("gate", sa.JSON, nullable=True),
    sa.Column("triggers", sa.JSON, nullable=True),
    # Drift thresholds, the check window and the webhook (modelport.monitoring.checks).
    sa.Column("monitoring", sa.JSON, nullable=True),
    # The input field whose value picks a segment's own versions (modelport.serving.segments).
    sa.Column("segment_by", sa.String(200), nullable=True),
)

versions = sa.Table(
    "versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("flavor", sa.String(32), nullable=False),
    sa.Column("input_schema", sa.JSON, nullable=False),
    sa.Column("train_stats", sa.JSON, nullable=True),
    # The drift reference: a seeded sample of the training inputs and the version's
    # predictions on it (modelport.monitoring.drift); null when nothing was trained on or pushed.
    sa.Column("reference", sa.JSON, nullable=True),
    sa.Column("lineage", sa.JSON, nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    # The segment the version answers for (a segmented model); null for the whole model.
    sa.Column("segment", sa.String(100), nullable=True),
    sa.UniqueConstraint("model_id", "version", name="uq_versions_model_version"),
)

aliases = sa.Table(
    "aliases",
    metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

alias_events = sa.Table(
    "alias_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("alias", sa.String(100), nullable=False),
    sa.Column("from_version", sa.Integer, nullable=True),
    sa.Column("to_version", sa.Integer, nullable=True),
    sa.Column("kind", sa.String(16), nullable=False),  # move | rollback
    sa.Column("reverts", sa.Integer, nullable=True),  # the event a rollback undid
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("ix_alias_events_model_alias", "model_id", "alias", "id"),
)

# Per model, what one consumer (an app, named by its keys) gets: a pinned version or alias,
# and its own adapter for older payloads.
consumers = sa.Table(
    "consumers",
    metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("consumer", sa.String(200), primary_key=True),
    sa.Column("pin_version", sa.Integer, nullable=True),
    sa.Column("pin_alias", sa.String(100), nullable=True),
    sa.Column("adapter", sa.JSON, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

# The audit trail of a model's releases: traffic policies, pins, adapters, automatic actions.
model_events = sa.Table(
    "model_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("ix_model_events_model", "model_id", "id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("consumer", sa.String(200), nullable=False),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

#: Ledger ids compare byte by byte on every database (PostgreSQL would otherwise use the
#: database's collation), so a range lookup finds the block an id belongs to.
LedgerId = sa.String(36).with_variant(sa.String(36, collation="C"), "postgresql")

#: Partial index: only rows that carry an idempotency key (most carry none) are indexed.
_KEYED: dict[str, Any] = {
    "sqlite_where": sa.text("idempotency_key IS NOT NULL"),
    "postgresql_where": sa.text("idempotency_key IS NOT NULL"),
}

# The ledger: one row per scored request. Its predictions have consecutive ids (see
# modelport.ids): the first is the row's id, the row count is `rows`, and the inputs and
# outputs hold one entry per prediction, in order.
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", LedgerId, primary_key=True),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("alias", sa.String(100), nullable=True),
    sa.Column("consumer", sa.String(200), nullable=False),
    sa.Column("request_id", sa.String(200), nullable=False),
    # The validated inputs: the field names (a JSON list) and the rows, encoded by
    # modelport.ledger (raw float64 when every field is a number, else JSON).
    sa.Column("fields", sa.Text, nullable=False),
    sa.Column("inputs", sa.LargeBinary, nullable=False),
    # {"predictions": [...], "classes": [...], "probabilities": [[p, ...], ...]} (the last two
    # for classifiers with probabilities)
    sa.Column("outputs", sa.JSON, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    # How the version was chosen: the policy ("single", "split", "shadow", "bandit",
    # "canary", "pinned", "explicit"), the arm, and the traffic revision it belongs to.
    sa.Column("policy", sa.String(16), nullable=True),
    sa.Column("arm", sa.String(100), nullable=True),
    sa.Column("traffic_rev", sa.Integer, nullable=True),
    # A shadow copy: scored off the response path, never returned to the caller.
    sa.Column("shadow", sa.Boolean, nullable=False, server_default=sa.false()),
    # The records as the consumer sent them (JSON), when they differ from the inputs (an
    # adapter changed them, or defaults were filled in).
    sa.Column("raw_inputs", sa.Text, nullable=True),
    # The rows' segment (a segmented model's request is split into one row per segment).
    sa.Column("segment", sa.String(100), nullable=True),
    # Which predictions the prediction cache answered: one "0"/"1" per row; null for none.
    sa.Column("cached", sa.Text, nullable=True),
    # The request's Idempotency-Key (a stream record's id): a repeat answers from this row.
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Index("ix_predictions_model_id", "model", "id"),
    sa.Index("ix_predictions_model_ts", "model", "ts"),
    sa.Index("ix_predictions_idempotency", "consumer", "idempotency_key", **_KEYED),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("prediction_id", sa.String(36), nullable=False),
    # Where the prediction sits in the ledger: the ledger row's id and the row within it.
    sa.Column("ledger_id", LedgerId, nullable=False),
    sa.Column("ledger_row", sa.Integer, nullable=False),
    sa.Column("label", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("reward", sa.Float, nullable=True),
    # The label against the prediction, worked out when the feedback arrives: whether they are
    # equal, and (numeric predictions) label minus prediction.
    sa.Column("correct", sa.Boolean, nullable=True),
    sa.Column("error", sa.Float, nullable=True),
    sa.Column("consumer", sa.String(200), nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Index("ix_feedback_prediction", "prediction_id", "id"),
    sa.Index("ix_feedback_ledger", "ledger_id", "ledger_row"),
)

# Labelled examples to learn from: sent as observations, or feedback labels joined to the
# inputs of their predictions (``prediction_id`` set). Inputs are the validated record (JSON).
observations = sa.Table(
    "observations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),
    sa.Column("label", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("source", sa.String(16), nullable=False),  # api | file | feedback
    sa.Column("prediction_id", sa.String(36), nullable=True),
    sa.Column("segment", sa.String(100), nullable=True),  # of a segmented model
    # The request's Idempotency-Key: a repeat stores nothing and answers with these rows.
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Index("ix_observations_model_id", "model_id", "id"),
    sa.Index("ix_observations_model_segment", "model_id", "segment", "id"),
    sa.Index("ix_observations_idempotency", "model_id", "idempotency_key", **_KEYED),
)

# Content-hashed snapshots of a model's observations, kept as Parquet in the artifact store.
datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # sha256 of the Parquet bytes
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("through_observation", sa.Integer, nullable=False),
    sa.Column("fields", sa.JSON, nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Work done off the serving path, in a worker process: retrains, replays.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # queued running succeeded failed cancelled
    sa.Column("progress", sa.Float, nullable=False, server_default="0"),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Column("logs", sa.Text, nullable=False, server_default=""),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("worker", sa.String(200), nullable=True),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("heartbeat_at", sa.Float, nullable=True),
    sa.Index("ix_jobs_status", "status", "id"),
    sa.Index("ix_jobs_model", "model_id", "id"),
)

# The online learner's predict-then-learn record: per model, per interval, what it got right.
prequential = sa.Table(
    "prequential",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=True),  # the snapshot taken at the interval's end
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("total", sa.Float, nullable=False),  # correct answers, or absolute errors
    sa.Column("total_sq", sa.Float, nullable=False),  # squared errors (regression)
    sa.Column("learned", sa.Integer, nullable=False),  # observations learned so far
    sa.Index("ix_prequential_model", "model_id", "id"),
)

# Who learns online for a model: one process holds the lease and renews it.
learner_leases = sa.Table(
    "learner_leases",
    metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("through_observation", sa.Integer, nullable=False, server_default="0"),
)

# Scoring that failed: the model raised or timed out. Error rates per version and arm (canary
# guards) are read from here by every process.
failures = sa.Table(
    "failures",
    metadata,
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
    sa.Index("ix_failures_model_ts", "model", "ts"),
)

# Per version, whether its traffic drifted from its reference at the last check: servers
# change it only from the state they read, so of those that notice a change one acts.
drift_state = sa.Table(
    "drift_state",
    metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("drifted", sa.Boolean, nullable=False),
    sa.Column("detail", sa.JSON, nullable=True),
    sa.Column("changed_at", sa.Float, nullable=False),
)

# One row (id = 1) whose counter moves with every registry change, so that servers sharing a
# store notice pushes and alias moves made elsewhere with one cheap query.
registry_generation = sa.Table(
    "registry_generation",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("generation", sa.BigInteger, nullable=False),
)

# Per minute of the ledger: how many requests and rows, and their latency, per model, version,
# segment ("" for none), consumer and shadow flag. Written by the writer in the transaction of
# the ledger rows it counts (modelport.store.rollups), so window reads (timeline, counts) cost
# the minutes of the window, not its rows. Kept when ledger rows leave for the archive.
ledger_rollups = sa.Table(
    "ledger_rollups",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("minute", sa.BigInteger, primary_key=True),  # epoch seconds, a multiple of 60
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("segment", sa.String(100), primary_key=True),
    sa.Column("consumer", sa.String(200), primary_key=True),
    sa.Column("shadow", sa.Boolean, primary_key=True),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("latency_sum", sa.Float, nullable=False),
    sa.Column("latency_max", sa.Float, nullable=False),
)

# The ledger archive: Parquet files of ledger rows that left the hot store (one model, one UTC
# day, at most a batch of rows each), content-addressed in the artifact store
# (modelport.store.archive). ``first_id``..``last_id`` span the file's prediction ids.
ledger_archive = sa.Table(
    "ledger_archive",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("day", sa.String(10), nullable=False),  # YYYY-MM-DD (UTC)
    sa.Column("first_id", LedgerId, nullable=False),
    sa.Column("last_id", LedgerId, nullable=False),
    sa.Column("min_ts", sa.Float, nullable=False),
    sa.Column("max_ts", sa.Float, nullable=False),
    sa.Column("requests", sa.Integer, nullable=False),  # ledger rows in the file
    sa.Column("predictions", sa.BigInteger, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_ledger_archive_model_ts", "model", "min_ts"),
    sa.Index("ix_ledger_archive_ids", "first_id", "last_id"),
)
