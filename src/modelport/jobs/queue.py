"""Jobs: work done off the serving path, in a worker process of its own.

A job is a row (``queued`` -> ``running`` -> ``succeeded`` | ``failed`` | ``cancelled``) with its
progress, a log, and a result. Servers claim queued jobs (one claim wins, whatever the number
of servers) and run each as ``python -m modelport.jobs JOB_ID`` with the server's settings; the
worker reports through the store, so ``GET /v1/jobs/{id}`` shows the same from every server.
Cancelling sets a flag the server acts on by stopping the worker. Kinds:

- ``retrain``: snapshot the observations (or take a given dataset), train the model's
  algorithm with a seed, evaluate on the holdout (the champion too, on the same rows), store the
  result as a new version aliased ``candidate`` with its lineage, and apply the promotion gate;
- ``replay``: re-score logged traffic through a version (see :mod:`modelport.learning.replay`);
- ``score``: a batch scoring run (see :mod:`modelport.batch.scoring`). It is not queued: the client
  that scores (``modelport score``) creates it running, reports its progress (a heartbeat) and
  finishes it; its params are the run's lineage. A run whose client falls silent for
  ``score_run_timeout_seconds`` is marked failed by the next server that notices.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.engine import Connection

from ..documents import Document, Number, Whole, checked
from ..errors import Cancelled, Conflict, Forbidden, InvalidInput, JobNotFound
from ..ids import MAX_ID
from ..registry import models as registry
from ..store.tables import jobs, models
from ..timefmt import iso

KINDS = ("retrain", "replay", "score")
#: Kinds run by a client, not by a server's workers.
CLIENT_KINDS = ("score",)
FINISHED = ("succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
_LOG_LIMIT = 100_000  # characters of log kept per job


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _job_dict(row: Any, model: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "model": model,
        "type": row.type,
        "params": row.params,
        "status": row.status,
        "progress": row.progress,
        "message": row.message,
        "logs": row.logs,
        "result": row.result,
        "error": row.error,
        "cancel_requested": bool(row.cancel_requested),
        "worker": row.worker,
        "created_by": row.created_by,
        "created": iso(row.created_at),
        "started": iso(row.started_at) if row.started_at else None,
        "finished": iso(row.finished_at) if row.finished_at else None,
    }


class RetrainJob(Document):
    """``{"type": "retrain"}``: train the model's algorithm on a dataset snapshot."""

    type: Literal["retrain"]
    dataset: str | None = Field(None, description="A dataset id; default: a new snapshot.")
    seed: Whole = Field(0, description="Seeds the holdout split and the algorithm.")
    holdout: Number = Field(0.2, gt=0, lt=1, description="The share of rows held out.")
    params: dict[str, Any] | None = Field(None, description="Overrides of the algorithm's.")
    promote: bool | None = Field(None, description="Promote when the gate passes.")


class ReplayJob(Document):
    """``{"type": "replay", "version": n}``: logged traffic through a version, compared."""

    type: Literal["replay"]
    version: Whole = Field(ge=1, le=MAX_ID)
    since: str | Number | None = Field(None, description="ISO-8601 or epoch seconds.")
    until: str | Number | None = Field(None, description="ISO-8601 or epoch seconds.")
    consumer: str | None = Field(None, description="Only this consumer's traffic.")
    limit: Whole = Field(10_000, ge=1, le=1_000_000, description="At most this many rows.")


class ScoreInput(BaseModel):
    """A score run's input: a file (its path and sha256) or a query (and its database)."""

    model_config = ConfigDict(extra="allow")
    path: str | None = None
    sha256: str | None = Field(None, min_length=64, max_length=64)
    sql: str | None = None
    db: str | None = None

    @model_validator(mode="after")
    def _file_or_query(self) -> ScoreInput:
        if self.sql is not None or self.db is not None:
            if self.sql is None or self.db is None:
                raise ValueError("expected the query (sql) and its database (db)")
        elif self.path is None or self.sha256 is None:
            raise ValueError("expected the input file's path and sha256, or sql and db")
        return self


