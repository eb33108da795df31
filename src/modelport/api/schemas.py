"""Request and response shapes of the native API, for validation and the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..ids import MAX_ID

Scalar = str | int | float | bool | None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    field: str | None = Field(None, description="The offending field (a dotted path for schemas).")
    reason: str
    row: int | None = Field(None, description="Row index, where the request carries rows.")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable error code, e.g. invalid_input.")
    message: str
    details: list[ErrorDetail] = []


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    store: str
    pid: int = Field(description="The serving process (one of several with --workers).")


# -- registry ---------------------------------------------------------------------------------------


class CreateModel(Strict):
    """An empty model (to push versions to), or with ``algorithm`` a model made from a built-in
    algorithm (``GET /v1/algorithms``) that learns from observations."""

    name: str = Field(description="Model name: [a-z0-9][a-z0-9_-]*", examples=["churn"])
    task: Literal["classification", "regression", "other"] = "other"
    description: str = ""
    algorithm: str | None = Field(None, examples=["online_logistic_regression"])
    params: dict[str, Any] | None = Field(None, description="The algorithm's parameters.")
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="Input schema.")
    target: str | None = Field(None, description="The label column of observations.")
    classes: list[Any] | None = Field(None, description="Class labels (online classifiers).")
    online: dict[str, Any] | None = Field(
        None,
        description="Online learning: min_observations (10), snapshot_every (100 observations), "
        "snapshot_seconds (5).",
    )
    segment_by: str | None = Field(
        None,
        description="An input field: one model instance per value of it, made the first "
        "time the value appears in observations (a segmented model).",
    )


class ModelInfo(BaseModel):
    name: str
    task: str
    description: str
    created: str
    created_by: str
    latest_version: int | None
    aliases: dict[str, int] = Field(description="Alias name -> version number.")
    segment_by: str | None = None


class SchemaField(BaseModel):
    name: str
    type: Literal["number", "integer", "string", "boolean", "category"]
    required: bool = True
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    categories: list[Scalar] | None = None
    description: str | None = None


class InputSchema(BaseModel):
    fields: list[SchemaField]


class Lineage(BaseModel):
    model_config = ConfigDict(extra="allow")

    created_by: str
    python: str
    libraries: dict[str, str]
    code_commit: str | None = None
    train_data_sha256: str | None = None
    hyperparameters: dict[str, Any] = {}
    learned: dict[str, Any] = {}
    metrics: dict[str, float] = {}


class VersionInfo(BaseModel):
    model: str
    version: int
    created: str
    flavor: str
    sha256: str
    size_bytes: int
    description: str
    aliases: list[str]
    schema_: InputSchema = Field(alias="schema")
    lineage: Lineage
    train_stats: dict[str, Any] | None = None
    segment: str | None = None


class PushMetadata(Strict):
    """The ``metadata`` form field of a push: a JSON object."""

    alias: str | None = Field(None, description="Point this alias at the new version (admin).")
    schema_: dict[str, Any] | None = Field(
        None, alias="schema", description="Input schema; inferred from the artifact when absent."
    )
    train_stats: dict[str, Any] | None = Field(
        None,
        description="Per-field training statistics (computed by the client from --train-data).",
    )
    reference_sample: dict[str, Any] | None = Field(
        None,
        description=(
            'A seeded sample of the training rows, {"fields": [...], "rows": [[...]], "total": '
            "n} (sent by the client with --train-data): the server scores it with the pushed "
            "model and keeps both as the version's drift reference."
        ),
    )
    schema_from_train_data: bool = Field(
        False,
        description=(
            "The schema was inferred from every column of the training data: the server keeps "
            "only the columns the estimator was fitted on (feature_names_in_), in its order."
        ),
    )
    train_data_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    commit: str | None = Field(
        None, max_length=200, description="Code commit of the training code."
    )
    metrics: dict[str, float] | None = None
    params: dict[str, Any] | None = Field(
        None, description="Hyperparameters (else read from the model)."
    )
    environment: dict[str, Any] | None = Field(
        None, description="{'python': version, 'libraries': {name: version}} where it was trained."
    )
    task: Literal["classification", "regression", "other"] | None = None
    description: str | None = Field(None, description="Description of the model, if it is new.")
    version_description: str | None = None
    flavor: Literal["sklearn", "pickle", "mlflow"] | None = Field(
        None, description="Artifact format; detected from the bytes when absent."
    )
    strict: bool = Field(
        False,
        description=(
            "Refuse the push (409) when the compatibility report says some consumer's recent "
            "payloads would be rejected by the new version's schema."
        ),
    )
    segment: str | None = Field(
        None,
        description=(
            "The segment this version answers for (a segmented model; see PUT "
            "/v1/models/{name}/segments). With `alias`, the alias set is `<alias>@<segment>`."
        ),
    )
    deterministic: bool | None = Field(
        None,
        description=(
            "Whether the same row always gets the same answer, so the prediction cache may "
            "keep it; default: true for scikit-learn estimators, false for custom code."
        ),
    )


class ServingSettings(Strict):
    """Per-model serving settings; a key left out (or null) uses the server's default."""

    max_batch_rows: int | None = Field(
        None, ge=1, le=1_000_000, description="Overrides batch_max_rows."
    )
    max_wait_ms: float | None = Field(
        None, ge=0, le=60_000, description="Overrides batch_max_wait_ms."
    )
    max_concurrent_batches: int | None = Field(
        None, ge=1, le=1024, description="Overrides batch_max_concurrent."
    )
    predict_timeout_seconds: float | None = Field(
        None, ge=0.001, le=86_400, description="Overrides predict_timeout_seconds."
    )
    cache_max_entries: int | None = Field(
        None,
        ge=0,
        le=100_000_000,
        description="Overrides cache_max_entries (0: no prediction cache).",
    )
    max_live_segments: int | None = Field(
        None, ge=1, le=1_000_000, description="Overrides max_live_segments (a segmented model)."
    )
    max_segments: int | None = Field(
        None, ge=1, le=1_000_000, description="Overrides max_segments (a segmented model)."
    )
    ledger_retention_days: float | None = Field(
        None,
        ge=0,
        le=36_500,
        description="Overrides ledger_retention_days (0: keep every row in the ledger table).",
    )


