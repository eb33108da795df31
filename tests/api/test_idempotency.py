"""Idempotency-Key: a repeated predict or observations request is answered from the store."""

from __future__ import annotations

import threading
from typing import Any

from tests.conftest import IRIS_COLUMNS, RunningServer


def test_a_repeated_key_gets_the_first_answer_and_one_ledger_row(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    mp = server.client()
    mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    http = server.http()
    rows = iris_frame[IRIS_COLUMNS].iloc[[0, 120]].to_dict("records")
    body = {"inputs": rows}
    first = http.post("/v1/models/iris/predict", json=body, headers={"Idempotency-Key": "k-1"})
    again = http.post("/v1/models/iris/predict", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert first.json()["probabilities"][0]["setosa"] > 0.5
    other = http.post("/v1/models/iris/predict", json=body, headers={"Idempotency-Key": "k-2"})
    plain = http.post("/v1/models/iris/predict", json=body)
    assert other.json()["prediction_ids"] != first.json()["prediction_ids"]
    assert plain.json()["prediction_ids"] != first.json()["prediction_ids"]
    assert len(mp.predictions("iris")["predictions"]) == 6

    # Another consumer's key of the same text is its own.
    key = server.key("app", "predict")
    theirs = server.http(key).post(
        "/v1/models/iris/predict", json=body, headers={"Idempotency-Key": "k-1"}
    )
    assert theirs.json()["prediction_ids"] != first.json()["prediction_ids"]


def test_concurrent_repeats_score_once(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    mp = server.client()
    mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    body = {"inputs": iris_frame[IRIS_COLUMNS].head(1).to_dict("records")}
    answers: list[Any] = []

    def send() -> None:
        answers.append(
            server.http()
            .post("/v1/models/iris/predict", json=body, headers={"Idempotency-Key": "same"})
            .json()
        )

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({a["prediction_ids"][0] for a in answers}) == 1
    assert len(mp.predictions("iris")["predictions"]) == 1


def test_a_bad_key_is_a_400_naming_the_header(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    server.client().push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    body = {"inputs": iris_frame[IRIS_COLUMNS].head(1).to_dict("records")}
    answer = server.http().post(
        "/v1/models/iris/predict", json=body, headers={"Idempotency-Key": "x" * 201}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["details"][0]["field"] == "Idempotency-Key"


def test_repeated_observations_are_stored_once(server: RunningServer) -> None:
    mp = server.client()
    mp.create_from_algorithm(
        "trend",
        "online_linear_regression",
        schema={"fields": [{"name": "x", "type": "number"}]},
        target="y",
    )
    http = server.http()
    rows = {"observations": [{"x": 1.0, "y": 2.0}, {"x": 2.0, "y": 4.0}]}
    first = http.post("/v1/models/trend/observations", json=rows, headers={"Idempotency-Key": "o"})
    again = http.post("/v1/models/trend/observations", json=rows, headers={"Idempotency-Key": "o"})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert first.json()["accepted"] == 2
    fresh = http.post("/v1/models/trend/observations", json=rows)
    assert fresh.json()["first_id"] == first.json()["last_id"] + 1
    by_client = mp.observe("trend", rows["observations"], idempotency_key="o")
    assert by_client == first.json()


def test_the_client_sends_the_key(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    mp = server.client()
    mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    rows = iris_frame[IRIS_COLUMNS].head(2).to_dict("records")
    first = mp.predict("iris", rows, idempotency_key="c")
    assert mp.predict("iris", rows, idempotency_key="c") == first