class ScoreJob(Document):
    """``{"type": "score", ...}``: a batch scoring run's start, with its lineage (the client
    runs it and reports; see docs/batch.md)."""

    type: Literal["score"]
    version: Whole = Field(ge=1, le=MAX_ID)
    input: ScoreInput
    engine: Literal["pandas", "spark"]
    alias: str | None = None
    flavor: str | None = None
    artifact_sha256: str | None = None
    output: str | None = None
    rejects: str | None = None
    chunk_rows: Whole | None = Field(None, ge=1)
    id_column: str | None = None
    client: str | None = None


JOB_DOCUMENTS: dict[str, type[Document]] = {
    "retrain": RetrainJob,
    "replay": ReplayJob,
    "score": ScoreJob,
}


def check_params(kind: Any, params: Any) -> dict[str, Any]:
    """A job request's parameters, checked per kind (422 naming the field); the defaults of
    the kind filled in, ``type`` left out."""
    if not isinstance(params, dict):
        raise InvalidInput(
            "the job body must be an object", details=[{"field": "body", "reason": "not an object"}]
        )
    if kind not in KINDS:
        raise InvalidInput(
            f"'type' must be one of {', '.join(KINDS)}",
            details=[{"field": "type", "reason": f"expected one of {', '.join(KINDS)}"}],
        )
    job = checked(JOB_DOCUMENTS[kind], params, f"{kind} job")
    if kind in CLIENT_KINDS:  # a run's lineage: kept as the client sent it
        return job.model_dump(exclude={"type"}, exclude_unset=True)
    return job.model_dump(exclude={"type"}, exclude_none=True)


def create_job(
    conn: Connection, name: str, kind: str, params: dict[str, Any], *, actor: str
) -> dict[str, Any]:
    """A job row: queued for a server's workers, or running for a client-run kind."""
    model = registry.model_row(conn, name)
    now = time.time()
    by_client = kind in CLIENT_KINDS
    job_id = conn.execute(
        jobs.insert()
        .values(
            model_id=model.id,
            type=kind,
            params=params,
            status="running" if by_client else "queued",
            worker=params.get("client") if by_client else None,
            created_by=actor,
            created_at=now,
            started_at=now if by_client else None,
            heartbeat_at=now if by_client else None,
        )
        .returning(jobs.c.id)
    ).scalar_one()
    return get_job(conn, job_id)


def get_job(conn: Connection, job_id: int) -> dict[str, Any]:
    row = conn.execute(
        sa.select(jobs, models.c.name.label("model_name"))
        .join(models, models.c.id == jobs.c.model_id)
        .where(jobs.c.id == job_id)
    ).first()
    if row is None:
        raise JobNotFound(f"no job {job_id}")
    return _job_dict(row, row.model_name)


def list_jobs(conn: Connection, name: str, limit: int = 50) -> list[dict[str, Any]]:
    model = registry.model_row(conn, name)
    rows = conn.execute(
        sa.select(jobs).where(jobs.c.model_id == model.id).order_by(jobs.c.id.desc()).limit(limit)
    )
    return [_job_dict(r, name) for r in rows]


def request_cancel(conn: Connection, job_id: int) -> dict[str, Any]:
    """Ask a job to stop: a queued job is cancelled at once, a running one by its server."""
    job = get_job(conn, job_id)
    if job["status"] == "queued":
        conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.status == "queued")
            .values(status="cancelled", finished_at=time.time(), cancel_requested=True)
        )
    elif job["status"] == "running":
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(cancel_requested=True))
    return get_job(conn, job_id)


def active_job(conn: Connection, model_id: int, kind: str) -> int | None:
    return conn.execute(
        sa.select(jobs.c.id).where(
            jobs.c.model_id == model_id, jobs.c.type == kind, jobs.c.status.in_(ACTIVE)
        )
    ).scalar()


