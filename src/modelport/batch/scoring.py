"""Batch scoring: a CSV or Parquet file through one registered version, chunk by chunk.

The client side of ``modelport score``. The version is resolved through the server (by number,
or by alias at the time the run starts), its artifact downloaded and checked against the sha256
the registry recorded, and loaded here. The file is read ``chunk_rows`` rows at a time (pandas'
CSV reader, pyarrow's Parquet batches) and never whole, so memory is bounded by the chunk, not
the file. Each chunk's rows are checked against the version's input schema: rows that fit are
scored, the others go to the rejects file with their row number and every problem they have.

Both engines (this one and :mod:`modelport.batch.spark`) turn input columns into rows the same way
(:class:`Scorer`): CSV cells are text and parsed per field type; an empty cell, a null or a
NaN counts as missing. So the two give the same predictions for the same file.

The run is a job of type ``score`` on the server (created running, reported and finished by
this process): its lineage (version, alias, input path, sha256 and size, engine, who) is in the
job's params, its counts in the result, and ``GET /v1/jobs/{id}`` shows it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import flavors
from ..errors import Cancelled, InvalidInput, InvalidRequest, ModelportError
from ..inputs.cells import is_text, text_values, typed_values
from ..inputs.schema import Schema
from .files import FileOutput, Source, file_format, fingerprint, open_source, rejects_path
from .sql import TableOutput, check_sqlite_journal, open_sql_source

if TYPE_CHECKING:
    import pandas as pd

    from ..client import Client

ENGINES = ("pandas", "spark")
#: Columns every output row gets besides the input (or id) columns and the probabilities.
ADDED_COLUMNS = ("prediction", "model", "version", "run_id")
#: How often a run tells the server it is alive (the server fails runs silent for long).
HEARTBEAT_SECONDS = 10.0


# -- rows from columns: shared by both engines (cells read by modelport.inputs.cells) -------------


@dataclass
class ScoredChunk:
    """One chunk's outcome: which rows were scored, their outputs, why the others were not."""

    kept: list[int]
    predictions: Any
    proba: np.ndarray | None
    reasons: dict[int, str] = field(default_factory=dict)


class Scorer:
    """A version's model and input schema, scoring frames of input columns.

    Every engine calls :meth:`score` on its chunks (the pandas engine on the file's chunks,
    the Spark UDF on Arrow batches), so rows are parsed, checked and scored one way.
    """

    def __init__(self, loaded: flavors.LoadedModel, schema: Schema) -> None:
        self.loaded = loaded
        self.schema = schema

    @classmethod
    def from_artifact(cls, data: bytes, flavor: str, schema: Schema) -> Scorer:
        """Load an artifact's bytes (already checked against the registry's sha256)."""
        # The registry accepted code-running formats only from admin keys and loads them
        # itself; this process loads the same bytes (see docs/batch.md, "Security").
        with tempfile.TemporaryDirectory(prefix="modelport-score-") as folder:
            path = Path(folder) / "artifact"
            path.write_bytes(data)
            return cls(flavors.load(flavor, path, trust_code=True), schema)

    @property
    def proba_columns(self) -> list[str]:
        return [f"proba_{c}" for c in self.loaded.class_keys] if self.loaded.has_proba else []

    def rows(self, frame: pd.DataFrame) -> list[tuple[Any, ...]]:
        """The frame's rows as values in field order (not yet checked)."""
        n = len(frame)
        columns: list[list[Any]] = []
        for f in self.schema.fields:
            if f.name not in frame.columns:
                columns.append([None] * n)
                continue
            series = frame[f.name]
            values = series.tolist()
            columns.append(text_values(values, f) if is_text(series) else typed_values(values, f))
        return list(zip(*columns, strict=True))

    def score(self, frame: pd.DataFrame) -> ScoredChunk:
        """Check the frame's rows and score those that fit the schema."""
        rows = self.rows(frame)
        if not rows:
            return ScoredChunk([], [], None)
        kept = list(range(len(rows)))
        reasons: dict[int, str] = {}
        try:
            table = self.schema.table_from_rows(rows, shaped=False)
        except InvalidInput:
            names = self.schema.names
            records = [{k: v for k, v in zip(names, r, strict=True) if v is not None} for r in rows]
            good, kept, bad = self.schema.partition(records)
            reasons = {
                i: "; ".join(f"{p['field']}: {p['reason']}" for p in problems)
                for i, problems in bad.items()
            }
            if not good:
                return ScoredChunk([], [], None, reasons)
            table = self.schema.table_from_rows(good, shaped=True)
        predictions, proba = self.loaded.predict_with_proba(table)
        return ScoredChunk(kept, predictions, proba, reasons)