class ModelServing(BaseModel):
    model: str
    serving: ServingSettings


class HistogramInfo(BaseModel):
    count: int
    mean: float
    buckets: dict[str, int] = Field(description="Upper bound (le) -> count in that bucket.")


class BatchingStats(BaseModel):
    model: str
    version: int
    batches: int
    requests: int
    rows: int
    failed_batches: int
    batch_rows: HistogramInfo
    queue_wait_ms: HistogramInfo


class AliasMoveRequest(Strict):
    version: int = Field(ge=1, le=MAX_ID)
    reason: str = ""


class RollbackRequest(Strict):
    reason: str = ""


class AliasMove(BaseModel):
    model: str
    alias: str
    version: int
    previous: int | None


class AliasEvent(BaseModel):
    id: int
    alias: str
    from_version: int | None
    to_version: int | None
    kind: Literal["move", "rollback"]
    reverts: int | None
    actor: str
    reason: str
    at: str


# -- predictions ------------------------------------------------------------------------------------


class PredictRequest(Strict):
    """Records (``inputs``) or columns with rows (``columns`` + ``data``)."""

    inputs: list[dict[str, Any]] | None = Field(
        None,
        examples=[
            [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]
        ],
    )
    columns: list[str] | None = None
    data: list[list[Any]] | None = None
    version: int | None = Field(None, ge=1, le=MAX_ID, description="Score with this version.")
    alias: str | None = Field(
        None, description="Score with the version behind this alias (default production)."
    )


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[Any]
    prediction_ids: list[str]
    probabilities: list[dict[str, float]] | None = None


