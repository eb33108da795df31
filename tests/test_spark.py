"""Batch scoring on Apache Spark (local mode, loopback only): the pandas UDF and
``modelport score --engine spark`` give the same predictions and rejects as the pandas engine."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from modelport.batch.spark import predict_udf
from modelport.client import Client
from tests.conftest import BAD, IRIS_COLUMNS, RunningServer
from tests.procs import cli_env, run_cli

# PySpark reads collected results through a local socket it leaves to the garbage collector.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)

#: Spark on this machine only: bound to loopback, no UI, two local cores.
LOCAL = {
    "spark.master": "local[2]",
    "spark.ui.enabled": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.shuffle.partitions": "2",
}
SPARK_ENV = {"SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    with pytest.MonkeyPatch.context() as mp:
        for k, v in SPARK_ENV.items():
            mp.setenv(k, v)
        builder = SparkSession.builder.appName("modelport-tests")
        for k, v in LOCAL.items():
            builder = builder.config(k, v)
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        try:
            yield session
        finally:
            session.stop()


def _by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(id=frame["id"].astype(str)).sort_values("id").reset_index(drop=True)


def test_spark_engine_matches_the_pandas_engine(
    spark: SparkSession, iris_models: Client, input_csv: Path, tmp_path: Path
) -> None:
    plain = iris_models.score("iris", input_csv, tmp_path / "pandas.parquet", id_column="id")
    assert plain["result"]["rejected"] == 3
    run = iris_models.score(
        "iris", input_csv, tmp_path / "spark.parquet", id_column="id", engine="spark"
    )
    assert run["status"] == "succeeded" and run["params"]["engine"] == "spark"
    assert run["result"]["rows"] == 150
    assert run["result"]["scored"] == 147 and run["result"]["rejected"] == 3
    a = _by_id(pd.read_parquet(tmp_path / "pandas.parquet"))
    b = _by_id(pd.read_parquet(tmp_path / "spark.parquet"))
    assert list(b.columns) == list(a.columns)
    assert b["prediction"].tolist() == a["prediction"].tolist()
    for c in ("proba_setosa", "proba_versicolor", "proba_virginica"):
        np.testing.assert_array_equal(b[c].to_numpy(), a[c].to_numpy())  # the same floats
    assert set(b["run_id"]) == {run["id"]} and set(b["version"]) == {1}
    rejects = pd.read_parquet(tmp_path / "spark.rejects.parquet").sort_values("row")
    assert rejects["row"].tolist() == sorted(BAD)
    assert rejects["reason"].tolist() == [BAD[r][2] for r in sorted(BAD)]
    plain_rejects = pd.read_parquet(tmp_path / "pandas.rejects.parquet")
    assert plain_rejects["reason"].tolist() == rejects["reason"].tolist()


def test_spark_engine_on_parquet_writes_csv(
    spark: SparkSession, iris_models: Client, iris_frame: Any, tmp_path: Path
) -> None:
    frame = iris_frame[IRIS_COLUMNS].copy()
    frame.insert(0, "id", np.arange(150))
    frame.loc[7, "petal_length"] = np.nan
    source = tmp_path / "in.parquet"
    frame.to_parquet(source)
    plain = iris_models.score("iris", source, tmp_path / "pandas.parquet", alias="candidate")
    run = iris_models.score(
        "iris", source, tmp_path / "spark.csv", alias="candidate", engine="spark"
    )
    assert plain["result"]["rejected"] == run["result"]["rejected"] == 1
    a = _by_id(pd.read_parquet(tmp_path / "pandas.parquet"))
    b = _by_id(pd.concat(pd.read_csv(p) for p in sorted((tmp_path / "spark.csv").glob("*.csv"))))
    assert b["prediction"].tolist() == a["prediction"].tolist()
    assert set(b["version"]) == {2}
    rejects = pd.concat(
        pd.read_csv(p) for p in sorted((tmp_path / "spark.rejects.csv").glob("*.csv"))
    )
    assert rejects[["row", "reason"]].values.tolist() == [[7, "petal_length: missing"]]


def test_predict_udf_on_a_dataframe(
    spark: SparkSession, server: RunningServer, iris_models: Client, iris_frame: Any
) -> None:
    key = server.key("spark-job", "predict", "read")
    predict = predict_udf("iris", alias="candidate", url=server.url, key=key)
    rows = iris_frame[IRIS_COLUMNS].copy()
    rows["row"] = np.arange(150)
    df = spark.createDataFrame(rows.rename(columns={"sepal_length": "sl"}))
    columns = [F.col("sl").alias("sepal_length"), *IRIS_COLUMNS[1:]]  # matched by name
    scored = (
        df.withColumn("scored", predict(*columns))
        .withColumn("label", predict(*columns, output="prediction"))
        .select("row", "label", "scored.*")
        .toPandas()
        .sort_values("row")
    )
    expected = iris_models.predict("iris", iris_frame[IRIS_COLUMNS], version=2)
    assert scored["prediction"].tolist() == expected["predictions"]
    assert scored["label"].tolist() == expected["predictions"]
    np.testing.assert_allclose(
        scored["proba_setosa"], [p["setosa"] for p in expected["probabilities"]], rtol=1e-12
    )
    assert scored["rejected"].isna().all()
    # A row the schema rejects gets its reason and no prediction.
    bad = spark.createDataFrame(
        pd.DataFrame({c: ["x" if c == "petal_width" else "1.0"] for c in IRIS_COLUMNS})
    )
    out = bad.select(predict().alias("s")).select("s.*").toPandas()
    assert out["prediction"].isna().all()
    assert out["rejected"].tolist() == ["petal_width: expected a number, got string"]


def test_cli_spark_engine(
    server: RunningServer, iris_models: Client, input_csv: Path, tmp_path: Path
) -> None:
    env = cli_env(MODELPORT_URL=server.url, MODELPORT_KEY=server.admin_key, **SPARK_ENV)
    conf = [a for k, v in LOCAL.items() for a in ("--spark-conf", f"{k}={v}")]
    out = tmp_path / "out.parquet"
    done = run_cli(
        ["score", "iris", str(input_csv), str(out), "--engine", "spark", "--quiet", *conf],
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "147 rows scored, 3 rejected, with iris version 1" in done.stdout
    assert len(pd.read_parquet(out)) == 147
    assert os.path.isdir(tmp_path / "out.rejects.parquet")