# -- the run: lineage and liveness on the server ----------------------------------------------------


class Run:
    """A score run recorded on the server: started, kept alive, finished once."""

    def __init__(
        self,
        client: Client,
        job: dict[str, Any],
        on_cancel: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self._on_cancel = on_cancel
        self.job = job
        self.id: int = job["id"]
        self._progress = (0.0, "started")
        self._cancelled = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, name="modelport-score-run", daemon=True)
        self._thread.start()

    def update(self, progress: float, message: str) -> None:
        """The latest progress; sent with the next heartbeat. Raises once cancelled."""
        with self._lock:
            self._progress = (min(max(progress, 0.0), 1.0), message)
        self.check()

    def check(self) -> None:
        """Raise :class:`Cancelled` when a cancel was requested."""
        if self._cancelled.is_set():
            raise Cancelled(f"run {self.id} was cancelled")

    def _beat(self) -> None:
        sent: tuple[float, str] | None = None
        while not self._stop.wait(HEARTBEAT_SECONDS if sent is not None else 1.0):
            with self._lock:
                progress = self._progress
            try:
                out = self.client.report_run(self.id, *progress)
            except ModelportError:
                continue  # the server is briefly away: the next beat tries again
            sent = progress
            if out.get("cancel_requested") and not self._cancelled.is_set():
                self._cancelled.set()
                if self._on_cancel is not None:
                    self._on_cancel()

    def finish(
        self, status: str, *, result: Any = None, error: str | None = None
    ) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=30)
        self.job = self.client.finish_run(self.id, status, result=result, error=error)
        return self.job


@dataclass
class Request:
    """What to score: checked once, before anything runs."""

    name: str
    input: str | None
    output: str | None
    version: int | None = None
    alias: str | None = None
    chunk_rows: int = 10_000
    id_column: str | None = None
    engine: str = "pandas"
    progress: bool = True
    spark_conf: dict[str, str] = field(default_factory=dict)
    #: A query to read instead of an INPUT file, a table to write instead of an OUTPUT file,
    #: and the database (SQLAlchemy URL) both are in.
    sql: str | None = None
    table: str | None = None
    db: str | None = None

    def check(self) -> None:
        problems: list[dict[str, Any]] = []
        if self.version is not None and self.alias is not None:
            problems.append({"field": "alias", "reason": "give either a version or an alias"})
        if self.engine not in ENGINES:
            problems.append({"field": "engine", "reason": f"expected one of {', '.join(ENGINES)}"})
        if self.chunk_rows < 1:
            problems.append({"field": "chunk_rows", "reason": "expected a positive integer"})
        if (self.input is None) == (self.sql is None):
            problems.append({"field": "INPUT", "reason": "give an INPUT file or --from-sql"})
        if (self.output is None) == (self.table is None):
            problems.append({"field": "OUTPUT", "reason": "give an OUTPUT file or --to-table"})
        if (self.sql is not None or self.table is not None) and not self.db:
            problems.append({"field": "db", "reason": "--from-sql and --to-table need --db URL"})
        if self.engine == "spark" and (self.sql is not None or self.table is not None):
            problems.append(
                {"field": "engine", "reason": "the spark engine reads and writes files only"}
            )
        if self.table is not None and not _TABLE_NAME.match(self.table):
            problems.append(
                {"field": "to_table", "reason": "expected a table name: letters, digits, _ and ."}
            )
        if self.input is not None:
            if not os.path.isfile(self.input):
                problems.append({"field": "INPUT", "reason": f"no such file: {self.input}"})
            elif self.output is not None and (
                os.path.abspath(self.input) == os.path.abspath(self.output)
            ):
                problems.append(
                    {"field": "OUTPUT", "reason": "the output would overwrite the input"}
                )
        if problems:
            p = problems[0]
            raise InvalidRequest(f"{p['field']}: {p['reason']}", details=problems)
        if self.input is not None:
            file_format(self.input, "INPUT")
        if self.output is not None:
            self.output_format()

    def output_format(self) -> str:
        """``csv`` or ``parquet``: by OUTPUT's extension; with the spark engine, an OUTPUT
        without one is a folder written in the INPUT's format."""
        assert self.output is not None
        if self.engine == "spark" and self.input is not None:
            lower = self.output.rstrip("/").lower()
            if not lower.endswith((".parquet", ".pq", ".csv", ".csv.gz")):
                return file_format(self.input, "INPUT")
        return file_format(self.output, "OUTPUT")

    def describe_input(self) -> dict[str, Any]:
        if self.sql is not None:
            return {"sql": self.sql, "db": _masked(self.db or "")}
        assert self.input is not None
        return {"path": os.path.abspath(self.input), "format": file_format(self.input, "INPUT")}

    def describe_outputs(self) -> tuple[str, str]:
        """Where the scored rows and the rejects go: file paths, or ``table NAME in URL``."""
        if self.table is not None:
            where = f"in {_masked(self.db or '')}"
            return f"table {self.table} {where}", f"table {self.table}_rejects {where}"
        assert self.output is not None
        return os.path.abspath(self.output), os.path.abspath(rejects_path(self.output))


