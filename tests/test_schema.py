"""Schemas: validation reports every problem, parsing names the schema path, inference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelport.errors import InvalidInput
from modelport.inputs.inference import infer_schema
from modelport.inputs.rows import table_from_payload
from modelport.inputs.schema import Field, Schema, parse_schema

SCHEMA = parse_schema(
    {
        "fields": [
            {"name": "age", "type": "integer", "minimum": 0, "maximum": 120},
            {"name": "income", "type": "number", "minimum": 0},
            {"name": "plan", "type": "category", "categories": ["free", "pro"]},
            {"name": "active", "type": "boolean", "required": False, "default": True},
            {"name": "note", "type": "string", "required": False, "default": ""},
        ]
    }
)


def _problems(records: list[dict]) -> set[tuple[int, str | None, str]]:
    with pytest.raises(InvalidInput) as info:
        SCHEMA.validate(records)
    return {(d["row"], d["field"], d["reason"]) for d in info.value.details}


def test_valid_rows_come_back_in_field_order_with_defaults_and_coercion() -> None:
    rows = SCHEMA.validate([{"plan": "pro", "income": 10, "age": 30.0}])
    assert rows == [[30, 10.0, "pro", True, ""]]
    assert isinstance(rows[0][0], int) and isinstance(rows[0][1], float)


def test_every_problem_is_reported_with_row_and_field() -> None:
    found = _problems(
        [
            {"age": 30, "income": 1.0, "plan": "pro"},
            {"age": -1, "income": "lots", "plan": "gold", "extra": 1},
            {"income": None, "plan": "free", "active": "yes"},
            {"age": 3.5, "income": True, "plan": "free", "note": 5},
        ]
    )
    assert found == {
        (1, "age", "out of range: -1 is below the minimum 0"),
        (1, "income", "expected a number, got string"),
        (1, "plan", "unknown category 'gold'; allowed: 'free', 'pro'"),
        (1, "extra", "unexpected field"),
        (2, "age", "missing"),
        (2, "income", "null is not allowed"),
        (2, "active", "expected a boolean, got string"),
        (3, "age", "expected an integer, got 3.5"),
        (3, "income", "expected a number, got boolean"),
        (3, "note", "expected a string, got number"),
    }


def test_the_message_names_the_first_problem_and_counts_the_rest() -> None:
    with pytest.raises(InvalidInput) as info:
        SCHEMA.validate([{"age": 500, "income": 1, "plan": "pro", "x": 1}])
    assert "row 0, field 'age'" in info.value.message and "(and 1 more)" in info.value.message


def test_a_row_that_is_not_an_object_is_reported() -> None:
    assert _problems([[1, 2, 3]]) == {(0, None, "each input must be a JSON object")}  # type: ignore[list-item]


def test_booleans_are_not_category_numbers() -> None:
    schema = Schema((Field("level", "category", categories=(1, 2)),))
    assert schema.validate([{"level": 1}]) == [[1]]
    with pytest.raises(InvalidInput):
        schema.validate([{"level": True}])


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"fields": []}, "schema.fields"),
        ({"fields": [{"name": "x", "type": "float"}]}, "schema.fields[0].type"),
        (
            {"fields": [{"name": "x", "type": "number"}, {"name": "x", "type": "number"}]},
            "schema.fields[1].name",
        ),
        ({"fields": [{"name": "x", "type": "category"}]}, "schema.fields[0].categories"),
        ({"fields": [{"name": "x", "type": "number", "minimum": "a"}]}, "schema.fields[0].minimum"),
        ({"fields": [{"name": "x", "type": "number", "colour": 1}]}, "schema.fields[0].colour"),
        (
            {"fields": [{"name": "x", "type": "integer", "default": "a"}]},
            "schema.fields[0].default",
        ),
    ],
)
def test_bad_schema_documents_name_the_path(doc: dict, path: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_schema(doc)
    assert path in {d["field"] for d in info.value.details}


def test_schema_round_trips_through_its_dict() -> None:
    assert parse_schema(SCHEMA.to_dict()) == SCHEMA


def test_infer_schema_types_nulls_and_stats() -> None:
    df = pd.DataFrame(
        {
            "x": np.linspace(0, 1, 40),
            "n": np.arange(40),
            "flag": [True, False] * 20,
            "colour": ["red", "blue"] * 20,
            "name": [f"user{i}" for i in range(40)],
            "maybe": [1.0, None] * 20,
        }
    )
    schema, stats = infer_schema(df)
    assert [(f.name, f.type, f.required) for f in schema.fields] == [
        ("x", "number", True),
        ("n", "integer", True),
        ("flag", "boolean", True),
        ("colour", "category", True),
        ("name", "string", True),
        ("maybe", "number", False),
    ]
    assert schema.fields[3].categories == ("blue", "red")
    assert stats["rows"] == 40
    assert stats["fields"]["x"]["min"] == 0.0 and stats["fields"]["x"]["max"] == 1.0
    assert stats["fields"]["maybe"]["missing"] == 20
    assert sum(stats["fields"]["n"]["histogram"]["counts"]) == 40


def test_infer_schema_selects_and_orders_fields() -> None:
    df = pd.DataFrame({"a": [1.0], "b": [2.0], "target": [0]})
    schema, _ = infer_schema(df, fields=["b", "a"])
    assert schema.names == ["b", "a"]
    with pytest.raises(InvalidInput, match="lacks the column"):
        infer_schema(df, fields=["c"])


def test_payload_forms() -> None:
    ab = parse_schema(
        {"fields": [{"name": "a", "type": "number"}, {"name": "b", "type": "integer"}]}
    )
    assert table_from_payload(ab, {"inputs": [{"a": 1, "b": 2}]}, 10).rows() == [[1.0, 2]]
    assert table_from_payload(ab, {"columns": ["a", "b"], "data": [[1, 2]]}, 10).rows() == [
        [1.0, 2]
    ]
    # columns in another order are put in schema order
    assert table_from_payload(ab, {"columns": ["b", "a"], "data": [[2, 1.5]]}, 10).rows() == [
        [1.5, 2]
    ]
    for body, field in [
        ({}, "inputs"),
        ({"inputs": []}, "inputs"),
        ({"inputs": [{}], "columns": ["a"]}, "inputs"),
        ({"columns": "a", "data": [[1]]}, "columns"),
        ({"columns": ["a", "a"], "data": [[1, 2]]}, "columns"),
        ({"columns": ["a"], "data": []}, "data"),
        ({"inputs": [{"a": 1}] * 11}, "inputs"),
        ({"columns": ["a", "c"], "data": [[1, 2]]}, "b"),  # b missing (c is unexpected too)
    ]:
        with pytest.raises(InvalidInput) as info:
            table_from_payload(ab, body, 10)
        assert info.value.details[0]["field"] == field
    with pytest.raises(InvalidInput) as info:
        table_from_payload(ab, {"columns": ["a", "b"], "data": [[1, 2], [3]]}, 10)
    assert info.value.details == [
        {"row": 1, "field": None, "reason": "expected a list of 2 values"}
    ]
