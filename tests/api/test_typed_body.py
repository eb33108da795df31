"""The typed reader of native predict bodies: the same rows as the general path, or no answer.

The reader (modelport.inputs.typed) may only ever agree with the general path: every body it
takes must give the rows the general path gives, and every body it cannot read exactly so must
be left to the general path, which answers it (rows or errors) as it always has.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from modelport.api import payload
from modelport.inputs.rows import table_from_payload
from modelport.inputs.schema import Schema
from modelport.serving.payloads import NativePayload, RawBody
from tests.conftest import IRIS_COLUMNS, RunningServer

NAMES = ["a", "b c", "class"]  # a space and a Python keyword: JSON keys are any string
SCHEMA = Schema.from_dict({"fields": [{"name": n, "type": "number"} for n in NAMES]})
RANGED = Schema.from_dict(
    {
        "fields": [
            {"name": "a", "type": "number", "minimum": 0, "maximum": 10},
            {"name": "b", "type": "number"},
        ]
    }
)

TAKEN = {
    "records": b'{"inputs": [{"a": 1, "b c": 2.5, "class": -3}, {"class": 0, "a": 4e3, "b c": -0}]}',
    "columns": b'{"columns": ["a", "b c", "class"], "data": [[1, 2, 3], [4.5, 5, 6]]}',
    "a version": b'{"version": 3, "inputs": [{"a": 1, "b c": 2, "class": 3}]}',
    "an alias": b'{"inputs": [{"a": 1, "b c": 2, "class": 3}], "alias": "candidate"}',
    "a repeated key (the last wins)": b'{"inputs": [{"a": 1, "b c": 2, "class": 3, "a": 9}]}',
    "big and tiny numbers": b'{"inputs": [{"a": 123456789012345678901234567890, "b c": 1.5e-320, "class": 1e300}]}',
    "null version": b'{"inputs": [{"a": 1, "b c": 2, "class": 3}], "version": null}',
    "columns in another order": b'{"columns": ["class", "a", "b c"], "data": [[3, 1, 2], [6, 4, 5]]}',
}

LEFT = {
    "a boolean": b'{"inputs": [{"a": true, "b c": 2, "class": 3}]}',
    "a string": b'{"inputs": [{"a": "1", "b c": 2, "class": 3}]}',
    "a null value": b'{"inputs": [{"a": null, "b c": 2, "class": 3}]}',
    "a missing field": b'{"inputs": [{"a": 1, "b c": 2}]}',
    "an extra field": b'{"inputs": [{"a": 1, "b c": 2, "class": 3, "d": 4}]}',
    "an extra body key": b'{"inputs": [{"a": 1, "b c": 2, "class": 3}], "verison": 2}',
    "NaN": b'{"inputs": [{"a": NaN, "b c": 2, "class": 3}]}',
    "beyond a double": b'{"inputs": [{"a": 1e400, "b c": 2, "class": 3}]}',
    "no rows": b'{"inputs": []}',
    "too many rows": b'{"inputs": [' + b",".join([b'{"a": 1, "b c": 2, "class": 3}'] * 6) + b"]}",
    "columns, not the schema's": b'{"columns": ["b c", "a", "d"], "data": [[1, 2, 3]]}',
    "a column twice": b'{"columns": ["a", "a", "class"], "data": [[1, 2, 3]]}',
    "a short data row": b'{"columns": ["a", "b c", "class"], "data": [[1, 2]]}',
    "inputs and columns": b'{"inputs": [{"a": 1, "b c": 2, "class": 3}], "columns": ["a", "b c", "class"]}',
    "neither form": b'{"version": 2}',
    "version 0": b'{"version": 0, "inputs": [{"a": 1, "b c": 2, "class": 3}]}',
    "version past the largest id": b'{"version": 9007199254740993, "inputs": [{"a": 1, "b c": 2, "class": 3}]}',
    "version true": b'{"version": true, "inputs": [{"a": 1, "b c": 2, "class": 3}]}',
    "version 1.0": b'{"version": 1.0, "inputs": [{"a": 1, "b c": 2, "class": 3}]}',
    "version and alias": b'{"version": 1, "alias": "x", "inputs": [{"a": 1, "b c": 2, "class": 3}]}',
    "a NUL in the alias": b'{"alias": "x\\u0000", "inputs": [{"a": 1, "b c": 2, "class": 3}]}',
    "an escaped key": b'{"inputs": [{"\\u0061": 1, "b c": 2, "class": 3}]}',
    "a list": b'[{"a": 1, "b c": 2, "class": 3}]',
    "trailing bytes": b'{"inputs": [{"a": 1, "b c": 2, "class": 3}]} x',
    "empty": b"",
    "not UTF-8": b'{"inputs": [{"a": 1, "b c": 2, "class\xff": 3}]}',
}


def _general(schema: Schema, raw: bytes) -> tuple[np.ndarray, int | None, str | None]:
    native = NativePayload.parse(payload.loads(raw, 64), 5, None)
    table = table_from_payload(schema, native.body, 5)
    return table.matrix(), native.version, native.alias


@pytest.mark.parametrize("raw", TAKEN.values(), ids=TAKEN.keys())
def test_a_body_the_reader_takes_gives_the_general_paths_rows(raw: bytes) -> None:
    reader = SCHEMA.body_reader()
    assert reader is not None
    read = reader.read(raw, 5)
    assert read is not None
    matrix, version, alias = _general(SCHEMA, raw)
    assert read.matrix.dtype == np.float64 and read.matrix.shape == matrix.shape
    assert read.matrix.tobytes() == matrix.tobytes()  # the same bits, signs of zero included
    assert (read.version, read.alias) == (version, alias)


@pytest.mark.parametrize("raw", LEFT.values(), ids=LEFT.keys())
def test_a_body_the_reader_cannot_read_exactly_is_left_to_the_general_path(raw: bytes) -> None:
    reader = SCHEMA.body_reader()
    assert reader is not None
    assert reader.read(raw, 5) is None


def test_values_out_of_range_are_left_to_the_general_path() -> None:
    reader = RANGED.body_reader()
    assert reader is not None
    ok = reader.read(b'{"inputs": [{"a": 0, "b": -1e9}, {"a": 10, "b": 1e9}]}', 5)
    assert ok is not None and ok.matrix.tolist() == [[0, -1e9], [10, 1e9]]
    assert reader.read(b'{"inputs": [{"a": 10.5, "b": 0}]}', 5) is None
    assert reader.read(b'{"columns": ["a", "b"], "data": [[-1, 0]]}', 5) is None


def test_only_all_number_schemas_have_a_reader() -> None:
    mixed = Schema.from_dict(
        {"fields": [{"name": "a", "type": "number"}, {"name": "n", "type": "integer"}]}
    )
    assert mixed.body_reader() is None
    assert SCHEMA.body_reader() is SCHEMA.body_reader()  # made once


class _Counted:
    """The server's body parser, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, raw: bytes) -> Any:
        self.calls += 1
        return payload.loads(raw, 64)