_TABLE_NAME = __import__("re").compile(
    r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?\Z"
)


def _masked(url: str) -> str:
    """A database URL without its password (for lineage and messages)."""
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"


def resolve(
    client: Client, name: str, version: int | None = None, alias: str | None = None
) -> dict[str, Any]:
    """The version to score with: the given one, the alias's target, else ``production``, else
    the latest."""
    if version is not None and alias is not None:
        raise InvalidRequest(
            "give either a version or an alias, not both",
            details=[{"field": "alias", "reason": "conflicts with version"}],
        )
    if version is not None:
        return client.version(name, version)
    model = client.model(name)
    if alias is not None:
        target = model["aliases"].get(alias)
        if target is None:
            raise InvalidRequest(
                f"model {name!r} has no alias {alias!r} "
                f"(aliases: {', '.join(model['aliases']) or 'none'})",
                details=[{"field": "alias", "reason": "no such alias"}],
            )
        return client.version(name, target)
    number = model["aliases"].get("production") or model["latest_version"]
    if number is None:
        raise InvalidRequest(
            f"model {name!r} has no versions to score with",
            details=[{"field": "NAME", "reason": "no versions"}],
        )
    return client.version(name, number)


def check_columns(schema: Schema, columns: Sequence[str]) -> None:
    """Fail at once when the input lacks a column that every row would need."""
    have = set(columns)
    lacking = [f.name for f in schema.fields if f.required and f.name not in have]
    if lacking:
        raise InvalidInput(
            f"the input lacks the column(s) {', '.join(lacking)} the version requires",
            details=[{"field": n, "reason": "no such column in the input"} for n in lacking],
        )


def output_columns(
    columns: Sequence[str], proba_columns: Sequence[str], id_column: str | None
) -> list[str]:
    """The output's columns; fails when an input column would be overwritten."""
    if id_column is not None and id_column not in columns:
        raise InvalidRequest(
            f"--id-column {id_column!r} is not a column of the input",
            details=[{"field": "id_column", "reason": "no such column"}],
        )
    kept = [id_column] if id_column is not None else list(columns)
    added = ["prediction", *proba_columns, "model", "version", "run_id"]
    clash = [c for c in added if c in kept]
    if clash:
        raise InvalidRequest(
            f"the input already has the column(s) {', '.join(clash)} the output adds "
            "(name an --id-column to keep only that)",
            details=[{"field": c, "reason": "clashes with an output column"} for c in clash],
        )
    return [*kept, *added]


def score(client: Client, req: Request) -> dict[str, Any]:
    """Run a score request to its end; the finished job (its result has the counts)."""
    req.check()
    version = resolve(client, req.name, req.version, req.alias)
    schema = Schema.from_dict(version["schema"])
    output, rejected = req.describe_outputs()
    lineage = {
        "version": version["version"],
        "alias": req.alias,
        "flavor": version["flavor"],
        "artifact_sha256": version["sha256"],
        "input": req.describe_input(),
        "output": output,
        "rejects": rejected,
        "engine": req.engine,
        "chunk_rows": req.chunk_rows,
        "id_column": req.id_column,
        "client": f"{socket.gethostname()}:{os.getpid()}",
    }
    if req.engine == "spark":
        from .spark import run_spark

        return run_spark(client, req, version, schema, lineage)
    artifact = client.artifact(req.name, version["version"], sha256=version["sha256"])
    scorer = Scorer.from_artifact(artifact, version["flavor"], schema)
    if req.sql is not None and req.table is not None:
        check_sqlite_journal(req.db or "")
    if req.sql is not None:
        source = open_sql_source(req.db or "", req.sql, req.chunk_rows)
    else:
        assert req.input is not None
        source = open_source(req.input, req.chunk_rows)
    with contextlib.closing(source):
        check_columns(schema, source.columns)
        columns = output_columns(source.columns, scorer.proba_columns, req.id_column)
        if req.input is not None:
            lineage["input"].update(fingerprint(req.input))
        run = Run(client, client.start_run(req.name, lineage))
        return run_chunks(run, req, version, scorer, source, columns)


