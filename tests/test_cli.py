"""End to end through the real CLI against a real server process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import skops.io as sio

from tests.conftest import IRIS_COLUMNS
from tests.procs import ServerProcess, cli_env, run_cli

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture
def served(tmp_path: Path, store_url: str) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    home = tmp_path / "home"
    made = run_cli(
        [
            "keys",
            "create",
            "--name",
            "ci",
            "--scope",
            "admin",
            "--home",
            str(home),
            "--store",
            store_url,
        ]
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("mp_") and "\n" not in key
    proc = ServerProcess(home, store_url).start()
    try:
        yield proc, cli_env(MODELPORT_URL=proc.url, MODELPORT_KEY=key)
    finally:
        proc.kill()


def _ok(args: list[str], env: dict[str, str]) -> str:
    out = run_cli(args, env=env)
    assert out.returncode == 0, f"{args}: {out.stderr}"
    assert "Traceback" not in out.stderr
    return out.stdout


def _fails(args: list[str], env: dict[str, str]) -> str:
    out = run_cli(args, env=env)
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr + out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def test_push_predict_feedback_rollback(
    served: tuple[ServerProcess, dict[str, str]],
    iris_pipeline: Any,
    iris_frame: Any,
    tmp_path: Path,
) -> None:
    _, env = served
    model = tmp_path / "model.skops"
    sio.dump(iris_pipeline, model)
    train = tmp_path / "train.csv"
    iris_frame.to_csv(train, index=False)
    pushed = _ok(
        [
            "push",
            "iris",
            str(model),
            "--train-data",
            str(train),
            "--target",
            "species",
            "--commit",
            "abc123",
            "--metric",
            "acc=0.97",
            "--alias",
            "production",
        ],
        env,
    )
    assert "pushed iris version 1 (aliases: production)" in pushed

    out = json.loads(
        _ok(["predict", "iris", "--json", json.dumps([ROW, {**ROW, "petal_length": 5.0}])], env)
    )
    import pandas as pd

    expected = list(iris_pipeline.predict(pd.DataFrame([ROW, {**ROW, "petal_length": 5.0}])))
    assert out["predictions"] == expected and out["version"] == 1
    batch = tmp_path / "batch.csv"
    iris_frame[IRIS_COLUMNS].iloc[[10, 70, 140]].to_csv(batch, index=False)
    by_csv = json.loads(_ok(["predict", "iris", "--csv", str(batch)], env))
    assert by_csv["predictions"] == list(
        iris_pipeline.predict(iris_frame[IRIS_COLUMNS].iloc[[10, 70, 140]])
    )

    line = _fails(["predict", "iris", "--json", json.dumps({**ROW, "sepal_length": "big"})], env)
    assert "sepal_length" in line and "expected a number" in line

    pid = out["prediction_ids"][0]
    _ok(["feedback", pid, "--label", "setosa"], env)
    shown = json.loads(_ok(["prediction", pid], env))
    assert shown["feedback"][0]["label"] == "setosa" and shown["consumer"] == "ci"

    assert "pushed iris version 2" in _ok(
        ["push", "iris", str(model), "--train-data", str(train), "--target", "species"], env
    )
    assert "production -> version 2 (was 1)" in _ok(
        ["promote", "iris", "2", "--reason", "try it"], env
    )
    assert json.loads(_ok(["predict", "iris", "--json", json.dumps(ROW)], env))["version"] == 2
    assert "production -> version 1 (was 2)" in _ok(["rollback", "iris", "--reason", "worse"], env)
    assert json.loads(_ok(["predict", "iris", "--json", json.dumps(ROW)], env))["version"] == 1
    history = _ok(["history", "iris"], env)
    assert "rollback" in history and "worse" in history and "try it" in history

    versions = _ok(["versions", "iris"], env)
    assert "abc123" in versions and "production" in versions
    assert "iris" in _ok(["models"], env)
    assert json.loads(_ok(["models", "--json"], env))[0]["aliases"] == {"production": 1}


def test_release_commands(
    served: tuple[ServerProcess, dict[str, str]], iris_pipeline: Any, tmp_path: Path
) -> None:
    _, env = served
    model = tmp_path / "model.skops"
    sio.dump(iris_pipeline, model)
    _ok(["push", "iris", str(model), "--alias", "production"], env)
    _ok(["push", "iris", str(model), "--alias", "candidate"], env)
    assert "consumer ci -> {'version': 1}" in _ok(["pin", "iris", "ci", "--version", "1"], env)
    _ok(["promote", "iris", "2"], env)
    assert json.loads(_ok(["predict", "iris", "--json", json.dumps(ROW)], env))["version"] == 1
    assert "ci" in _ok(["consumers", "iris"], env)
    _ok(["unpin", "iris", "ci"], env)
    assert json.loads(_ok(["predict", "iris", "--json", json.dumps(ROW)], env))["version"] == 2

    policy = tmp_path / "split.json"
    policy.write_text(
        json.dumps(
            {
                "policy": "split",
                "arms": [{"name": "a", "version": 1}, {"name": "b", "version": 2}],
            }
        )
    )
    out = json.loads(_ok(["traffic", "iris", "--set", f"@{policy}"], env))
    assert out["revision"] == 1 and out["traffic"]["policy"] == "split"
    assert json.loads(_ok(["traffic", "iris"], env))["revision"] == 1
    for _ in range(6):
        _ok(["predict", "iris", "--json", json.dumps(ROW)], env)
    report = json.loads(_ok(["experiment", "iris", "--json"], env))
    assert [a["arm"] for a in report["arms"]] == ["a", "b"]
    assert sum(a["requests"] for a in report["arms"]) == 6
    assert "accuracy" in _ok(["experiment", "iris"], env)
    adapter = '{"steps": [{"rename": {"from": "sl", "to": "sepal_length"}}]}'
    _ok(["adapter", "iris", "--set", adapter], env)
    renamed = {("sl" if k == "sepal_length" else k): v for k, v in ROW.items()}
    assert json.loads(_ok(["predict", "iris", "--json", json.dumps(renamed)], env))["predictions"]
    kinds = _ok(["events", "iris"], env)
    assert "adapter_set" in kinds and "traffic_set" in kinds and "consumer_removed" in kinds
    line = _fails(
        ["traffic", "iris", "--set", '{"policy": "split", "arms": [{"version": 9}]}'], env
    )
    assert "arms" in line


def test_errors_are_one_line(served: tuple[ServerProcess, dict[str, str]], tmp_path: Path) -> None:
    _, env = served
    assert "no model named 'ghost'" in _fails(["versions", "ghost"], env)
    line = _fails(["models"], {**env, "MODELPORT_KEY": "mp_bad"})
    assert "unknown or revoked API key" in line
    line = _fails(["models"], {**env, "MODELPORT_URL": "http://127.0.0.1:9"})
    assert "cannot reach the modelport server" in line
    garbage = tmp_path / "junk.bin"
    garbage.write_bytes(b"junk")
    assert "unrecognized artifact" in _fails(["push", "x", str(garbage)], env)
    assert "given" not in _fails(["predict", "x", "--json", "{bad"], env)


def test_keys_local_and_remote(
    served: tuple[ServerProcess, dict[str, str]], tmp_path: Path, store_url: str
) -> None:
    proc, env = served
    local = ["--home", str(proc.home), "--store", store_url]
    app_key = _ok(
        [
            "keys",
            "create",
            "--name",
            "checkout",
            "--scope",
            "predict",
            "--scope",
            "feedback",
            *local,
        ],
        env,
    ).strip()
    listed = _ok(["keys", "list", *local], env)
    assert "checkout" in listed and "feedback,predict" in listed and app_key not in listed
    remote = json.loads(_ok(["keys", "list", "--json"], env))
    assert {k["consumer"] for k in remote} == {"ci", "checkout"}
    new_id = next(k["id"] for k in remote if k["consumer"] == "checkout")
    assert f"revoked key {new_id} of checkout" in _ok(["keys", "revoke", str(new_id)], env)
    made_remote = _ok(["keys", "create", "--name", "viewer", "--scope", "read"], env).strip()
    assert made_remote.startswith("mp_")
    assert "viewer" in _ok(["keys", "list", "--all", *local], env)
    assert "checkout" not in _ok(["keys", "list", *local], env)


def test_every_command_has_help_with_an_example() -> None:
    from modelport.cli.main import main

    def walk(group: Any, path: list[str]) -> Iterator[list[str]]:
        for name, cmd in group.commands.items():
            yield [*path, name]
            if hasattr(cmd, "commands"):
                yield from walk(cmd, [*path, name])

    commands = list(walk(main, []))
    assert len(commands) >= 15
    for cmd in commands:
        if cmd == ["keys"]:
            continue
        out = run_cli([*cmd, "--help"])
        assert out.returncode == 0 and "Example" in out.stdout, cmd