def test_a_hinted_body_is_never_parsed_when_its_schema_answers() -> None:
    raw = TAKEN["records"]
    parse = _Counted()
    native = NativePayload.read(RawBody(raw, parse), 5, None, SCHEMA)
    first = native.rows(SCHEMA, None).matrix()
    assert first.tolist() == [[1, 2.5, -3], [4e3, 0, 0]]
    # A second table of the same payload (a shadow copy, a fallback) gets rows of its own.
    second = native.rows(SCHEMA, None).matrix()
    assert second.tolist() == first.tolist() and not np.shares_memory(first, second)
    assert parse.calls == 0 and not native.needs_body
    # No hint, or a body the hint's reader does not take: parsed once, read the general way.
    for hint, body in ((None, raw), (SCHEMA, LEFT["a missing field"])):
        parse = _Counted()
        NativePayload.read(RawBody(body, parse), 5, None, hint)
        assert parse.calls == 1


def test_a_payload_says_when_answering_needed_its_parsed_body() -> None:
    """An adapter or a segment key reads the parsed body; the engine then gives the next body
    of that consumer and model no hint, so the reader's work is not spent twice."""
    from modelport.inputs.adapters import parse_adapter

    for use in (
        lambda p: p.unit("a"),
        lambda p: p.rows(SCHEMA, parse_adapter({"steps": [{"rename": {"from": "x", "to": "a"}}]})),
    ):
        native = NativePayload.read(RawBody(TAKEN["records"], _Counted()), 5, None, SCHEMA)
        use(native)
        assert native.needs_body
    native = NativePayload.read(RawBody(TAKEN["records"], _Counted()), 5, None, SCHEMA)
    native.unit(None)  # the X-Unit-ID header: no body needed
    native.rows(SCHEMA, None)
    assert not native.needs_body


def test_a_hinted_body_reached_by_another_schema_is_validated_by_that_schema() -> None:
    from modelport.errors import InvalidInput

    other = Schema.from_dict({"fields": [{"name": n, "type": "number"} for n in ("a", "z")]})
    parse = _Counted()
    native = NativePayload.read(RawBody(TAKEN["records"], parse), 5, None, SCHEMA)
    with pytest.raises(InvalidInput) as info:
        native.rows(other, None)
    fields = {(d["row"], d["field"]) for d in info.value.details}
    assert (0, "z") in fields and (0, "class") in fields
    assert parse.calls == 1


# -- through a real server ---------------------------------------------------------------------


def _post(server: RunningServer, model: str, body: Any) -> Any:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return server.http().post(
        f"/v1/models/{model}/predict", content=raw, headers={"content-type": "application/json"}
    )


