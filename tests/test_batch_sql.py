"""Batch scoring from a SQL query into a table: chunked, with rejects and lineage, on the
database under test (a PostgreSQL schema of its own, or a SQLite file)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from modelport import errors
from modelport.client import Client
from modelport.store import normalize_url
from tests.conftest import BAD, IRIS_COLUMNS, RunningServer, _input, fresh_store_url
from tests.procs import cli_env, run_cli
from tests.test_batch import SCORED_COLUMNS


@pytest.fixture
def warehouse(tmp_path: Path, iris_frame: Any) -> Iterator[str]:
    """A database holding ``customers``: the iris rows (as text, three made bad) with ids."""
    folder = tmp_path / "warehouse"
    folder.mkdir()
    with fresh_store_url(folder) as url:
        engine = sa.create_engine(normalize_url(url))
        if url.startswith("sqlite"):  # reading and writing one SQLite file at once needs WAL
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        with engine.begin() as conn:
            _input(iris_frame).astype(str).to_sql("customers", conn, index=False)
        engine.dispose()
        yield url


def _table(url: str, query: str) -> pd.DataFrame:
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return pd.read_sql_query(sa.text(query), conn)
    finally:
        engine.dispose()


def test_a_query_is_scored_into_a_table_with_rejects_and_lineage(
    iris_models: Client, warehouse: str, iris_frame: Any
) -> None:
    query = "SELECT * FROM customers ORDER BY CAST(SUBSTR(id, 2) AS INTEGER)"
    run = iris_models.score(
        "iris", None, None, from_sql=query, to_table="scores", db=warehouse, chunk_rows=40
    )
    assert run["status"] == "succeeded", run
    assert run["result"]["rows"] == 150
    assert (run["result"]["scored"], run["result"]["rejected"]) == (147, 3)

    scored = _table(warehouse, "SELECT * FROM scores")
    assert list(scored.columns) == SCORED_COLUMNS
    good = iris_frame.drop(index=list(BAD))
    direct = iris_models.predict("iris", good[IRIS_COLUMNS], version=1)
    assert scored["id"].tolist() == [f"c{i}" for i in good.index]
    assert scored["prediction"].tolist() == direct["predictions"]
    probas = pd.DataFrame(direct["probabilities"])
    np.testing.assert_allclose(scored["proba_setosa"], probas["setosa"], rtol=1e-12)
    assert set(scored["run_id"]) == {run["id"]} and set(scored["version"]) == {1}

    rejects = _table(warehouse, "SELECT * FROM scores_rejects ORDER BY row")
    assert rejects["row"].tolist() == sorted(BAD)
    assert rejects["reason"].tolist() == [BAD[r][2] for r in sorted(BAD)]
    assert set(rejects["run_id"]) == {run["id"]}

    lineage = iris_models.job(run["id"])["params"]
    assert lineage["input"]["sql"] == query
    assert lineage["output"].startswith("table scores in ")
    assert "version" in lineage and lineage["artifact_sha256"]

    # A second run appends; its rows are told apart by run_id.
    again = iris_models.score("iris", None, None, from_sql=query, to_table="scores", db=warehouse)
    counts = _table(warehouse, "SELECT run_id, COUNT(*) AS n FROM scores GROUP BY run_id")
    assert dict(zip(counts["run_id"], counts["n"], strict=True)) == {
        run["id"]: 147,
        again["id"]: 147,
    }


def test_a_failed_run_takes_its_rows_out_of_the_table(iris_models: Client, warehouse: str) -> None:
    with pytest.raises(errors.InvalidInput, match="the query failed"):
        iris_models.score(
            "iris", None, None, from_sql="SELECT * FROM nowhere", to_table="s", db=warehouse
        )
    # An output column that clashes with the input's stops the run before anything is written.
    with pytest.raises(errors.InvalidRequest, match="prediction"):
        iris_models.score(
            "iris",
            None,
            None,
            from_sql="SELECT *, 'x' AS prediction FROM customers",
            to_table="s",
            db=warehouse,
        )
    engine = sa.create_engine(normalize_url(warehouse))
    try:
        assert "s" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_cli_reads_sql_and_writes_a_table_and_refuses_bad_combinations(
    server: RunningServer, iris_models: Client, warehouse: str, tmp_path: Path
) -> None:
    env = cli_env(MODELPORT_URL=server.url, MODELPORT_KEY=server.admin_key)
    query = "SELECT * FROM customers"
    done = run_cli(
        ["score", "iris", "--from-sql", query, "--to-table", "cli_scores", "--db", warehouse],
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "147 rows scored, 3 rejected" in done.stdout
    assert len(_table(warehouse, "SELECT * FROM cli_scores")) == 147
    # A query into a file, too.
    out = tmp_path / "from_sql.csv"
    done = run_cli(["score", "iris", "--from-sql", query, "--db", warehouse, str(out)], env=env)
    assert done.returncode == 0, done.stderr
    assert len(pd.read_csv(out)) == 147

    def fails(args: list[str], message: str) -> None:
        result = run_cli(["score", "iris", *args], env=env)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, result.stderr

    fails(["--from-sql", query, "--to-table", "t"], "need --db")
    fails(["in.csv", "--from-sql", query, "--to-table", "t", "--db", warehouse], "got 1 path")
    fails(["--from-sql", query, "--db", warehouse], "expected OUTPUT")
    fails(["--from-sql", query, "--to-table", "bad name", "--db", warehouse], "to_table")
    fails(
        ["--from-sql", query, "--to-table", "t", "--db", warehouse, "--engine", "spark"],
        "spark engine reads and writes files only",
    )


def test_a_sqlite_database_outside_wal_mode_is_refused_clearly(
    iris_models: Client, tmp_path: Path, iris_frame: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        _input(iris_frame).astype(str).to_sql("customers", conn, index=False)
    engine.dispose()
    with pytest.raises(errors.InvalidRequest, match="WAL"):
        iris_models.score(
            "iris", None, None, from_sql="SELECT * FROM customers", to_table="t", db=url
        )
    # Into a file it is fine: nothing writes to the database.
    run = iris_models.score(
        "iris", None, tmp_path / "out.parquet", from_sql="SELECT * FROM customers", db=url
    )
    assert run["result"]["scored"] == 147
