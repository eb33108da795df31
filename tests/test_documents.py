"""Request documents: one pydantic declaration validates them and documents them."""

from __future__ import annotations

from typing import Any

import pytest

from modelport.api.shapes import GateInfo, ServingSettings
from modelport.errors import InvalidInput, InvalidRequest
from modelport.learning.retrain import Gate, check_gate, check_triggers
from modelport.registry.models import check_serving


def _details(check: Any, doc: Any) -> list[dict[str, str]]:
    with pytest.raises(InvalidInput) as refused:
        check(doc)
    return list(refused.value.details)


def test_numbers_are_json_numbers_within_their_range() -> None:
    assert check_serving({"max_batch_rows": 3.0, "max_wait_ms": 2}) == {
        "max_batch_rows": 3,
        "max_wait_ms": 2.0,
    }
    for value in (True, "5", 0, 2**80, 3.5):
        assert _details(check_serving, {"max_batch_rows": value}) == [
            {"field": "max_batch_rows", "reason": "expected an integer from 1 to 1000000"}
        ], value
    assert _details(check_serving, {"predict_timeout_seconds": 0}) == [
        {"field": "predict_timeout_seconds", "reason": "expected a number from 0.001 to 86400"}
    ]
    assert check_serving({"max_wait_ms": None}) == {}  # null: back to the server's default


def test_every_problem_is_named_with_its_path_and_unknown_keys_list_the_known() -> None:
    details = _details(
        check_gate, {"metric": "acc", "colour": 1, "replay": {"hours": -1, "days": 2}}
    )
    by_field = {d["field"]: d["reason"] for d in details}
    assert set(by_field) == {"gate.metric", "gate.colour", "gate.replay.hours", "gate.replay.days"}
    assert by_field["gate.colour"] == "unknown field; known: metric, min_improvement, replay"
    assert by_field["gate.replay.hours"] == "expected a number >= 0"
    assert "'accuracy'" in by_field["gate.metric"]
    missing = _details(check_triggers, {"metric_below": {"metric": "accuracy"}})
    assert missing == [{"field": "triggers.metric_below.threshold", "reason": "missing"}]


def test_a_document_that_is_not_an_object() -> None:
    with pytest.raises(InvalidRequest) as body:  # the whole body: 400
        check_serving([1])
    assert body.value.details == [{"field": "body", "reason": "not an object"}]
    assert _details(check_gate, 3) == [{"field": "gate", "reason": "not an object"}]  # a field


def test_the_api_documents_the_classes_that_validate() -> None:
    # No second copy to drift: OpenAPI shows the very class the check uses.
    assert ServingSettings.model_fields["predict_timeout_seconds"].metadata
    assert GateInfo.model_fields["gate"].annotation == Gate | None
    assert check_gate({"metric": "r2"}) == {"metric": "r2", "min_improvement": 0.0}


def test_monitoring_settings_keep_their_own_checks_inside_the_declaration() -> None:
    from modelport.monitoring.checks import check_monitoring

    by_field = {
        d["field"]: d["reason"]
        for d in _details(
            check_monitoring,
            {
                "thresholds": {"ks_pvalue": 2, "min_rows": 0.5},
                "window": "later",
                "webhook": "ftp://x",
            },
        )
    }
    assert by_field == {
        "monitoring.thresholds.ks_pvalue": "expected a number > 0 and < 1",
        "monitoring.thresholds.min_rows": "expected an integer >= 1",
        "monitoring.window": "not a positive duration (s, m, h, d, w) <= 100y",
        "monitoring.webhook": "expected an http(s) URL",
    }
    good = {"thresholds": {"psi": 0.3}, "window": "2h", "webhook": "https://hooks.example/m"}
    assert check_monitoring(good) == good


def test_job_requests_are_checked_by_the_class_of_their_type() -> None:
    from modelport.jobs.queue import check_params

    assert check_params("retrain", {"type": "retrain"}) == {"seed": 0, "holdout": 0.2}
    assert check_params("replay", {"type": "replay", "version": 2}) == {
        "version": 2,
        "limit": 10_000,
    }
    by_field = {
        d["field"]: d["reason"]
        for d in _details(
            lambda doc: check_params("replay", doc),
            {"type": "replay", "version": 0, "limit": True, "speed": 1},
        )
    }
    assert by_field["version"] == "expected an integer from 1 to 2147483647"
    assert by_field["limit"] == "expected an integer from 1 to 1000000"
    assert by_field["speed"].startswith("unknown field; known: type, version")
    score = {"type": "score", "version": 1, "engine": "pandas", "input": {"path": "a.csv"}}
    assert _details(lambda doc: check_params("score", doc), score) == [
        {"field": "input", "reason": "expected the input file's path and sha256, or sql and db"}
    ]
    by_query = {**score, "input": {"sql": "select 1", "db": "sqlite:///w.db", "rows": 5}}
    assert check_params("score", by_query)["input"]["rows"] == 5  # the lineage is kept whole