BAD_BODIES = {
    "a string value": {"inputs": [{**dict.fromkeys(IRIS_COLUMNS, 1.0), "sepal_width": "wide"}]},
    "a boolean value": {"inputs": [{**dict.fromkeys(IRIS_COLUMNS, 1.0), "petal_width": True}]},
    "a missing field": {"inputs": [dict.fromkeys(IRIS_COLUMNS[:3], 1.0)]},
    "an extra field": {"inputs": [{**dict.fromkeys(IRIS_COLUMNS, 1.0), "colour": 2}]},
    "a misspelt version": {"inputs": [dict.fromkeys(IRIS_COLUMNS, 1.0)], "verison": 1},
    "version 0": {"inputs": [dict.fromkeys(IRIS_COLUMNS, 1.0)], "version": 0},
    "no rows": {"inputs": []},
    "NaN": b'{"inputs": [{"sepal_length": NaN, "sepal_width": 1, "petal_length": 1, "petal_width": 1}]}',
    "a NUL in the alias": b'{"alias": "p\\u0000", "inputs": [{"sepal_length": 1, "sepal_width": 1, "petal_length": 1, "petal_width": 1}]}',
}


def test_answers_are_the_same_before_and_after_a_model_has_a_hint(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    """``warm`` has answered a request (its schema is the reader's hint), ``cold`` has not:
    good and bad bodies get the same answers from both."""
    mp = server.client()
    for name in ("warm", "cold"):
        mp.push(name, iris_pipeline, train_data=iris_frame, alias="production")
    rows = iris_frame[IRIS_COLUMNS].iloc[[0, 60, 120]]
    first = mp.predict("warm", rows.to_dict("records"))
    good = {
        "records": {"inputs": rows.to_dict("records")},
        "columns": {"columns": IRIS_COLUMNS, "data": rows.to_numpy().tolist()},
        "a version": {"inputs": rows.to_dict("records"), "version": 1},
    }
    for body in good.values():
        warm, cold = _post(server, "warm", body), _post(server, "cold", body)
        assert warm.status_code == cold.status_code == 200
        assert warm.json()["predictions"] == cold.json()["predictions"] == first["predictions"]
        assert warm.json()["probabilities"] == cold.json()["probabilities"]
    refused = 0
    for what, body in BAD_BODIES.items():
        warm, cold = _post(server, "warm", body), _post(server, "cold", body)
        assert 400 <= warm.status_code < 500, what
        assert (warm.status_code, warm.json()) == (cold.status_code, cold.json()), what
        refused += 1
    assert refused == len(BAD_BODIES)
    # The ledger holds what was answered, with the inputs as sent.
    record = mp.prediction(first["prediction_ids"][1])
    assert record["inputs"] == {k: float(v) for k, v in rows.iloc[1].items()}
    assert len(mp.predictions("warm")["predictions"]) == 3 * (1 + len(good))  # one per row


def test_a_new_schema_behind_the_alias_is_read_by_its_own_fields(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    from sklearn.linear_model import LogisticRegression

    mp = server.client()
    mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    four = {k: float(v) for k, v in iris_frame[IRIS_COLUMNS].iloc[0].items()}
    three_columns = IRIS_COLUMNS[:3]
    three = {k: four[k] for k in three_columns}
    assert _post(server, "iris", {"inputs": [four]}).json()["version"] == 1  # the hint: v1
    small = LogisticRegression(max_iter=1000).fit(iris_frame[three_columns], iris_frame["species"])
    mp.push("iris", small, train_data=iris_frame[[*three_columns, "species"]], alias="production")
    # v1's reader takes this body, but v2 answers it: read by v2's fields, one too many.
    answer = _post(server, "iris", {"inputs": [four]})
    assert answer.status_code == 422
    assert [d["field"] for d in answer.json()["error"]["details"]] == ["petal_width"]
    assert _post(server, "iris", {"inputs": [three]}).json()["version"] == 2  # the hint: v2
    # v2's reader takes this one, but it asks for v1: read by v1's fields, one missing.
    answer = _post(server, "iris", {"inputs": [three], "version": 1})
    assert answer.status_code == 422
    assert [d["field"] for d in answer.json()["error"]["details"]] == ["petal_width"]
    ok = _post(server, "iris", {"inputs": [four], "version": 1})
    assert ok.status_code == 200 and ok.json()["version"] == 1
    assert ok.json()["predictions"] == list(
        iris_pipeline.predict(iris_frame[IRIS_COLUMNS].iloc[[0]])
    )


def test_a_key_without_predict_is_refused_before_its_body_is_read(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    server.client().push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    reader = server.http(server.key("dashboard", "read"))
    for body in (b"{not json", orjson.dumps({"inputs": [dict.fromkeys(IRIS_COLUMNS, 1.0)]})):
        answer = reader.post(
            "/v1/models/iris/predict", content=body, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 403, answer.text