class Feedback(BaseModel):
    id: int
    time: str
    label: Any = None
    reward: float | None = None
    consumer: str
    superseded: bool


class PredictionRecord(BaseModel):
    id: str
    time: str
    model: str
    version: int
    alias: str | None
    consumer: str
    request_id: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    latency_ms: float
    policy: str | None = Field(
        None, description="What chose the version: explicit, pinned, or the traffic policy."
    )
    arm: str | None = Field(None, description="The policy's arm (split, bandit, canary, shadow).")
    shadow: bool = Field(False, description="A shadow copy, never returned to a caller.")
    raw_inputs: dict[str, Any] | None = Field(
        None, description="The record as sent, when adapters or defaults changed it."
    )
    feedback: list[Feedback] | None = None


class PredictionPage(BaseModel):
    predictions: list[PredictionRecord]
    next_cursor: str | None


class FeedbackItem(BaseModel):
    prediction_id: str
    label: Scalar = None
    reward: float | None = None


class FeedbackRequest(BaseModel):
    feedback: list[FeedbackItem]


class FeedbackAccepted(BaseModel):
    index: int
    prediction_id: str
    feedback_id: int
    model: str
    version: int


class FeedbackRejected(BaseModel):
    index: int
    prediction_id: str | None
    reason: str


class FeedbackResponse(BaseModel):
    accepted: list[FeedbackAccepted]
    rejected: list[FeedbackRejected]


# -- keys ---------------------------------------------------------------------------------------------


class KeyCreateRequest(Strict):
    name: str = Field(description="The consumer (calling app) this key identifies.")
    scopes: list[Literal["admin", "push", "predict", "feedback", "read"]]


class KeyInfo(BaseModel):
    id: int
    prefix: str
    consumer: str
    scopes: list[str]
    created_at: float
    revoked_at: float | None


class KeyCreated(KeyInfo):
    key: str = Field(description="The secret; shown once, store it now.")


class KeyRevoked(BaseModel):
    id: int
    consumer: str
    revoked: bool


# -- releases -------------------------------------------------------------------------------------


class TrafficPolicy(BaseModel):
    """A traffic policy (docs/api.md has one example per kind). ``policy`` is one of single,
    split, shadow, bandit, canary; the other keys depend on it."""

    model_config = ConfigDict(extra="allow")
    policy: Literal["single", "split", "shadow", "bandit", "canary"]


class TrafficState(BaseModel):
    model: str
    traffic: dict[str, Any] = Field(description="The policy, in its canonical form.")
    revision: int = Field(description="Bumped by every change; each revision is one experiment.")


class ConsumerRequest(Strict):
    pin: dict[str, Any] | None = Field(
        None, description='{"version": n} or {"alias": name}; null: follow the traffic policy.'
    )
    adapter: dict[str, Any] | None = Field(
        None, description="Steps that translate this consumer's payloads (see docs/api.md)."
    )


class ConsumerInfo(BaseModel):
    model: str
    consumer: str
    pin: dict[str, Any] | None
    adapter: dict[str, Any] | None
    updated: str
    updated_by: str


class ConsumerRemoved(BaseModel):
    model: str
    consumer: str
    removed: bool


class ModelAdapter(BaseModel):
    model: str
    adapter: dict[str, Any] | None


class ModelEvent(BaseModel):
    time: str
    kind: str = Field(
        description="traffic_set, consumer_set, consumer_removed, adapter_set, canary_rollback, "
        "alias_move, alias_rollback"
    )
    actor: str
    detail: dict[str, Any]