@contextlib.contextmanager
def recorded(run: Run, counts: dict[str, int]) -> Iterator[None]:
    """Finish the run as failed (or cancelled) with the counts so far when the body raises."""
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, Cancelled | KeyboardInterrupt):
            run.finish("cancelled", result=counts, error="cancelled")
        else:
            run.finish("failed", result=counts, error=f"{type(exc).__name__}: {exc}")
        raise


def run_chunks(
    run: Run,
    req: Request,
    version: dict[str, Any],
    scorer: Scorer,
    source: Source,
    columns: list[str],
) -> dict[str, Any]:
    """The pandas engine: every chunk through the scorer into the output and rejects files."""
    from tqdm import tqdm

    started = time.monotonic()
    out: FileOutput | TableOutput
    rejects: FileOutput | TableOutput
    if req.table is not None:
        out = TableOutput(req.db or "", req.table, run.id)
        rejects = TableOutput(req.db or "", f"{req.table}_rejects", run.id, out.engine)
    else:
        assert req.output is not None
        fmt = file_format(req.output, "OUTPUT")
        out = FileOutput(req.output, fmt)
        rejects = FileOutput(rejects_path(req.output), fmt)
    counts = {"rows": 0, "scored": 0, "rejected": 0}
    bar = tqdm(
        total=source.total or None,
        unit=source.unit,
        unit_scale=source.unit == "B",
        disable=not req.progress,
        desc=f"{req.name} v{version['version']}",
    )
    with recorded(run, counts), contextlib.ExitStack() as cleanup:
        cleanup.callback(bar.close)
        cleanup.push(lambda *exc: out.abort() if exc[0] is not None else None)
        cleanup.push(lambda *exc: rejects.abort() if exc[0] is not None else None)
        for first, chunk in source:
            scored = scorer.score(chunk)
            out.write(_output_frame(chunk, scored, scorer, columns, version, run.id))
            rejects.write(_rejects_frame(chunk, scored, first))
            counts["rows"] += len(chunk)
            counts["scored"] += len(scored.kept)
            counts["rejected"] += len(scored.reasons)
            bar.update(source.position() - bar.n)
            bar.set_postfix(scored=counts["scored"], rejected=counts["rejected"], refresh=False)
            done = source.position() / source.total if source.total else 0.0
            run.update(done, f"{counts['rows']} rows: {counts['rejected']} rejected")
        out.close(_empty_output(columns))
        rejects.close(_empty_rejects(source.columns))
        if source.total == 0:  # a query's rows, counted as they came: all of them now
            bar.total = bar.n
        bar.set_postfix(scored=counts["scored"], rejected=counts["rejected"], refresh=False)
        bar.refresh()
    output, rejected = req.describe_outputs()
    result = {
        **counts,
        "output": output,
        "rejects": rejected,
        "seconds": round(time.monotonic() - started, 3),
    }
    return run.finish("succeeded", result=result)


def _output_frame(
    chunk: pd.DataFrame,
    scored: ScoredChunk,
    scorer: Scorer,
    columns: list[str],
    version: dict[str, Any],
    run_id: int,
) -> pd.DataFrame:
    kept_input = [c for c in columns if c in chunk.columns]
    frame = chunk.iloc[scored.kept][kept_input].reset_index(drop=True)
    frame["prediction"] = np.asarray(scored.predictions) if len(scored.kept) else []
    for j, name in enumerate(scorer.proba_columns):
        frame[name] = scored.proba[:, j] if scored.proba is not None else np.nan
    frame["model"] = version["model"]
    frame["version"] = version["version"]
    frame["run_id"] = run_id
    return frame


def _rejects_frame(chunk: pd.DataFrame, scored: ScoredChunk, first: int) -> pd.DataFrame:
    import pandas as pd

    index = sorted(scored.reasons)
    frame = chunk.iloc[index].reset_index(drop=True)
    frame.insert(0, "reason", [scored.reasons[i] for i in index])
    frame.insert(0, "row", pd.Series([first + i for i in index], dtype="int64"))
    return frame


def _empty_output(columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {c: pd.Series(dtype="float64" if c.startswith("proba_") else "object") for c in columns}
    )


def _empty_rejects(columns: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {
            "row": pd.Series(dtype="int64"),
            "reason": pd.Series(dtype="object"),
            **{c: pd.Series(dtype="object") for c in columns},
        }
    )
