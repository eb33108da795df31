"""The newcomer's path through the real CLI and a real server: a first key for ``serve``,
errors that say what to do, progress that ends at 100 %, and consistent forms."""

from __future__ import annotations

import json
import shlex
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import skops.io as sio
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from modelport.batch.scoring import Request
from modelport.cli.main import main
from tests.conftest import IRIS_COLUMNS, POSTGRES_URL, RunningServer
from tests.procs import ServerProcess, cli_env, run_cli

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
HINT = "no admin key in this store yet; make one with: "


def _error_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr + out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def _ok(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    out = run_cli(args, env=env)
    assert out.returncode == 0, f"{args}: {out.stderr}"
    assert "Traceback" not in out.stderr
    return out


# -- a first key ------------------------------------------------------------------------------------


def test_serve_names_the_command_that_makes_a_first_key(tmp_path: Path, store_url: str) -> None:
    proc = ServerProcess(tmp_path / "home", store_url).start()
    try:
        hints = [line for line in proc.output().splitlines() if line.startswith(HINT)]
        assert len(hints) == 1, proc.output()
        command = shlex.split(hints[0][len(HINT) :])
        assert command[:2] == ["modelport", "keys"]
        made = run_cli(command[1:])
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()
        assert "(new" not in made.stderr  # the server's own store, not a new one
        answer = httpx.get(f"{proc.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200, answer.text
    finally:
        proc.kill()
    again = ServerProcess(tmp_path / "home", store_url).start()  # the store has one now
    try:
        assert "modelport listening on" in again.output() and HINT not in again.output()
    finally:
        again.kill()


def _cli_in(folder: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelport.cli", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )


def test_keys_never_make_a_store_silently(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (["keys", "list"], ["keys", "revoke", "1"]):
        line = _error_line(_cli_in(empty, args))
        assert "no modelport store at" in line and "--home" in line and "--url" in line
    assert list(empty.iterdir()) == []

    made = _cli_in(empty, ["keys", "create", "--name", "ci", "--scope", "admin"])
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("mp_") and "\n" not in made.stdout.strip()
    assert "store: sqlite:///" in made.stderr and ".modelport/modelport.db" in made.stderr
    assert "(new: made now, no server has used it yet)" in made.stderr

    listed = _cli_in(empty, ["keys", "list"])
    assert listed.returncode == 0, listed.stderr
    assert "ci" in listed.stdout and "store: " in listed.stderr and "(new" not in listed.stderr


def test_keys_against_a_server_say_so(server: RunningServer) -> None:
    env = cli_env(MODELPORT_URL=server.url, MODELPORT_KEY=server.admin_key)
    out = _ok(["keys", "list"], env)
    assert f"server: {server.url}" in out.stderr and "test-admin" in out.stdout


def test_keys_alone_prints_its_help_as_help(tmp_path: Path) -> None:
    out = _cli_in(tmp_path, ["keys"])
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and not out.stderr.startswith("error:")
    assert "Commands:" in out.stderr and "\n  create" in out.stderr
    assert len(out.stderr.splitlines()) > 5


def _commands(group: Any, path: list[str]) -> Iterator[list[str]]:
    for name, cmd in sorted(group.commands.items()):
        yield [*path, name]
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, [*path, name])


def test_help_texts_are_plain_text_and_quickstart_takes_few_flags() -> None:
    runner = CliRunner()
    for cmd in [[], *_commands(main, [])]:
        out = runner.invoke(main, [*cmd, "--help"], prog_name="modelport")
        assert out.exit_code == 0, cmd
        assert "``" not in out.output, f"modelport {' '.join(cmd)} --help shows RST markup"
    quick = runner.invoke(main, ["quickstart", "--help"], prog_name="modelport").output
    assert "--port" in quick and "--home" in quick and "--store" in quick
    assert "--batch-max-rows" not in quick and "--workers" not in quick
    assert "--batch-max-rows" in runner.invoke(main, ["serve", "--help"]).output


# -- errors that say what to do ------------------------------------------------------------------------


def test_a_port_in_use_is_named_with_the_flag(tmp_path: Path, store_url: str) -> None:
    proc = ServerProcess(tmp_path / "home", store_url).start()
    try:
        out = run_cli(
            ["serve", "--port", str(proc.port), "--home", str(tmp_path / "other")], timeout=60
        )
        line = _error_line(out)
        assert f"port {proc.port} on 127.0.0.1 is already in use" in line and "--port" in line
    finally:
        proc.kill()


def test_a_grpc_port_left_to_chance_is_refused_for_workers(tmp_path: Path) -> None:
    out = run_cli(
        ["serve", "--workers", "2", "--grpc-port", "0", "--home", str(tmp_path / "h")],
        timeout=60,
    )
    line = _error_line(out)
    assert "--grpc-port 0" in line and "--workers" in line, out.stderr


@pytest.mark.skipif(not POSTGRES_URL, reason="needs PostgreSQL (MODELPORT_TEST_POSTGRES_URL)")
def test_a_database_that_does_not_exist_is_one_line(tmp_path: Path) -> None:
    assert POSTGRES_URL is not None
    url = make_url(POSTGRES_URL).set(database="modelport_no_such_database")
    out = run_cli(
        ["serve", "--home", str(tmp_path), "--store", url.render_as_string(hide_password=False)],
        timeout=60,
    )
    line = _error_line(out)
    assert "the database 'modelport_no_such_database' does not exist" in line
    assert "createdb" in line and "modelport_no_such_database" in line


def test_a_key_without_bearer_is_told_the_header_form(server: RunningServer) -> None:
    key = server.admin_key
    for path, method in (("/v1/models", "GET"), ("/v1/models/iris/predict", "POST")):
        bare = httpx.request(
            method, server.url + path, headers={"Authorization": key}, json={"inputs": [ROW]}
        )
        assert bare.status_code == 401, bare.text
        message = bare.json()["error"]["message"]
        assert "'Bearer <key>'" in message and "without 'Bearer '" in message
        basic = httpx.request(
            method, server.url + path, headers={"Authorization": f"Basic {key}"}, json={}
        )
        assert basic.status_code == 401 and "'Basic' scheme" in basic.json()["error"]["message"]
    missing = httpx.get(server.url + "/v1/models")
    assert missing.status_code == 401 and "an API key is required" in missing.text
    fine = httpx.get(server.url + "/v1/models", headers={"Authorization": f"bearer {key}"})
    assert fine.status_code == 200
    other = httpx.get(server.url + "/v1/models", headers={"X-API-Key": key})
    assert other.status_code == 200


# -- a served iris model for the client commands ----------------------------------------------------


@pytest.fixture
def iris_env(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any, tmp_path: Path
) -> dict[str, str]:
    server.client().push(
        "iris", iris_pipeline, train_data=iris_frame, target="species", alias="production"
    )
    return cli_env(MODELPORT_URL=server.url, MODELPORT_KEY=server.admin_key)


def test_feedback_for_an_unknown_id_gives_the_servers_reason(iris_env: dict[str, str]) -> None:
    line = _error_line(
        run_cli(["feedback", "01937b2e-0000-7000-8000-000000000000", "--label", "1"], env=iris_env)
    )
    assert "no feedback item was accepted: " in line and "unknown prediction" in line


def test_predict_prints_a_table_csv_or_json(iris_env: dict[str, str], tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text(
        ",".join(IRIS_COLUMNS)
        + "\n"
        + "\n".join(",".join(str(ROW[c]) for c in IRIS_COLUMNS) for _ in range(20))
        + "\n"
    )
    piped = json.loads(_ok(["predict", "iris", "--csv", str(rows)], iris_env).stdout)
    assert len(piped["prediction_ids"]) == 20  # not a terminal: the JSON answer, as before
    table = _ok(["predict", "iris", "--csv", str(rows), "--format", "table"], iris_env).stdout
    lines = table.splitlines()
    assert len(lines) == 21 and lines[0].split()[:2] == ["PREDICTION_ID", "PREDICTION"]
    assert "PROBA_SETOSA" in lines[0] and lines[1].split()[1] == "setosa"
    csv_out = _ok(["predict", "iris", "--csv", str(rows), "--format", "csv"], iris_env).stdout
    head, first = csv_out.splitlines()[:2]
    assert head.startswith("prediction_id,prediction,proba_setosa,")
    assert len(first.split(",")[0]) == 36 and first.split(",")[1] == "setosa"
    assert len(csv_out.splitlines()) == 21


# -- progress -----------------------------------------------------------------------------------------


def _last_bar(stderr: str) -> str:
    bars = [part for line in stderr.splitlines() for part in line.split("\r") if "%|" in part]
    assert bars, stderr
    return bars[-1]


def test_score_bars_end_at_100_percent(
    iris_env: dict[str, str], iris_frame: Any, tmp_path: Path
) -> None:
    data = iris_frame[IRIS_COLUMNS]
    data.to_parquet(tmp_path / "in.parquet")
    out = _ok(
        ["score", "iris", str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet")], iris_env
    )
    bar = _last_bar(out.stderr)
    assert "100%" in bar and f"{len(data)}/{len(data)}" in bar, bar

    db = tmp_path / "warehouse.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        data.to_sql("flowers", conn, index=False)
    out = _ok(
        [
            "score",
            "iris",
            "--from-sql",
            "SELECT * FROM flowers",
            "--to-table",
            "scored",
            "--db",
            f"sqlite:///{db}",
            "--chunk-rows",
            "40",
        ],
        iris_env,
    )
    bar = _last_bar(out.stderr)
    assert "100%" in bar and f"{len(data)}/{len(data)}" in bar and "0.00" not in bar, bar


def test_retrain_wait_shows_progress_and_log_lines(
    iris_env: dict[str, str], iris_frame: Any, tmp_path: Path
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"fields": [{"name": c, "type": "number"} for c in IRIS_COLUMNS]}))
    iris_frame.to_csv(tmp_path / "labelled.csv", index=False)
    _ok(
        [
            "create",
            "flowers",
            "--algorithm",
            "random_forest_classifier",
            "--schema",
            f"@{schema}",
            "--target",
            "species",
        ],
        iris_env,
    )
    _ok(["ingest", "flowers", str(tmp_path / "labelled.csv"), "--quiet"], iris_env)
    out = _ok(["retrain", "flowers", "--seed", "3"], iris_env)
    bar = _last_bar(out.stderr)
    assert "job " in bar and "100%" in bar, bar
    assert "started on" in out.stderr  # the job's log lines, as they came
    assert json.loads(out.stdout)["version"] == 1


# -- forms -------------------------------------------------------------------------------------------


def test_push_schema_takes_json_a_file_or_at_file(
    iris_env: dict[str, str], iris_pipeline: Any, tmp_path: Path
) -> None:
    model = tmp_path / "model.skops"
    sio.dump(iris_pipeline, model)
    doc = {"fields": [{"name": c, "type": "number", "minimum": 0} for c in IRIS_COLUMNS]}
    path = tmp_path / "schema.txt"
    path.write_text(json.dumps(doc))
    for given in (json.dumps(doc), str(path), f"@{path}"):
        out = _ok(["push", "iris", str(model), "--schema", given], iris_env)
        assert out.stdout.startswith("pushed iris version")
    versions = json.loads(_ok(["versions", "iris", "--json"], iris_env).stdout)
    assert [v["schema"]["fields"][0].get("minimum") for v in versions] == [None, 0, 0, 0]


def test_create_segment_by(iris_env: dict[str, str]) -> None:
    store = {"name": "store", "type": "category", "categories": ["north", "south"]}
    schema = {"fields": [store, {"name": "x", "type": "number"}]}
    _ok(
        [
            "create",
            "sales",
            "--algorithm",
            "online_linear_regression",
            "--schema",
            json.dumps(schema),
            "--target",
            "y",
            "--segment-by",
            "store",
        ],
        iris_env,
    )
    segments = httpx.get(
        iris_env["MODELPORT_URL"] + "/v1/models/sales/segments",
        headers={"Authorization": f"Bearer {iris_env['MODELPORT_KEY']}"},
    ).json()
    assert segments["field"] == "store"


def test_push_segment_without_train_data(
    server: RunningServer, iris_frame: Any, tmp_path: Path
) -> None:
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = iris_frame.copy()
    frame.insert(0, "store", ["a", "b", "c"] * (len(frame) // 3))
    pipe = make_pipeline(
        make_column_transformer((OneHotEncoder(), ["store"]), remainder="passthrough"),
        LogisticRegression(max_iter=500),
    ).fit(frame.drop(columns="species"), frame["species"])
    client = server.client()
    client.push("shops", pipe, train_data=frame, target="species", alias="production")
    client.set_segment_key("shops", "store")
    sio.dump(pipe, tmp_path / "shop-a.skops")
    env = cli_env(MODELPORT_URL=server.url, MODELPORT_KEY=server.admin_key)
    out = _ok(
        [
            "push",
            "shops",
            str(tmp_path / "shop-a.skops"),
            "--segment",
            "a",
            "--alias",
            "production",
        ],
        env,
    )
    assert "version 2" in out.stdout
    v2 = client.versions("shops")[1]
    assert v2["segment"] == "a"
    # The production version's schema (from the training data), not every field a number.
    assert v2["schema"] == client.versions("shops")[0]["schema"]
    assert {f["name"]: f["type"] for f in v2["schema"]["fields"]}["store"] == "category"
    answer = client.predict("shops", [{"store": "a", **ROW}])
    assert answer["versions"] == [2]
    # No version with the same fields: the key is a string, the rest the estimator's guess.
    two = frame[["store", "sepal_length", "sepal_width"]]
    small = make_pipeline(  # the push's smoke row has store "": an encoder that ignores it
        make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore"), ["store"]), remainder="passthrough"
        ),
        LogisticRegression(max_iter=500),
    ).fit(two, frame["species"])
    client.push("shops", small, segment="b")
    v3 = client.versions("shops")[2]
    assert [(f["name"], f["type"]) for f in v3["schema"]["fields"]] == [
        ("store", "string"),
        ("sepal_length", "number"),
        ("sepal_width", "number"),
    ]


def test_spark_output_may_be_a_folder(tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    source.write_bytes(b"")
    folder = Request("iris", str(source), str(tmp_path / "scored"), engine="spark")
    folder.check()
    assert folder.output_format() == "parquet"
    assert (
        Request("iris", str(source), str(tmp_path / "s.csv"), engine="spark").output_format()
        == "csv"
    )
    with pytest.raises(Exception, match="unsupported file type"):
        Request("iris", str(source), str(tmp_path / "scored"), engine="pandas").check()