class ExperimentReport(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    revision: int
    policy: str
    metric: str
    arms: list[dict[str, Any]]


# -- the learning loop ---------------------------------------------------------------------------


class Algorithm(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    task: str
    online: bool
    description: str
    params: Any


class ObservationsRequest(Strict):
    observations: list[dict[str, Any]] = Field(
        description="Rows with the schema's fields and the target (the label)."
    )


class ObservationsResponse(BaseModel):
    model: str
    accepted: int
    first_id: int
    last_id: int
    rejected: list[dict[str, Any]]


class Dataset(BaseModel):
    id: str = Field(description="sha256 of the Parquet snapshot")
    model: str
    rows: int
    through_observation: int
    fields: list[str]
    target: str
    size_bytes: int
    created: str


class JobRequest(BaseModel):
    """``{"type": "retrain", "seed": 0, "holdout": 0.2, "dataset": id?, "params": {...}?}``,
    ``{"type": "replay", "version": n, "since": t?, "until": t?, "consumer": c?, "limit": n?}``
    or a batch scoring run's start, ``{"type": "score", "version": n, "input": {"path",
    "sha256", ...}, "engine": "pandas"|"spark", ...}`` (see docs/batch.md)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["retrain", "replay", "score"]


class RunProgress(BaseModel):
    """``{"progress": 0.4, "message": "40000 rows"}``: a client-run job's heartbeat."""

    progress: float = 0.0
    message: str = ""


class RunFinish(BaseModel):
    """``{"status": "succeeded"|"failed"|"cancelled", "result": {...}?, "error": "..."?}``."""

    status: Literal["succeeded", "failed", "cancelled"]
    result: dict[str, Any] | None = None
    error: str | None = None


class Job(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int
    model: str
    type: str
    status: str
    progress: float
    message: str
    result: dict[str, Any] | None


class GateInfo(BaseModel):
    model: str
    gate: dict[str, Any] | None


# -- monitoring -------------------------------------------------------------------------------------


class Window(BaseModel):
    since: str
    until: str
    seconds: float


class LabelDelay(BaseModel):
    median: float
    p90: float


class PerformanceBucket(BaseModel):
    start: str
    end: str
    labelled: int
    metrics: dict[str, Any]


class VersionPerformance(BaseModel):
    version: int
    predictions: int = Field(description="Predictions (rows, not requests) in the window")
    labelled: int = Field(description="Of those, how many have a label (the newest counts)")
    coverage: float | None
    label_delay_seconds: LabelDelay | None
    metrics: dict[str, Any] = Field(
        description="accuracy, precision, recall, f1 (macro), positive_class, "
        "precision_positive, recall_positive, f1_positive, log_loss, roc_auc; or mae, rmse, r2. "
        "Absent when not computable."
    )
    series: list[PerformanceBucket]


class PerformanceReport(BaseModel):
    model: str
    task: Literal["classification", "regression"]
    window: Window
    consumer: str | None
    truncated: bool = Field(description="More labels than performance_max_rows: newest read")
    max_rows: int
    versions: list[VersionPerformance]


class DriftFigures(BaseModel):
    model_config = ConfigDict(extra="allow")
    field: str
    kind: Literal["numeric", "categorical"]
    psi: float
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    chi2: float | None = None
    chi2_pvalue: float | None = None
    drifted: bool
    reasons: list[str]


class VersionDrift(BaseModel):
    version: int
    rows: int
    reference_rows: int | None
    reference: bool
    reason: str | None
    drifted: bool
    fields: list[DriftFigures]
    predictions: DriftFigures | None


class DriftReport(BaseModel):
    model: str
    window: Window
    thresholds: dict[str, float]
    versions: list[VersionDrift]


class MonitoringInfo(BaseModel):
    model: str
    monitoring: dict[str, Any] | None = Field(
        description='{"thresholds": {"psi", "ks_pvalue", "chi2_pvalue", "min_rows"}, '
        '"window": "1h", "webhook": "https://..."}; every key optional'
    )
    thresholds: dict[str, float] | None = None
    window_seconds: float | None = None


class ReferenceSet(BaseModel):
    model: str
    source: str
    version: int
    since: str
    until: str
    rows: int
    sample_rows: int
