"""Batch scoring with the pandas engine: real server, real files, the CLI, the run's lineage."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelport import errors
from modelport.client import Client
from tests.conftest import BAD, IRIS_COLUMNS, RunningServer
from tests.procs import cli_env, run_cli

#: The columns a scored iris file adds to the input's (or to its --id-column).
ADDED_COLUMNS = [
    "prediction",
    "proba_setosa",
    "proba_versicolor",
    "proba_virginica",
    "model",
    "version",
    "run_id",
]
#: The columns of a scored iris file with every input column kept.
SCORED_COLUMNS = ["id", *IRIS_COLUMNS, *ADDED_COLUMNS]


def _expected(mp: Client, iris_frame: Any, version: int) -> pd.DataFrame:
    """What the server's predict route answers for the good rows."""
    good = iris_frame.drop(index=list(BAD))
    out = mp.predict("iris", good[IRIS_COLUMNS], version=version)
    probas = pd.DataFrame(out["probabilities"]).add_prefix("proba_")
    return pd.concat(
        [
            pd.DataFrame({"id": [f"c{i}" for i in good.index], "prediction": out["predictions"]}),
            probas,
        ],
        axis=1,
    )


def test_csv_scored_in_chunks_with_rejects(
    iris_models: Client, input_csv: Path, iris_frame: Any, tmp_path: Path
) -> None:
    out = tmp_path / "scored.csv"
    run = iris_models.score("iris", input_csv, out, chunk_rows=40)
    assert run["status"] == "succeeded"
    assert run["result"]["rows"] == 150
    assert run["result"]["scored"] == 147 and run["result"]["rejected"] == 3

    scored = pd.read_csv(out, dtype={"id": str})
    assert list(scored.columns) == SCORED_COLUMNS
    assert set(scored["model"]) == {"iris"} and set(scored["version"]) == {1}
    assert set(scored["run_id"]) == {run["id"]}
    expected = _expected(iris_models, iris_frame, 1)
    assert scored["id"].tolist() == expected["id"].tolist()  # input order, bad rows left out
    assert scored["prediction"].tolist() == expected["prediction"].tolist()
    for c in ("proba_setosa", "proba_versicolor", "proba_virginica"):
        np.testing.assert_allclose(scored[c], expected[c], rtol=1e-12)

    rejects = pd.read_csv(tmp_path / "scored.rejects.csv", dtype=str, keep_default_na=False)
    assert list(rejects.columns) == ["row", "reason", "id", *IRIS_COLUMNS]
    assert rejects["row"].astype(int).tolist() == sorted(BAD)
    assert rejects["reason"].tolist() == [BAD[r][2] for r in sorted(BAD)]
    assert rejects["id"].tolist() == [f"c{r}" for r in sorted(BAD)]
    assert rejects.loc[0, "sepal_length"] == "abc"  # the row as it was in the input
    assert not list(tmp_path.glob("*.partial"))


def test_parquet_in_and_out_with_an_id_column(
    iris_models: Client, iris_frame: Any, tmp_path: Path
) -> None:
    frame = iris_frame[IRIS_COLUMNS].copy()
    frame.insert(0, "customer", np.arange(1000, 1150))
    frame.loc[7, "petal_length"] = np.nan  # a null in a typed column: missing
    frame.loc[9, "sepal_width"] = None
    source = tmp_path / "in.parquet"
    frame.to_parquet(source, row_group_size=25)
    out = tmp_path / "out.parquet"
    run = iris_models.score("iris", source, out, chunk_rows=20, id_column="customer")
    scored = pd.read_parquet(out)
    assert list(scored.columns) == ["customer", *ADDED_COLUMNS]
    assert scored["customer"].tolist() == [1000 + i for i in range(150) if i not in (7, 9)]
    rejects = pd.read_parquet(tmp_path / "out.rejects.parquet")
    assert rejects["row"].tolist() == [7, 9]
    assert rejects["reason"].tolist() == ["petal_length: missing", "sepal_width: missing"]
    assert rejects["customer"].tolist() == [1007, 1009]
    assert run["params"]["input"]["format"] == "parquet"
    expected = iris_models.predict("iris", iris_frame.drop(index=[7, 9])[IRIS_COLUMNS], version=1)
    assert scored["prediction"].tolist() == expected["predictions"]