def any_queued(conn: Connection) -> bool:
    """Whether some job waits for a server to claim it."""
    return (
        conn.execute(sa.select(jobs.c.id).where(jobs.c.status == "queued").limit(1)).first()
        is not None
    )


def claim(conn: Connection, worker: str) -> int | None:
    """Take the oldest queued job for this server; None when there is none (or another won)."""
    job_id = conn.execute(
        sa.select(jobs.c.id).where(jobs.c.status == "queued").order_by(jobs.c.id).limit(1)
    ).scalar()
    if job_id is None:
        return None
    now = time.time()
    won = conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.status == "queued")
        .values(status="running", worker=worker, started_at=now, heartbeat_at=now)
    ).rowcount
    return int(job_id) if won else None


def finish(
    conn: Connection, job_id: int, status: str, *, result: Any = None, error: str | None = None
) -> None:
    conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.status == "running")
        .values(
            status=status,
            result=result,
            error=error,
            finished_at=time.time(),
            progress=1.0 if status == "succeeded" else jobs.c.progress,
        )
    )


def report(conn: Connection, job_id: int, progress: float, message: str) -> bool:
    """Progress from the worker; returns whether a cancel was requested."""
    row = conn.execute(
        sa.select(jobs.c.logs, jobs.c.cancel_requested).where(jobs.c.id == job_id)
    ).one()
    line = f"{iso(time.time())} {message}\n"
    logs = (row.logs + line)[-_LOG_LIMIT:]
    conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id)
        .values(progress=progress, message=message, logs=logs, heartbeat_at=time.time())
    )
    return bool(row.cancel_requested)


def _client_run(conn: Connection, job_id: int, actor: str, admin: bool) -> Any:
    """A running client-run job that ``actor`` may report on (its creator, or an admin)."""
    row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
    if row is None:
        raise JobNotFound(f"no job {job_id}")
    if row.type not in CLIENT_KINDS:
        raise Conflict(f"job {job_id} is a {row.type} job: its server's worker reports on it")
    if row.created_by != actor and not admin:
        raise Forbidden(f"job {job_id} was started by {row.created_by!r}, not {actor!r}")
    if row.status != "running":
        raise Conflict(f"job {job_id} has ended ({row.status})")
    return row


def check_report(doc: Any) -> tuple[float, str]:
    """A progress report's body: ``{"progress": 0..1, "message": "..."}``."""
    if not isinstance(doc, dict):
        raise InvalidInput(
            "expected an object", details=[{"field": "body", "reason": "not an object"}]
        )
    progress = doc.get("progress", 0.0)
    if (
        isinstance(progress, bool)
        or not isinstance(progress, int | float)
        or not 0 <= progress <= 1
    ):
        raise InvalidInput(
            "'progress' must be a number from 0 to 1",
            details=[{"field": "progress", "reason": "expected a number from 0 to 1"}],
        )
    message = doc.get("message", "")
    if not isinstance(message, str):
        raise InvalidInput(
            "'message' must be a string",
            details=[{"field": "message", "reason": "expected a string"}],
        )
    return float(progress), message[:1000]


def check_finish(doc: Any) -> tuple[str, Any, str | None]:
    """A finish body: ``{"status": "succeeded"|"failed"|"cancelled", "result", "error"}``."""
    if not isinstance(doc, dict):
        raise InvalidInput(
            "expected an object", details=[{"field": "body", "reason": "not an object"}]
        )
    status = doc.get("status")
    if status not in FINISHED:
        raise InvalidInput(
            f"'status' must be one of {', '.join(FINISHED)}",
            details=[{"field": "status", "reason": f"expected one of {', '.join(FINISHED)}"}],
        )
    error = doc.get("error")
    if error is not None and not isinstance(error, str):
        raise InvalidInput(
            "'error' must be a string", details=[{"field": "error", "reason": "expected a string"}]
        )
    result = doc.get("result")
    if result is not None and not isinstance(result, dict):
        raise InvalidInput(
            "'result' must be an object",
            details=[{"field": "result", "reason": "expected an object"}],
        )
    return str(status), result, error


