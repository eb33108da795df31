"""Validated rows as a Table: the vectorized path agrees with the per-value validator."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from modelport.errors import InvalidInput
from modelport.inputs.schema import parse_schema
from modelport.inputs.table import Table

MIXED = parse_schema(
    {
        "fields": [
            {"name": "age", "type": "integer", "minimum": 0, "maximum": 120},
            {"name": "income", "type": "number", "minimum": 0},
            {"name": "plan", "type": "category", "categories": ["free", "pro"]},
            {"name": "level", "type": "category", "categories": [1, 2, 3]},
            {"name": "active", "type": "boolean", "required": False, "default": True},
            {"name": "note", "type": "string", "required": False, "default": None},
            {"name": "score", "type": "number", "required": False, "default": None},
        ]
    }
)
NUMBERS = parse_schema(
    {
        "fields": [
            {"name": "x", "type": "number"},
            {"name": "y", "type": "number", "minimum": -1, "maximum": 1},
            {"name": "z", "type": "number"},
        ]
    }
)

# Values that fit some field, and values that fit none or only some.
_ODD = [None, True, False, "1", "", [], {}, 2**63, 2**64 - 1, 1e308, -5, 121, 0.5, 3.0, "pro"]


def _value(rng: random.Random, field: Any) -> Any:
    if rng.random() < 0.15:
        return rng.choice(_ODD)
    if field.type == "number":
        return rng.choice([rng.uniform(-1, 1), rng.randint(0, 3), 0.25])
    if field.type == "integer":
        return rng.choice([rng.randint(0, 120), 7.0])
    if field.type == "boolean":
        return rng.random() < 0.5
    if field.type == "string":
        return rng.choice(["a", "b c", ""])
    return rng.choice(list(field.categories))


def _records(rng: random.Random, schema: Any, n: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(n):
        record = {f.name: _value(rng, f) for f in schema.fields}
        roll = rng.random()
        if roll < 0.05:
            record.pop(rng.choice(schema.names))
        elif roll < 0.08:
            record["extra"] = 1
        elif roll < 0.09:
            out.append(rng.choice([[1, 2], "row", 3]))
            continue
        out.append(record)
    return out


def _outcome(fn: Any, records: Any) -> Any:
    try:
        return ("ok", fn(records))
    except InvalidInput as exc:
        return ("invalid", exc.message, exc.details)


@pytest.mark.parametrize("schema", [MIXED, NUMBERS], ids=["mixed", "numbers"])
def test_the_fast_path_agrees_with_the_validator(schema: Any) -> None:
    rng = random.Random(7)
    accepted = rejected = 0
    for trial in range(600):
        records = _records(rng, schema, rng.choice([1, 2, 5, 30]))
        want = _outcome(schema.validate, records)
        got = _outcome(lambda r: schema.table(r).rows(), records)
        assert got == want, (trial, records)
        if want[0] == "ok":
            accepted += 1
            # rows in field order as lists of values: the same through the other entry points
            rows = [[r[n] for n in schema.names] for r in records if len(r) == len(schema.names)]
            if len(rows) == len(records):
                assert schema.table_from_rows(rows).rows() == want[1]
        else:
            rejected += 1
    assert accepted > 50 and rejected > 50  # both paths were exercised


def test_values_keep_their_types() -> None:
    table = MIXED.table(
        [{"age": 30, "income": 10, "plan": "pro", "level": 2, "active": False, "note": "x"}]
    )
    assert table.rows() == [[30, 10.0, "pro", 2, False, "x", None]]
    age, income, _, _, active, _, score = table.columns()
    assert age.dtype == np.int64 and income.dtype == np.float64 and active.dtype == bool
    assert np.isnan(score[0])
    frame = table.frame()
    assert list(frame.columns) == MIXED.names and frame["age"].dtype == np.int64


def test_numbers_travel_as_one_matrix_that_joins_and_splits() -> None:
    a = NUMBERS.table([{"x": 1, "y": 0.5, "z": -2.0}])
    b = NUMBERS.table_from_rows([[2.0, 0.0, 3], [4.0, -1, 5.5]])
    both = Table.concat([a, b])
    assert both.matrix().dtype == np.float64
    assert both.matrix().tolist() == [[1.0, 0.5, -2.0], [2.0, 0.0, 3.0], [4.0, -1.0, 5.5]]
    assert both[1:3].rows() == b.rows() and len(both[1:3]) == 2
    assert list(both.frame().columns) == ["x", "y", "z"]


def test_mixed_tables_join_even_when_a_column_changes_dtype() -> None:
    with_int = MIXED.table([{"age": 1, "income": 1, "plan": "free", "level": 1}])
    bigger = MIXED.table([{"age": 2, "income": 2, "plan": "pro", "level": 3, "score": 0.5}])
    both = Table.concat([with_int, bigger])
    assert both.rows() == [
        [1, 1.0, "free", 1, True, None, None],
        [2, 2.0, "pro", 3, True, None, 0.5],
    ]


def test_a_matrix_out_of_range_names_the_field() -> None:
    with pytest.raises(InvalidInput) as info:
        NUMBERS.table_from_matrix(np.array([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0]]))
    assert info.value.details[0] == {
        "row": 1,
        "field": "y",
        "reason": "out of range: 2.0 is above the maximum 1",
    }
    assert NUMBERS.table_from_matrix(np.array([[1, 0, 2]], dtype=np.int32)).rows() == [
        [1.0, 0.0, 2.0]
    ]


def test_integers_beyond_64_bits_are_rejected_not_crashed() -> None:
    with pytest.raises(InvalidInput) as info:
        MIXED.table([{"age": 2**63, "income": 1, "plan": "free", "level": 1}])
    assert info.value.details[0]["field"] == "age"


def test_the_ledger_encoding_gives_the_rows_back() -> None:
    from modelport.ledger import decode_inputs, encode_inputs

    optional = parse_schema(
        {
            "fields": [
                {"name": "x", "type": "number"},
                {"name": "y", "type": "number", "default": None},
            ]
        }
    )
    numbers = optional.table([{"x": 1.5}, {"x": -2, "y": 1e-300}])
    blob = encode_inputs(numbers)
    assert blob[:2] == b"F8" and len(blob) == 2 + 4 * 8  # raw float64, not text
    assert decode_inputs(blob, 2) == [[1.5, None], [-2.0, 1e-300]]
    mixed = MIXED.table([{"age": 3, "income": 1.25, "plan": "pro", "level": 2, "note": "n"}])
    blob = encode_inputs(mixed)
    assert blob[:2] == b"JS"
    assert decode_inputs(blob, len(MIXED.fields)) == [[3, 1.25, "pro", 2, True, "n", None]]
    with pytest.raises(ValueError, match="encoding"):
        decode_inputs(b"??", 1)