def test_version_and_alias_pick_the_version(
    iris_models: Client, input_csv: Path, iris_frame: Any, tmp_path: Path
) -> None:
    by_alias = iris_models.score("iris", input_csv, tmp_path / "a.csv", alias="candidate")
    by_version = iris_models.score("iris", input_csv, tmp_path / "v.csv", version=1)
    default = iris_models.score("iris", input_csv, tmp_path / "d.csv")  # production
    assert by_alias["params"]["version"] == 2 and by_alias["params"]["alias"] == "candidate"
    assert by_version["params"]["version"] == 1 and by_version["params"]["alias"] is None
    assert default["params"]["version"] == 1
    a = pd.read_csv(tmp_path / "a.csv")
    v = pd.read_csv(tmp_path / "v.csv")
    assert set(a["version"]) == {2} and set(v["version"]) == {1}
    assert a["prediction"].tolist() == _expected(iris_models, iris_frame, 2)["prediction"].tolist()
    assert a["prediction"].tolist() != v["prediction"].tolist()  # the stump answers otherwise
    with pytest.raises(errors.InvalidRequest, match="no alias 'nope'"):
        iris_models.score("iris", input_csv, tmp_path / "x.csv", alias="nope")
    with pytest.raises(errors.InvalidRequest, match="either a version or an alias"):
        iris_models.score("iris", input_csv, tmp_path / "x.csv", version=1, alias="candidate")
    with pytest.raises(errors.VersionNotFound):
        iris_models.score("iris", input_csv, tmp_path / "x.csv", version=9)


def test_the_run_is_recorded_with_its_lineage(
    server: RunningServer, iris_models: Client, input_csv: Path, tmp_path: Path
) -> None:
    batch_key = server.key("nightly-batch", "predict", "read")
    mp = server.client(batch_key)
    run = mp.score("iris", input_csv, tmp_path / "out.parquet", id_column="id")
    job = iris_models.job(run["id"])  # the same record, read by another key
    assert job["type"] == "score" and job["status"] == "succeeded" and job["progress"] == 1.0
    assert job["created_by"] == "nightly-batch"
    assert job["started"] and job["finished"] and job["finished"] >= job["started"]
    params = job["params"]
    assert params["input"] == {
        "path": str(input_csv),
        "format": "csv",
        "sha256": hashlib.sha256(input_csv.read_bytes()).hexdigest(),
        "size_bytes": input_csv.stat().st_size,
    }
    assert params["version"] == 1 and params["engine"] == "pandas" and params["id_column"] == "id"
    assert params["artifact_sha256"] == iris_models.version("iris", 1)["sha256"]
    assert params["output"] == str(tmp_path / "out.parquet")
    assert job["result"]["scored"] == 147 and job["result"]["rejected"] == 3
    assert run["id"] in [j["id"] for j in iris_models.jobs("iris")]
    # Keys without both scopes can neither fetch the artifact nor record a run.
    for scopes in (("read",), ("predict",)):
        with pytest.raises(errors.Forbidden):
            server.client(server.key("x", *scopes)).score("iris", input_csv, tmp_path / "y.csv")
    # Another client cannot report on this key's run; the run's own key cannot once it ended.
    other = server.client(server.key("other", "predict", "read"))
    with pytest.raises(errors.Conflict):
        mp.report_run(run["id"], 0.5)
    started = mp.start_run("iris", {"version": 1, **{k: params[k] for k in ("input", "engine")}})
    with pytest.raises(errors.Forbidden, match="started by 'nightly-batch'"):
        other.finish_run(started["id"], "succeeded")
    with pytest.raises(errors.InvalidInput, match="status"):
        mp.finish_run(started["id"], "done")
    assert mp.report_run(started["id"], 0.5, "half")["progress"] == 0.5
    assert mp.finish_run(started["id"], "failed", error="stopped")["status"] == "failed"


def test_a_run_stops_when_cancelled(iris_models: Client) -> None:
    from modelport.batch.scoring import Run
    from modelport.errors import Cancelled

    lineage = {"version": 1, "engine": "pandas", "input": {"path": "x", "sha256": "0" * 64}}
    run = Run(iris_models, iris_models.start_run("iris", lineage))
    assert iris_models.cancel_job(run.id)["cancel_requested"] is True
    deadline = time.monotonic() + 30
    with pytest.raises(Cancelled):  # the heartbeat brings the request back
        while time.monotonic() < deadline:
            run.update(0.5, "working")
            time.sleep(0.05)
    assert run.finish("cancelled", result={"rows": 0})["status"] == "cancelled"