def report_run(
    conn: Connection, job_id: int, progress: float, message: str, *, actor: str, admin: bool
) -> dict[str, Any]:
    """A client-run job's progress (its heartbeat); the job, with ``cancel_requested``."""
    _client_run(conn, job_id, actor, admin)
    report(conn, job_id, progress, message)
    return get_job(conn, job_id)


def finish_run(
    conn: Connection,
    job_id: int,
    status: str,
    *,
    result: Any,
    error: str | None,
    actor: str,
    admin: bool,
) -> dict[str, Any]:
    """End a client-run job; the job."""
    _client_run(conn, job_id, actor, admin)
    finish(conn, job_id, status, result=result, error=error)
    return get_job(conn, job_id)


def _silent(timeout: float) -> Any:
    return sa.and_(
        jobs.c.type.in_(CLIENT_KINDS),
        jobs.c.status == "running",
        jobs.c.heartbeat_at < time.time() - timeout,
    )


def silent_client_runs(conn: Connection, timeout: float) -> bool:
    """Whether some client-run job has been silent for ``timeout`` seconds."""
    return conn.execute(sa.select(jobs.c.id).where(_silent(timeout)).limit(1)).first() is not None


def expire_client_runs(conn: Connection, timeout: float) -> int:
    """Fail client-run jobs whose client has been silent for ``timeout`` seconds."""
    return int(
        conn.execute(
            jobs.update()
            .where(_silent(timeout))
            .values(
                status="failed",
                error=f"the client stopped reporting (silent for over {timeout:g} s)",
                finished_at=time.time(),
            )
        ).rowcount
    )


# -- the worker process -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m modelport.jobs JOB_ID``: run one claimed job to its end."""
    import orjson

    from ..settings import Settings
    from ..store import Store
    from ..store.artifacts import artifact_store

    args = argv if argv is not None else sys.argv[1:]
    job_id = int(args[0])
    # A job is batch work beside a serving process: let serving have the CPU first. The
    # worker runs in a session of its own, and Linux shares CPU between sessions ("autogroups")
    # before nice values count, so the session's group is made nice too.
    with contextlib.suppress(OSError):
        os.nice(10)
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as group:
        group.write("10")
    settings = Settings(**orjson.loads(os.environ[SETTINGS_ENV]))
    store = Store(settings.store_url, sqlite_synchronous=settings.sqlite_synchronous)
    artifacts = artifact_store(settings)

    def progress(fraction: float, message: str) -> None:
        with store.transaction() as conn:
            if report(conn, job_id, fraction, message):
                raise Cancelled(f"job {job_id} was cancelled")

    try:
        with store.read() as conn:
            job = get_job(conn, job_id)
        progress(0.0, f"started on {worker_name()}")
        if job["type"] == "retrain":
            from ..learning.retrain import run_retrain

            result = run_retrain(store, artifacts, job, progress)
        else:
            from ..learning.replay import run_replay

            result = run_replay(store, artifacts, job, progress)
        with store.transaction() as conn:
            finish(conn, job_id, "succeeded", result=result)
        return 0
    except Cancelled:
        with store.transaction() as conn:
            finish(conn, job_id, "cancelled", error="cancelled on request")
        return 0
    except Exception as exc:
        with store.transaction() as conn:
            report(conn, job_id, 0.0, f"failed: {type(exc).__name__}: {exc}")
            finish(conn, job_id, "failed", error=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        store.close()


#: How a server hands its settings to a job's worker process.
SETTINGS_ENV = "MODELPORT_JOB_SETTINGS"

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
