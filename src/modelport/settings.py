"""Every setting modelport reads, declared once.

Precedence, highest first: a CLI flag (passed to :func:`load_settings` as an override), a
``MODELPORT_<NAME>`` environment variable, a TOML config file (``--config`` or
``MODELPORT_CONFIG``), the default. Unknown keys are an error wherever they appear. The same
table drives ``modelport serve --help``, ``docs/settings.md`` and ``GET /v1/settings``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import tomllib
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from .errors import InvalidRequest
from .ids import MAX_BLOCK


class Settings(BaseSettings):
    """The typed settings of one modelport process."""

    model_config = SettingsConfigDict(env_prefix="MODELPORT_", extra="forbid", frozen=True)

    home: Path = Field(
        default=Path(".modelport"),
        description="Folder for the embedded store (SQLite file) and the local artifact folder.",
    )
    store: str | None = Field(
        default=None,
        description=(
            "Database URL: sqlite:///path/to/file.db or postgresql://user@host:port/db. "
            "Default: the SQLite file modelport.db in the home folder."
        ),
    )
    artifacts: str | None = Field(
        default=None,
        description=(
            "Where content-addressed artifacts and dataset snapshots live: a folder, or an fsspec "
            "URL shared by replicas (s3://bucket/prefix with the s3 extra, gs://..., ...), read "
            "through cache/artifacts/ in the home folder. Default: artifacts/ in the home folder."
        ),
    )
    artifacts_options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Storage options of a remote artifacts URL, as a JSON object passed to fsspec, e.g. "
            '{"endpoint_url": "http://minio:9000"} for s3://. Credentials come from the usual '
            "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...)."
        ),
    )
    host: str = Field(default="127.0.0.1", description="Address the server listens on.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port the server listens on.")
    grpc_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description=(
            "TCP port of the Open Inference Protocol over gRPC, on the same host as REST "
            "(needs the grpc extra). Off when unset; 0 lets the system choose a free port, "
            "printed at start (one process only). With workers > 1 every worker serves it on "
            "this one port."
        ),
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "Server processes sharing the port and the store. Registry changes made through "
            "any of them reach the others within registry_poll_seconds."
        ),
    )
    no_auth: bool = Field(
        default=False,
        description=(
            "Serve without API keys (every caller is the consumer 'anonymous' with every scope). "
            "For local experiments only: refused on a non-loopback host unless force_no_auth."
        ),
    )
    force_no_auth: bool = Field(
        default=False, description="Allow no_auth on a non-loopback host (prints a warning)."
    )
    dangerously_allow_code_without_auth: bool = Field(
        default=False,
        description=(
            "With no_auth, still accept pushes that run code when loaded (pickle, joblib, "
            "MLflow, skops files with untrusted types). Off, a server without keys refuses "
            "them: anyone who can reach it, a web page open in your browser included, could "
            "push one."
        ),
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Names the server answers to in the Host header, comma-separated (*.example.com "
            "for subdomains, * for any); other names get 421, which stops DNS rebinding. "
            "Loopback names and IP addresses are always accepted. Default: the host setting; "
            "any name when listening on 0.0.0.0 or :: with keys."
        ),
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the server."
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description=(
            "SQLite synchronous mode. FULL syncs every group commit to disk and survives power "
            "loss; NORMAL survives a process crash only."
        ),
    )
    sqlite_checkpoint_seconds: float = Field(
        default=0.05,
        ge=0,
        description=(
            "How often a background thread of the server copies SQLite's write-ahead log into "
            "the database (a passive checkpoint; skipped while the server commits nothing), "
            "so that no commit, and no answer waiting for one, pays for it. Short intervals keep "
            "each copy, and its flush, small; 0: the committing writer does it every 1000 pages "
            "(SQLite's way)."
        ),
    )
    ledger_max_batch: int = Field(
        default=512,
        ge=1,
        description="Most write jobs (requests) grouped into one ledger commit.",
    )
    ledger_retention_days: float = Field(
        default=0.0,
        ge=0,
        le=36_500,
        description=(
            "Days a prediction stays in the ledger table before it moves to the Parquet archive "
            "in the artifact store (still read by lookups, replay and performance); 0 keeps "
            "every row in the table. A model's serving setting ledger_retention_days overrides "
            "it. Needs pyarrow (the parquet extra)."
        ),
    )
    ledger_archive_seconds: float = Field(
        default=300.0,
        ge=0,
        description="How often each server archives rows past their retention; 0: never.",
    )
    ledger_archive_batch: int = Field(
        default=5000,
        ge=1,
        le=1_000_000,
        description="Ledger rows (requests) archived per batch: one Parquet file per day each.",
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Largest request body (and gRPC message) accepted, in bytes.",
    )
    header_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How long a client may take to send a request's headers, from its first byte (or "
            "from connecting); a slower connection is closed."
        ),
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How long the server waits for the next part of a request body before answering "
            "408 and closing the connection."
        ),
    )
    max_artifact_bytes: int = Field(
        default=2 * 1024 * 1024 * 1024,
        ge=1024,
        description="Largest artifact accepted by a push, in bytes.",
    )
    max_json_depth: int = Field(
        default=64,
        ge=2,
        le=200,
        description=(
            "Deepest nesting of arrays and objects accepted in a JSON body; deeper bodies get "
            "a 400 (the JSON encoder itself stops at 254 levels)."
        ),
    )
    max_rows_per_request: int = Field(
        default=10_000,
        ge=1,
        le=MAX_BLOCK,
        description=(
            "Most rows one predict request may carry (at most 16,777,216: a request's "
            "prediction ids are one block of consecutive ids)."
        ),
    )
    predict_threads: int = Field(
        default=4,
        ge=1,
        description="Threads that run model predictions (calls within their timeout) beside "
        "the event loop.",
    )
    hung_threads_max: int = Field(
        default=8,
        ge=0,
        le=1024,
        description=(
            "Spare predict threads started in place of threads held by calls past their "
            "timeout, so hung calls do not take the other models' threads; past this many "
            "hung calls at once, they do."
        ),
    )
    predict_timeout_seconds: float = Field(
        default=30.0,
        ge=0.001,
        le=86_400,
        description=(
            "How long one model call may run, from when it gets a predict thread, before its "
            "requests get 504 and the version is marked unhealthy (per model: the serving "
            "setting of the same name). A call that waits that long for a thread is not run: "
            "503 server_saturated, and the version's health is not touched."
        ),
    )
    unhealthy_after_failures: int = Field(
        default=10,
        ge=1,
        description="Failed model calls in a row that mark a version unhealthy (503 until a probe).",
    )
    unhealthy_cooldown_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long an unhealthy version is left alone before one request probes it.",
    )
    model_memory_growth_mb: float = Field(
        default=1024.0,
        ge=0,
        description=(
            "Resident-memory growth over a custom-code version's calls that marks it unhealthy "
            "(a leak); 0 turns the watch off. scikit-learn estimators are not watched."
        ),
    )
    memory_trim_seconds: float = Field(
        default=10.0,
        ge=0,
        description=(
            "How often the server looks whether traffic went quiet; after a burst, once quiet "
            "for this long, it returns the allocator's free memory to the system. 0: never."
        ),
    )
    batch_max_rows: int = Field(
        default=1024,
        ge=1,
        description=(
            "Most rows one model call takes when concurrent requests are batched; a larger "
            "request is split across calls."
        ),
    )
    batch_max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description=(
            "How long a batch may wait for more rows while another batch of the same version is "
            "running. A request arriving at an idle model never waits."
        ),
    )
    batch_max_concurrent: int = Field(
        default=1,
        ge=1,
        description="Most batches of one version running at once.",
    )
    cache_max_entries: int = Field(
        default=0,
        ge=0,
        description=(
            "Rows whose predictions each deterministic version keeps in memory, least recently "
            "used first out (0: no cache). Models that learn online cache only with their own "
            "serving setting of the same name."
        ),
    )
    max_segments: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description=(
            "Segments one segmented model may have; observations that would start a segment "
            "past it are rejected (422 per row) and a segment_limit event is recorded (per "
            "model: the serving setting of the same name)."
        ),
    )
    max_live_segments: int = Field(
        default=100,
        ge=1,
        description=(
            "Segment instances of one segmented model loaded at once; the least recently used "
            "is unloaded and loaded again from the store when asked for (per model: the "
            "serving setting of the same name)."
        ),
    )
    inline_predict_ms: float = Field(
        default=1.0,
        ge=0,
        description=(
            "Versions whose predict calls take at most this many milliseconds of CPU (and do "
            "not wait on the event loop) run inline; slower ones run in the predict threads, so "
            "the server keeps reading requests (and filling the next batch) meanwhile."
        ),
    )
    inline_when_alone: bool = Field(
        default=True,
        description=(
            "Serve a request that is all the process serves (one HTTP connection open, "
            "nothing else scoring, no gRPC port) on the event loop's own thread: its model "
            "call on its own task instead of a batch's, its ledger commit there instead of "
            "the writer thread's. The loop has nothing else to do while it waits for that "
            "flush, and the hand-overs between tasks and threads are saved (2-8 % of a 1-row "
            "request's CPU at one connection for each; bench/RESULTS.md). A connection opened "
            "meanwhile waits for that flush. Off: batches and commits as under load."
        ),
    )
    release_check_seconds: float = Field(
        default=1.0,
        gt=0,
        description=(
            "How often each server re-reads bandit statistics and checks canary guards from "
            "the store."
        ),
    )
    drift_check_seconds: float = Field(
        default=60.0,
        ge=0,
        description=(
            "How often each server judges drift per model and version (events, webhooks); "
            "0 disables the check. Servers sharing a store act once per change."
        ),
    )
    drift_max_rows: int = Field(
        default=50_000,
        ge=100,
        description="The most recent predictions per version a drift report reads.",
    )
    performance_max_rows: int = Field(
        default=200_000,
        ge=100,
        description="The most labelled predictions a performance report reads (newest first).",
    )
    webhook_timeout_seconds: float = Field(
        default=5.0, gt=0, description="How long a monitoring webhook call may take."
    )
    job_workers: int = Field(
        default=1,
        ge=0,
        description=(
            "Jobs (retrains, replays) this server runs at once, each in a worker process of its "
            "own; 0: this server runs none (other servers sharing the store do)."
        ),
    )
    learn_poll_seconds: float = Field(
        default=0.2,
        gt=0,
        description="How often the online learner of a server reads new observations.",
    )
    job_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often a server looks for queued jobs to run."
    )
    score_run_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description=(
            "A batch scoring run whose client has not reported for this long is marked failed "
            "(clients report every 10 s)."
        ),
    )
    shadow_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description=(
            "How long a shadow copy may take to score before it is recorded as failed (it never "
            "delays the caller's answer); also how long shutdown waits for shadow copies."
        ),
    )
    metrics_public: bool = Field(
        default=False,
        description=(
            "Answer /metrics without a key. By default a scrape needs a key with the read "
            "scope (Prometheus: authorization credentials in the scrape config)."
        ),
    )
    metrics_max_series: int = Field(
        default=1000,
        ge=10,
        description=(
            "The most label sets each Prometheus metric family keeps; further ones (say, a "
            "flood of online snapshots) are counted under '_other' labels."
        ),
    )
    model_cache: bool = Field(
        default=True,
        description=(
            "Keep models this server loaded from skops files as joblib files in the home "
            "folder's cache/, so restarts and workers load them without importing skops "
            "(see docs/security.md)."
        ),
    )
    idempotency_window_seconds: float = Field(
        default=86400.0,
        gt=0,
        description=(
            "How long an Idempotency-Key is remembered: a repeat of a predict or observations "
            "request with the same key from the same consumer within this time answers what the "
            "first got, without scoring or storing again (stream workers send the record id)."
        ),
    )
    key_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How long a verified API key is trusted before it is looked up again.",
    )
    registry_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        description=(
            "How often the server checks the store for registry changes made by other "
            "processes (alias moves, pushes)."
        ),
    )

    @field_validator("artifacts_options", mode="before")
    @classmethod
    def _json_options(cls, value: Any) -> Any:
        if isinstance(value, str):  # a flag gives JSON text
            try:
                return json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON object: {exc}") from None
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # a flag or the environment: a,b or a JSON array
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not a JSON array: {exc}") from None
            else:
                value = text.split(",")
        if not isinstance(value, list):
            return value
        names = []
        for item in value:
            name = str(item).strip().lower().rstrip(".")
            if not name:
                continue
            if not re.fullmatch(r"\*|(\*\.)?[a-z0-9_.-]+|\[[0-9a-f:.]+\]", name):
                raise ValueError(
                    f"{item!r} is not a host name (no scheme, port or path; *.example.com "
                    "for subdomains, * for any)"
                )
            names.append(name)
        return names

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The config file arrives as a lower-priority init source (see load_settings).
        return (init_settings, env_settings)

    @property
    def store_url(self) -> str:
        """The database URL, defaulting to the SQLite file in the home folder."""
        return self.store or f"sqlite:///{self.home / 'modelport.db'}"

    @property
    def artifacts_location(self) -> str:
        """Where artifacts live, defaulting to a folder in the home folder."""
        return self.artifacts or str(self.home / "artifacts")

    def public(self) -> dict[str, Any]:
        """The settings as shown to API callers: passwords in the store URL and secrets in the
        artifact storage options are masked."""
        data = self.model_dump(mode="json")
        data["store"] = _mask_password(self.store_url)
        data["artifacts"] = self.artifacts_location
        data["artifacts_options"] = _mask_secrets(self.artifacts_options)
        return data


_SECRET = re.compile(r"secret|password|token|key|credential", re.IGNORECASE)


def _mask_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "***" if _SECRET.search(str(k)) else _mask_secrets(v) for k, v in value.items()}
    return value


def _mask_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def describe() -> list[dict[str, Any]]:
    """Name, type, default, environment variable and help text of every setting."""
    rows = []
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        rows.append(
            {
                "name": name,
                "env": f"MODELPORT_{name.upper()}",
                "default": str(default) if isinstance(default, Path) else default,
                "help": info.description or "",
            }
        )
    return rows


def markdown() -> str:
    """The settings table of ``docs/settings.md`` (a test keeps the file equal to this)."""
    lines = ["| setting | flag | environment | default | meaning |", "|---|---|---|---|---|"]
    for row in describe():
        flag = "--" + row["name"].replace("_", "-")
        if row["default"] is True:  # on unless turned off
            flag += "` / `--no-" + flag[2:]
        default = "" if row["default"] is None else f"`{row['default']}`"
        lines.append(f"| `{row['name']}` | `{flag}` | `{row['env']}` | {default} | {row['help']} |")
    return "\n".join(lines) + "\n"


def load_settings(
    overrides: dict[str, Any] | None = None, config_file: str | Path | None = None
) -> Settings:
    """Build settings from flags (``overrides``), the environment, a TOML file and defaults."""
    config_file = config_file or os.environ.get("MODELPORT_CONFIG")
    file_values: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        try:
            file_values = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise InvalidRequest(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise InvalidRequest(f"config file {path} is not valid TOML: {exc}") from None
        unknown = sorted(set(file_values) - set(Settings.model_fields))
        if unknown:
            raise InvalidRequest(f"unknown setting(s) in {path}: {', '.join(unknown)}")
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    env_names = {
        name for name in Settings.model_fields if f"MODELPORT_{name.upper()}" in os.environ
    }
    # The file only fills what neither a flag nor the environment sets.
    merged = {k: v for k, v in file_values.items() if k not in env_names}
    merged.update(flags)
    try:
        return Settings(**merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidRequest(f"invalid settings: {problems}") from None
    except SettingsError as exc:  # an environment variable that should hold JSON does not
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise InvalidRequest(f"invalid settings: {exc}{cause}") from None
