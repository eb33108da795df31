"""Batch scoring on Apache Spark: a registered version as a pandas UDF (the ``spark`` extra).

    >>> from modelport.batch.spark import predict_udf
    >>> predict = predict_udf("churn", alias="production", url="http://mp:8000", key="mp_...")
    >>> scored = df.withColumn("scored", predict()).select("*", "scored.*")

The version is resolved on the driver through the server, its artifact downloaded once and
checked against the registry's sha256, and sent to the executors as a broadcast variable; each
Python worker loads it once per task and scores Arrow batches with the same
:class:`~modelport.batch.scoring.Scorer` as the pandas engine, so both give the same predictions and
reject the same rows. ``modelport score --engine spark`` runs a whole job through it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequest
from ..inputs.schema import Schema
from . import scoring as batch
from .files import file_format, fingerprint, rejects_path
from .scoring import Request, Run, Scorer, recorded

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column, DataFrame, SparkSession

    from ..client import Client

#: The struct field that holds a rejected row's reason (null for scored rows).
REJECTED = "rejected"
_ROW, _PART = "__modelport_row", "__modelport_partition"


def _pyspark() -> Any:
    try:
        import pyspark
    except ImportError:
        raise InvalidRequest(
            "the spark engine needs pyspark: pip install 'modelport[spark]'",
            details=[{"field": "engine", "reason": "pyspark is not installed"}],
        ) from None
    return pyspark


class PredictUDF:
    """A version as a Spark column function; call it with input columns (default: the schema's
    fields by name) to get a struct of ``prediction``, ``proba_<class>``... and ``rejected``.

    Columns are matched to the schema's fields by name (alias them when the names differ);
    ``output="prediction"`` gives just the prediction (null for rejected rows). ``udf`` is the
    underlying pandas UDF, which takes one struct column.
    """

    def __init__(self, version: dict[str, Any], scorer: Scorer, artifact: bytes) -> None:
        from pyspark.sql import SparkSession
        from pyspark.sql.pandas.functions import pandas_udf

        self.version = version
        self.schema = scorer.schema
        self.proba_columns = scorer.proba_columns
        self.return_type = _return_type(scorer)
        active = SparkSession.getActiveSession()
        # A broadcast ships the artifact to each executor once, not with every task.
        shipped: Any = active.sparkContext.broadcast(artifact) if active is not None else None
        inline = artifact if shipped is None else None
        flavor, schema_doc = version["flavor"], version["schema"]
        names = ["prediction", *self.proba_columns, REJECTED]

        def predict(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            import pandas as pd

            data: bytes = inline if inline is not None else shipped.value
            worker = Scorer.from_artifact(data, flavor, Schema.from_dict(schema_doc))
            for frame in batches:
                scored = worker.score(frame)
                n = len(frame)
                prediction: list[Any] = [None] * n
                proba: list[list[float | None]] = [[None] * n for _ in worker.proba_columns]
                preds = list(_plain_list(scored.predictions))
                for k, i in enumerate(scored.kept):
                    prediction[i] = preds[k]
                    if scored.proba is not None:
                        for j in range(len(proba)):
                            proba[j][i] = float(scored.proba[k, j])
                rejected: list[str | None] = [None] * n
                for i, reason in scored.reasons.items():
                    rejected[i] = reason
                yield pd.DataFrame(
                    dict(zip(names, [prediction, *proba, rejected], strict=True)), index=None
                )

        import pandas as pd

        # Spark reads the type hints to tell the kind of UDF; this module's are strings.
        predict.__annotations__ = {
            "batches": Iterator[pd.DataFrame],
            "return": Iterator[pd.DataFrame],
        }
        make: Any = pandas_udf  # its overloads do not cover an iterator of frames to a struct
        self.udf = make(predict, returnType=self.return_type)

    def __call__(self, *columns: str | Column, output: str = "struct") -> Column:
        from pyspark.sql import functions as F

        cols = columns or tuple(self.schema.names)
        struct = F.struct(*[F.col(c) if isinstance(c, str) else c for c in cols])
        out: Column = self.udf(struct)
        if output == "prediction":
            return out.getField("prediction")
        if output != "struct":
            raise InvalidRequest(
                "output must be 'struct' or 'prediction'",
                details=[{"field": "output", "reason": "expected struct or prediction"}],
            )
        return out


def _plain_list(values: Any) -> list[Any]:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _return_type(scorer: Scorer) -> Any:
    """The UDF's struct type: the prediction's type (from the classes, else a smoke prediction
    on the schema's example row), a double per class, the reject reason."""
    from pyspark.sql import types as T

    from ..flavors.base import example_table

    if scorer.loaded.classes is not None:
        sample: Any = scorer.loaded.classes[0]
    else:
        preds, _ = scorer.loaded.predict_with_proba(example_table(scorer.schema))
        sample = _plain_list(preds)[0]
    if isinstance(sample, bool):
        kind: Any = T.BooleanType()
    elif isinstance(sample, int):
        kind = T.LongType()
    elif isinstance(sample, float):
        kind = T.DoubleType()
    else:
        kind = T.StringType()
    fields = [T.StructField("prediction", kind, True)]
    fields += [T.StructField(c, T.DoubleType(), True) for c in scorer.proba_columns]
    fields.append(T.StructField(REJECTED, T.StringType(), True))
    return T.StructType(fields)


def predict_udf(
    name: str,
    version: int | None = None,
    alias: str | None = None,
    url: str | None = None,
    key: str | None = None,
    *,
    client: Client | None = None,
) -> PredictUDF:
    """A registered version as a Spark column function (see :class:`PredictUDF`).

    ``version`` or ``alias`` picks the version (default: ``production``, else the latest);
    ``url`` and ``key`` default to ``MODELPORT_URL`` and ``MODELPORT_KEY`` (the key needs the
    predict and read scopes). Create the SparkSession first so the artifact is broadcast.
    """
    _pyspark()
    from ..client import Client

    own = client is None
    client = client or Client(url, key)
    try:
        resolved = batch.resolve(client, name, version, alias)
        return _udf_for(client, resolved)
    finally:
        if own:
            client.close()


def _udf_for(client: Client, version: dict[str, Any]) -> PredictUDF:
    data = client.artifact(version["model"], version["version"], sha256=version["sha256"])
    scorer = Scorer.from_artifact(data, version["flavor"], Schema.from_dict(version["schema"]))
    return PredictUDF(version, scorer, data)


# -- modelport score --engine spark -----------------------------------------------------------------


def session(conf: dict[str, str], app_name: str, quiet: bool) -> tuple[SparkSession, bool]:
    """The active SparkSession, else a new one (``local[*]`` unless a master is configured);
    and whether it was made here (and so is stopped at the end)."""
    _pyspark()
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    builder = SparkSession.builder.appName(app_name)
    if "spark.master" not in conf and not SparkConf().contains("spark.master"):
        builder = builder.master("local[*]")
    if quiet:
        builder = builder.config("spark.ui.showConsoleProgress", "false")
    for k, v in conf.items():
        builder = builder.config(k, v)
    return builder.getOrCreate(), True


def run_spark(
    client: Client,
    req: Request,
    version: dict[str, Any],
    schema: Schema,
    lineage: dict[str, Any],
) -> dict[str, Any]:
    """``modelport score --engine spark``: read, score through the UDF, write the scored rows
    and the rejects (Spark output directories), and record the run."""
    input_path, output_path = req.input, req.output
    assert input_path is not None and output_path is not None  # Request.check: files only
    batch_rows = "spark.sql.execution.arrow.maxRecordsPerBatch"
    spark, own = session(
        {batch_rows: str(req.chunk_rows), **req.spark_conf},
        f"modelport score {req.name}",
        quiet=not req.progress,
    )
    before = spark.conf.get(batch_rows)
    spark.conf.set(batch_rows, str(req.chunk_rows))  # a session that was active already, too
    try:
        predict = _udf_for(client, version)
        frame = _read(spark, input_path)
        names = [str(c) for c in frame.columns]
        batch.check_columns(schema, names)
        columns = batch.output_columns(names, predict.proba_columns, req.id_column)
        lineage["input"].update(fingerprint(input_path))
        run = Run(client, client.start_run(req.name, lineage), spark.sparkContext.cancelAllJobs)
        counts = {"rows": 0, "scored": 0, "rejected": 0}
        with recorded(run, counts):
            return _score_frame(spark, run, req, version, predict, frame, columns, counts)
    finally:
        if own:
            spark.stop()
        elif before is not None:
            spark.conf.set(batch_rows, before)


def _read(spark: SparkSession, path: str) -> DataFrame:
    if file_format(path, "INPUT") == "parquet":
        return spark.read.parquet(path)
    # Every cell as text, quotes as in RFC 4180 (as pandas reads them): the scorer parses.
    return spark.read.csv(path, header=True, inferSchema=False, escape='"')


def _score_frame(
    spark: SparkSession,
    run: Run,
    req: Request,
    version: dict[str, Any],
    predict: PredictUDF,
    frame: DataFrame,
    columns: list[str],
    counts: dict[str, int],
) -> dict[str, Any]:
    import time

    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    output_path = req.output
    assert output_path is not None  # Request.check: the spark engine writes files only
    started = time.monotonic()
    numbered = _numbered(frame)
    run.update(0.1, "rows numbered")
    fields = [c for c in predict.schema.names if c in frame.columns]
    scored = numbered.withColumn("__modelport_out", predict(*fields)).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    try:
        rejected_col = F.col(f"__modelport_out.{REJECTED}")
        fmt = req.output_format()
        kept = [c for c in columns if c in frame.columns]
        out = scored.where(rejected_col.isNull()).select(
            *[F.col(f"`{c}`") for c in kept],
            F.col("__modelport_out.prediction").alias("prediction"),
            *[F.col(f"__modelport_out.`{c}`").alias(c) for c in predict.proba_columns],
            F.lit(version["model"]).alias("model"),
            F.lit(version["version"]).cast("long").alias("version"),
            F.lit(run.id).cast("long").alias("run_id"),
        )
        _write(out, output_path, fmt)
        run.update(0.7, "scored rows written")
        rejects = scored.where(rejected_col.isNotNull()).select(
            F.col(_ROW).alias("row"),
            rejected_col.alias("reason"),
            *[F.col(f"`{c}`") for c in frame.columns],
        )
        _write(rejects, rejects_path(output_path), fmt)
        run.update(0.9, "rejects written")
        tally = {
            bool(r["ok"]): int(r["count"])
            for r in scored.groupBy(rejected_col.isNull().alias("ok")).count().collect()
        }
    finally:
        scored.unpersist()
    counts.update(
        rows=tally.get(True, 0) + tally.get(False, 0),
        scored=tally.get(True, 0),
        rejected=tally.get(False, 0),
    )
    run.check()
    result = {
        **counts,
        "output": os.path.abspath(output_path),
        "rejects": os.path.abspath(rejects_path(output_path)),
        "seconds": round(time.monotonic() - started, 3),
    }
    return run.finish("succeeded", result=result)


def _numbered(frame: DataFrame) -> DataFrame:
    """The frame with each row's number in the input (0 is the first data row).

    Row ids are ``partition << 33 | position``; one counting pass gives each partition's first
    row number. Exact for one input file, whose partitions are its byte ranges in order.
    """
    from pyspark.sql import functions as F

    tagged = frame.withColumn(_PART, F.spark_partition_id()).withColumn(
        "__modelport_id", F.monotonically_increasing_id()
    )
    sizes = dict(
        sorted((int(r[_PART]), int(r["count"])) for r in tagged.groupBy(_PART).count().collect())
    )
    offsets: list[Any] = []
    total = 0
    for part, size in sizes.items():
        offsets += [F.lit(part), F.lit(total)]
        total += size
    start = F.element_at(F.create_map(*offsets), F.col(_PART)) if offsets else F.lit(0)
    local = F.col("__modelport_id") - F.shiftleft(F.col(_PART).cast("long"), 33)
    return tagged.withColumn(_ROW, (start + local).cast("long")).drop(_PART, "__modelport_id")


def _write(frame: DataFrame, path: str, fmt: str) -> None:
    writer = frame.write.mode("overwrite")
    if fmt == "parquet":
        writer.parquet(path)
    else:
        writer.option("header", True).option("escape", '"').csv(path)


__all__ = ["PredictUDF", "predict_udf"]