def test_a_silent_run_is_marked_failed(
    settings: Any, iris_pipeline: Any, iris_frame: Any, input_csv: Path
) -> None:
    from tests.conftest import start_server

    fast = settings.model_copy(update={"score_run_timeout_seconds": 0.5, "job_poll_seconds": 0.1})
    server = start_server(fast)
    try:
        mp = server.client()
        mp.push("iris", iris_pipeline, train_data=iris_frame)
        lineage = {"version": 1, "engine": "pandas", "input": {"path": "x", "sha256": "0" * 64}}
        started = mp.start_run("iris", lineage)
        job = mp.wait_job(started["id"], timeout=30)
        assert job["status"] == "failed" and "stopped reporting" in job["error"]
    finally:
        server.stop()


def test_a_failing_run_is_recorded_and_leaves_no_output(
    iris_models: Client, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    pd.DataFrame({"sepal_length": [1.0], "sepal_width": [2.0]}).to_csv(source, index=False)
    with pytest.raises(errors.InvalidInput, match="lacks the column"):
        iris_models.score("iris", source, tmp_path / "out.csv")
    # (a missing column is found before the run starts: no job is recorded)
    assert iris_models.jobs("iris") == []
    clash = tmp_path / "clash.csv"
    pd.DataFrame({c: [1.0] for c in [*IRIS_COLUMNS, "prediction"]}).to_csv(clash, index=False)
    with pytest.raises(errors.InvalidRequest, match="already has the column"):
        iris_models.score("iris", clash, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_scores_and_reports_bad_input_with_exit_2(
    server: RunningServer, iris_models: Client, input_csv: Path, tmp_path: Path
) -> None:
    env = cli_env(MODELPORT_URL=server.url, MODELPORT_KEY=server.admin_key)
    out = tmp_path / "out.csv"
    done = run_cli(["score", "iris", str(input_csv), str(out), "--alias", "candidate"], env=env)
    assert done.returncode == 0, done.stderr
    assert "147 rows scored, 3 rejected, with iris version 2" in done.stdout
    assert f"rejects: {tmp_path / 'out.rejects.csv'}" in done.stdout
    assert len(pd.read_csv(out)) == 147

    def fails(args: list[str], message: str) -> None:
        result = run_cli(["score", *args], env=env)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert message in lines[0], lines[0]

    fails(["iris", str(tmp_path / "missing.csv"), str(out)], "does not exist")
    fails(["nope", str(input_csv), str(out)], "NAME: no model named 'nope'")
    fails(["iris", str(input_csv), str(out), "--version", "1", "--alias", "x"], "not both")
    fails(["iris", str(input_csv), str(tmp_path / "out.json")], "unsupported file type")
    fails(["iris", str(input_csv), str(out), "--version", "7"], "--version")
    fails(["iris", str(input_csv), str(out), "--chunk-rows", "0"], "chunk-rows")
    fails(["iris", str(input_csv), str(out), "--id-column", "nope"], "--id-column 'nope'")


# -- memory --------------------------------------------------------------------------------------

_PEAK = textwrap.dedent(
    """
    import sys, tracemalloc
    import pandas, pyarrow.parquet, skops.io, sklearn.pipeline, tqdm  # imports are not data
    from modelport.batch import scoring as batch
    from modelport.batch import spark
    from modelport.client import Client
    mp = Client(sys.argv[1], sys.argv[2])
    mp.version("iris", 1)
    tracemalloc.start()
    mp.score("iris", sys.argv[3], sys.argv[4], chunk_rows=int(sys.argv[5]))
    print(tracemalloc.get_traced_memory()[1])
    """
)


def _peak(server: RunningServer, source: Path, out: Path, chunk_rows: int) -> int:
    """The peak of memory allocated while scoring ``source`` (in a process of its own)."""
    args = [server.url, server.admin_key, str(source), str(out), str(chunk_rows)]
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=cli_env(),
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def test_memory_is_bounded_by_the_chunk_not_the_file(
    server: RunningServer, iris_models: Client, iris_frame: Any, tmp_path: Path
) -> None:
    rows = iris_frame[IRIS_COLUMNS]
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    pd.concat([rows] * 100).to_csv(small, index=False)  # 15,000 rows
    pd.concat([rows] * 400).to_csv(large, index=False)  # 60,000 rows: 4 times as many
    peak_small = _peak(server, small, tmp_path / "small-out.csv", 5000)
    peak_large = _peak(server, large, tmp_path / "large-out.csv", 5000)
    whole = _peak(server, large, tmp_path / "whole-out.csv", 60_000)  # one chunk: the file
    assert len(pd.read_csv(tmp_path / "large-out.csv")) == 60_000
    # Whole-file reading would grow the peak about 4-fold; chunks keep it level.
    assert peak_large < 1.5 * peak_small, (peak_small, peak_large)
    assert whole > 3 * peak_large, (whole, peak_large)  # the check can tell the difference
