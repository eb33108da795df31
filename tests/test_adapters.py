"""Schema adapters: tolerant steps, a safe expression language, every problem with its path."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest

from modelport.errors import InvalidInput
from modelport.inputs.adapters import MAX_REPORTED_PROBLEMS, Adapter, parse_adapter
from modelport.inputs.schema import parse_schema


def _adapter(*steps: dict[str, Any], **doc: Any) -> Adapter:
    return parse_adapter({**doc, "steps": list(steps)})


def _one(adapter: Adapter, record: dict[str, Any]) -> dict[str, Any]:
    out, problems = adapter.apply([record])
    assert problems == []
    return out[0]


def _derive(expr: str, record: dict[str, Any]) -> Any:
    """The derived value of ``out``, or the string "<absent>" when it was not written."""
    out = _one(_adapter({"derive": {"field": "out", "expr": expr}}), record)
    return out.get("out", "<absent>")


def _rejected(doc: Any) -> dict[str, str]:
    """The problems of an invalid adapter document, as {path: reason}."""
    with pytest.raises(InvalidInput) as info:
        parse_adapter(doc)
    assert info.value.details, "InvalidInput without details"
    return {d["field"]: d["reason"] for d in info.value.details}


# -- the example of the docs: old and new payloads both fit version 5 ----------------------------

EXAMPLE: dict[str, Any] = {
    "versions": [4, 5],
    "steps": [
        {"rename": {"from": "postcode", "to": "zip"}},
        {"default": {"field": "channel", "value": "web"}},
        {"cast": {"field": "age", "to": "integer"}},
        {"drop": {"field": "legacy_flag"}},
        {"derive": {"field": "income_k", "expr": "income / 1000"}},
    ],
}

V5 = parse_schema(
    {
        "fields": [
            {"name": "zip", "type": "string"},
            {"name": "channel", "type": "category", "categories": ["web", "app"]},
            {"name": "age", "type": "integer", "minimum": 0},
            {"name": "income_k", "type": "number"},
            {"name": "income", "type": "number", "required": False, "default": 0.0},
        ]
    }
)


def test_old_and_new_payloads_both_fit_the_new_schema() -> None:
    adapter = parse_adapter(EXAMPLE)
    old = {"postcode": "1011", "age": "42", "legacy_flag": True, "income": 52000}
    new = {"zip": "2022", "channel": "app", "age": 30, "income_k": 61.5}
    out, problems = adapter.apply([old, new])
    assert problems == []
    assert out == [
        {"zip": "1011", "channel": "web", "age": 42, "income": 52000, "income_k": 52.0},
        new,
    ]
    assert V5.validate(out) == [["1011", "web", 42, 52.0, 52000.0], ["2022", "app", 30, 61.5, 0.0]]


def test_without_the_adapter_the_old_payload_does_not_fit() -> None:
    with pytest.raises(InvalidInput) as info:
        V5.validate([{"postcode": "1011", "age": "42", "legacy_flag": True, "income": 52000}])
    fields = {d["field"] for d in info.value.details}
    assert {"zip", "channel", "age", "income_k", "postcode", "legacy_flag"} <= fields


def test_versions_limit_where_an_adapter_applies() -> None:
    adapter = parse_adapter(EXAMPLE)
    assert adapter.applies_to(4) and adapter.applies_to(5)
    assert not adapter.applies_to(3) and not adapter.applies_to(6)
    everywhere = _adapter({"drop": {"field": "x"}})
    assert everywhere.versions is None
    assert all(everywhere.applies_to(v) for v in (1, 2, 99))
    assert _adapter({"drop": {"field": "x"}}, versions=None).versions is None


def test_to_dict_round_trips_the_canonical_form() -> None:
    adapter = parse_adapter(EXAMPLE)
    assert adapter.to_dict() == EXAMPLE
    again = parse_adapter(adapter.to_dict())
    assert again == adapter and again.to_dict() == EXAMPLE
    assert parse_adapter({"versions": [5, 4], "steps": EXAMPLE["steps"]}).to_dict() == EXAMPLE
    assert "versions" not in _adapter({"drop": {"field": "x"}}).to_dict()


def test_fields_read_and_written() -> None:
    adapter = parse_adapter(
        {
            "steps": [
                *EXAMPLE["steps"],
                {"derive": {"field": "band", "expr": "if_(age > 60, 'senior', segment)"}},
            ]
        }
    )
    assert adapter.fields_read() == {"postcode", "age", "income", "segment"}
    assert adapter.fields_written() == {
        "postcode",
        "zip",
        "channel",
        "age",
        "legacy_flag",
        "income_k",
        "band",
    }


def test_inputs_are_never_mutated_and_non_objects_pass_through() -> None:
    adapter = parse_adapter(EXAMPLE)
    nested = {"postcode": "1011", "age": "42", "tags": ["a"], "income": 1}
    records: list[Any] = [nested, "not an object", None, {"age": "x"}]
    before = copy.deepcopy(records)
    adapted, problems = adapter.apply(records)
    out: list[Any] = adapted
    assert records == before
    assert out[0] is not nested and out[0]["zip"] == "1011"
    assert out[1] == "not an object" and out[2] is None
    # a problem names the row as sent, counting the records passed through
    assert problems == [
        {"row": 3, "field": "age", "reason": "cannot cast to integer: 'x' is not a number"}
    ]


def test_changed_tells_whether_a_record_needed_the_adapter() -> None:
    adapter = parse_adapter(EXAMPLE)
    assert adapter.changed({"postcode": "1011", "age": 1, "channel": "web"})
    assert not adapter.changed({"zip": "1011", "age": 1, "channel": "web"})
    assert adapter.changed({"zip": "1011", "age": "1", "channel": "web"})  # the cast
    assert adapter.changed({"zip": "1011", "age": "one", "channel": "web"})  # a problem


# -- each step, including the tolerant cases ------------------------------------------------------


def test_rename_moves_a_field_and_keeps_the_new_one_when_both_are_sent() -> None:
    rename = _adapter({"rename": {"from": "postcode", "to": "zip"}})
    assert _one(rename, {"postcode": "1", "a": 1}) == {"a": 1, "zip": "1"}
    assert _one(rename, {"zip": "2"}) == {"zip": "2"}
    assert _one(rename, {"postcode": "1", "zip": "2"}) == {"zip": "2"}
    assert _one(rename, {"postcode": "1", "zip": None}) == {"zip": "1"}
    assert _one(rename, {"postcode": None}) == {"zip": None}
    assert _one(rename, {}) == {}


def test_default_fills_missing_and_null_but_keeps_a_value() -> None:
    default = _adapter({"default": {"field": "channel", "value": "web"}})
    assert _one(default, {}) == {"channel": "web"}
    assert _one(default, {"channel": None}) == {"channel": "web"}
    assert _one(default, {"channel": "app"}) == {"channel": "app"}
    assert _one(default, {"channel": ""}) == {"channel": ""}
    assert _one(_adapter({"default": {"field": "n", "value": 0}}), {}) == {"n": 0}
    assert _one(_adapter({"default": {"field": "b", "value": False}}), {}) == {"b": False}


@pytest.mark.parametrize(
    ("to", "value", "expected"),
    [
        ("integer", "42", 42),
        ("integer", " 7 ", 7),
        ("integer", "42.0", 42),
        ("integer", 42.0, 42),
        ("integer", True, 1),
        ("integer", 5, 5),
        ("number", "2.5", 2.5),
        ("number", 3, 3.0),
        ("number", False, 0.0),
        ("string", 1011, "1011"),
        ("string", 1011.0, "1011"),
        ("string", 2.5, "2.5"),
        ("string", True, "true"),
        ("string", "x", "x"),
        ("boolean", "yes", True),
        ("boolean", " False ", False),
        ("boolean", "1", True),
        ("boolean", 0, False),
        ("boolean", 1.0, True),
        ("boolean", True, True),
    ],
)
def test_cast_converts_values(to: str, value: Any, expected: Any) -> None:
    out = _one(_adapter({"cast": {"field": "v", "to": to}}), {"v": value})
    assert out == {"v": expected} and type(out["v"]) is type(expected)


def test_cast_leaves_missing_and_null_alone() -> None:
    cast = _adapter({"cast": {"field": "age", "to": "integer"}})
    assert _one(cast, {}) == {}
    assert _one(cast, {"age": None}) == {"age": None}


@pytest.mark.parametrize(
    ("to", "value", "reason"),
    [
        ("integer", "abc", "'abc' is not a number"),
        ("integer", 3.5, "3.5 is not a whole number"),
        ("integer", "3.5", "'3.5' is not a whole number"),
        ("integer", [1], "got array"),
        ("number", "nan", "'nan' is not a finite number"),
        ("number", "1e999", "'1e999' is not a finite number"),
        ("number", {"a": 1}, "got object"),
        ("string", [1, 2], "got array"),
        ("boolean", "maybe", "'maybe' is not a boolean"),
        ("boolean", 2, "2 is not a boolean"),
    ],
)
def test_a_value_that_cannot_be_cast_is_a_row_problem(to: str, value: Any, reason: str) -> None:
    cast = _adapter({"cast": {"field": "v", "to": to}})
    out, problems = cast.apply([{"v": 1 if to != "boolean" else True}, {"v": value}])
    assert problems == [{"row": 1, "field": "v", "reason": f"cannot cast to {to}: {reason}"}]
    assert out[1] == {"v": value}  # left as it was: validation sees what was sent


def test_drop_removes_a_field_when_present() -> None:
    drop = _adapter({"drop": {"field": "legacy"}})
    assert _one(drop, {"legacy": 1, "a": 2}) == {"a": 2}
    assert _one(drop, {"legacy": None}) == {}
    assert _one(drop, {"a": 2}) == {"a": 2}


def test_steps_apply_in_order() -> None:
    adapter = _adapter(
        {"rename": {"from": "years", "to": "age"}},
        {"cast": {"field": "age", "to": "number"}},
        {"derive": {"field": "months", "expr": "age * 12"}},
        {"drop": {"field": "age"}},
    )
    assert _one(adapter, {"years": "2"}) == {"months": 24.0}


# -- derive -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("income / 1000", 52.5),
        ("a + b * 2 - 1", 6),
        ("(a + b) * 2", 8),
        ("b // 2 + b % 2", 2),
        ("a ** 2 + 2 ** -1", 1.5),
        ("-a + +b", 2),
        ("abs(a - b)", 2),
        ("min(a, b, 0.5)", 0.5),
        ("max(a, b)", 3),
        ("round(income / 7, 2)", 7500.0),
        ("round(2.5)", 2),
        ("floor(2.7) + ceil(2.1)", 5),
        ("sqrt(16)", 4.0),
        ("round(log(exp(2)), 6)", 2.0),
        ("round(log(8, 2), 6)", 3.0),
        ("int(2.9) + int('3') + int('4.5')", 9),
        ("float('2.5') + float(a)", 3.5),
        ("lower(name) + '-' + upper(strip(city))", "ada-LONDON"),
        ("len(name)", 3),
        ("len(tags)", 2),
        ("str(a) + str(2.5) + str(true)", "12.5true"),
        ("'-' * 3", "---"),
        ("name == 'Ada' and a < b", True),
        ("0 < a <= 1 < b", True),
        ("0 < a < 1", False),
        ("not (a > b)", True),
        ("a > 5 or name", "Ada"),
        ("'big' if income > 10000 else 'small'", "big"),
        ("if_(b > 5, 'big', 'small')", "small"),
        ("a != b", True),
        ("true", True),
        ("null", None),
        ("missing == null", "<absent>"),
    ],
)
def test_derive_computes_expressions(expr: str, expected: Any) -> None:
    record = {
        "a": 1,
        "b": 3,
        "income": 52500,
        "name": "Ada",
        "city": " London ",
        "tags": ["x", "y"],
    }
    value = _derive(expr, record)
    assert value == expected and type(value) is type(expected)


def test_derive_needs_every_field_it_reaches() -> None:
    assert _derive("income / 1000", {}) == "<absent>"
    assert _derive("income / 1000", {"income": None}) == "<absent>"
    assert _derive("a + b", {"a": 1}) == "<absent>"
    # a branch not taken needs no value
    assert _derive("a if flag else b", {"flag": True, "a": 1}) == 1
    assert _derive("if_(flag, a, b)", {"flag": False, "a": 1}) == "<absent>"
    assert _derive("flag and a", {"flag": False}) is False


def test_derive_keeps_an_existing_value_when_it_cannot_compute() -> None:
    derive = _adapter({"derive": {"field": "income_k", "expr": "income / 1000"}})
    assert _one(derive, {"income_k": 61.5}) == {"income_k": 61.5}
    assert _one(derive, {"income": 1000, "income_k": 61.5}) == {"income": 1000, "income_k": 1.0}


def test_derive_rewrites_a_field_in_place() -> None:
    derive = _adapter({"derive": {"field": "country", "expr": "upper(strip(country))"}})
    assert _one(derive, {"country": " nl"}) == {"country": "NL"}


def test_coalesce_takes_the_first_value() -> None:
    assert _derive("coalesce(nick, name, 'anon')", {"name": "Ada"}) == "Ada"
    assert _derive("coalesce(nick, name, 'anon')", {"nick": None}) == "anon"
    assert _derive("coalesce(nick, name)", {"nick": "A", "name": "Ada"}) == "A"
    assert _derive("coalesce(income / 1000, 0)", {}) == 0  # an argument that needs a field
    assert _derive("coalesce(nick, name)", {}) == "<absent>"
    assert _derive("coalesce(flag, true)", {"flag": False}) is False


@pytest.mark.parametrize(
    ("expr", "record", "reason"),
    [
        ("a / b", {"a": 1, "b": 0}, "division by zero"),
        ("a // b", {"a": 1.5, "b": 0}, "division by zero"),
        ("a % b", {"a": 1, "b": 0}, "division by zero"),
        (
            "a + b",
            {"a": 1, "b": "2"},
            "'+' needs two numbers or two strings, got number and string",
        ),
        ("a - b", {"a": True, "b": 1}, "'-' needs numbers, got boolean and number"),
        ("a < b", {"a": 1, "b": "x"}, "cannot compare number with string using '<'"),
        ("sqrt(a)", {"a": -1}, "math domain error"),
        ("log(a)", {"a": 0}, "math domain error"),
        ("exp(a)", {"a": 1000}, "the result is too large"),
        ("a * b", {"a": 1e300, "b": 1e300}, "the result is not finite"),
        ("a ** 999", {"a": 2**20}, "the integer would exceed 4096 bits"),
        ("a ** b", {"a": 10, "b": 10**6}, "the integer would exceed 4096 bits"),
        ("a * b", {"a": 2**3000, "b": 2**3000}, "the integer would exceed 4096 bits"),
        ("a * b", {"a": "ab", "b": 10**6}, "the string would exceed 100000 characters"),
        ("a + a", {"a": "x" * 60_000}, "the string would exceed 100000 characters"),
        ("lower(a)", {"a": 1}, "lower() needs a string, got number"),
        ("abs(a)", {"a": "1"}, "abs() needs a number, got string"),
        (
            "min(a, b)",
            {"a": 1, "b": "x"},
            "min() needs all numbers or all strings, got number, string",
        ),
        (
            "round(a, b)",
            {"a": 1.5, "b": 10**6},
            "round() needs a whole number of digits between -100 and 100",
        ),
        ("int(a)", {"a": "x"}, "int(): 'x' is not a number"),
        ("len(a)", {"a": 5}, "len() needs a string, array or object, got number"),
        ("-a", {"a": "x"}, "unary '-' needs a number, got string"),
    ],
)
def test_run_time_failures_are_row_problems(expr: str, record: dict[str, Any], reason: str) -> None:
    derive = _adapter({"derive": {"field": "out", "expr": expr}})
    out, problems = derive.apply([{}, record])  # row 0 lacks the fields: left as it was
    assert problems == [{"row": 1, "field": "out", "reason": f"cannot derive: {reason}"}]
    assert out == [{}, record]


def test_problems_come_in_row_order_and_are_capped() -> None:
    adapter = _adapter(
        {"cast": {"field": "a", "to": "integer"}},
        {"derive": {"field": "c", "expr": "1 / b"}},
    )
    _, problems = adapter.apply([{"a": "x", "b": 0}, {"a": 1, "b": 0}])
    assert [(p["row"], p["field"]) for p in problems] == [(0, "a"), (0, "c"), (1, "c")]
    _, problems = adapter.apply([{"a": "x"}] * (MAX_REPORTED_PROBLEMS + 50))
    assert len(problems) == MAX_REPORTED_PROBLEMS


def test_a_field_named_like_python_internals_is_only_a_field() -> None:
    assert _derive("__class__", {"__class__": "plain"}) == "plain"
    assert _derive("__builtins__", {}) == "<absent>"


# -- rejected expressions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("().__class__", "not allowed: attribute access"),
        ("a.__class__", "not allowed: attribute access (at column 1)"),
        ("name.upper()", "not allowed: attribute access"),
        ("a[0]", "not allowed: subscripts"),
        ("__import__('os')", "unknown function '__import__' (at column 1); the functions are abs,"),
        ("open('/etc/passwd')", "unknown function 'open'"),
        ("eval('1')", "unknown function 'eval'"),
        ("(lambda: 1)()", "not allowed: lambda (at column 2)"),
        ("[x for x in a]", "not allowed: comprehensions"),
        ("sum(x for x in a)", "unknown function 'sum'"),
        ("abs((x for x in a))", "not allowed: comprehensions"),
        ("round(a, ndigits=2)", "round(): keyword arguments are not allowed"),
        ("abs(*a)", "not allowed: starred arguments"),
        ("f'{a}'", "not allowed: f-strings"),
        ("(b := 1)", "not allowed: assignment expressions (:=)"),
        ("{'a': 1}", "not allowed: objects"),
        ("[1, 2]", "not allowed: lists"),
        ("a & 1", "the operator '&' is not allowed"),
        ("~a", "the operator '~' is not allowed"),
        ("a is null", "the comparison 'is' is not allowed"),
        ("'a' in name", "the comparison 'in' is not allowed"),
        ("b'x'", "bytes constants are not allowed"),
        ("1j", "complex constants are not allowed"),
        ("1e999", "the number is too large"),
        ("2 ** 100000", "the exponent 100000 is above 1000"),
        ("9 ** 9 ** 9", "the exponent 387420489 is above 1000"),
        ("a ** 10 ** 6", "the exponent 1000000 is above 1000"),
        ("2 ** 999 * 2 ** 999 * 2 ** 999 * 2 ** 999 * 2 ** 999", "exceed 4096 bits"),
        ("'x' * 1000 * 1000", "the string would exceed 100000 characters"),
        ("1 / 0", "1 / 0 fails: division by zero"),
        ("a + 1 / 0", "1 / 0 fails: division by zero (at column 5)"),
        ("a" + " + a" * 200, "801 characters exceed the limit of 500"),
        ("-" * 40 + "a", "nested too deeply (at most 32 levels)"),
        ("abs(" * 40 + "a" + ")" * 40, "nested too deeply"),
        ("a +", "not a valid expression: invalid syntax"),
        ("import os", "not a valid expression: invalid syntax"),
        ("a; b", "not a valid expression"),
        ("a\x00", "not a valid expression"),
        ("   ", "the expression is empty"),
        ("if_(a, b)", "if_() takes 3 arguments, got 2"),
        ("round(a, 1, 2)", "round() takes 1 to 2 arguments, got 3"),
        ("min(a)", "min() takes 2+ arguments, got 1"),
        ("coalesce()", "coalesce() takes 1+ arguments, got 0"),
        ("lower('A', 'B')", "lower() takes 1 arguments, got 2"),
        ("a(1)", "unknown function 'a'"),
        ("abs(a)(1)", "only named functions can be called"),
        ("lower(1)", "lower(1) fails: lower() needs a string, got number"),
    ],
)
def test_unsafe_or_invalid_expressions_are_rejected_with_the_step_path(
    expr: str, reason: str
) -> None:
    problems = _rejected(
        {"steps": [{"drop": {"field": "x"}}, {"derive": {"field": "out", "expr": expr}}]}
    )
    assert list(problems) == ["adapter.steps[1].derive.expr"]
    assert reason in problems["adapter.steps[1].derive.expr"]


@pytest.mark.parametrize("expr", ["1if a else 2", "a if b else 1else", "x.5or 1", "'\\d' + a"])
def test_what_python_only_warns_about_is_rejected_without_a_warning(expr: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problems = _rejected({"steps": [{"derive": {"field": "out", "expr": expr}}]})
    assert caught == []
    reason = problems["adapter.steps[0].derive.expr"]
    assert "put a space after" in reason or reason == "backslashes are not allowed"


def test_the_message_names_the_path_and_the_construct() -> None:
    with pytest.raises(InvalidInput) as info:
        _adapter({"derive": {"field": "x", "expr": "().__class__.__bases__[0]"}})
    assert str(info.value).startswith("invalid adapter: adapter.steps[0].derive.expr: not allowed")


def test_positions_count_from_the_expression_as_written() -> None:
    problems = _rejected({"steps": [{"derive": {"field": "x", "expr": "  a + b.c"}}]})
    assert problems == {
        "adapter.steps[0].derive.expr": "not allowed: attribute access (at column 7)"
    }
    problems = _rejected({"steps": [{"derive": {"field": "x", "expr": "(a +\n b.c)"}}]})
    assert problems["adapter.steps[0].derive.expr"].endswith("(at line 2, column 2)")


# -- rejected documents: every problem with its path -----------------------------------------------


def test_every_problem_of_a_document_is_listed_with_its_path() -> None:
    problems = _rejected(
        {
            "versions": [4, "5", 4, 0],
            "steps": [
                {"rename": {"from": "a", "to": "a"}},
                {"rename": {"from": "a", "into": "b"}},
                {"default": {"field": "c", "value": None}},
                {"default": {"field": "c", "value": [1]}},
                {"cast": {"field": "d", "to": "date"}},
                {"cast": {"field": "", "to": "integer"}},
                {"drop": "e"},
                {"derive": {"field": "f", "expr": 5}},
                {"explode": {"field": "g"}},
                {"drop": {"field": "h"}, "derive": {"field": "h", "expr": "1"}},
                {"drop": {"field": "i"}, "note": "why"},
                {},
                "drop",
            ],
            "comment": "hi",
        }
    )
    assert problems == {
        "adapter.comment": "unexpected key (versions, steps)",
        "adapter.versions[1]": "expected a version number (a positive integer)",
        "adapter.versions[2]": "duplicate version 4",
        "adapter.versions[3]": "expected a version number (a positive integer)",
        "adapter.steps[0].rename": "'from' and 'to' are the same field",
        "adapter.steps[1].rename.into": "unexpected key (from, to)",
        "adapter.steps[1].rename.to": "expected a non-empty field name",
        "adapter.steps[2].default.value": "expected a string, number or boolean",
        "adapter.steps[3].default.value": "expected a string, number or boolean, got array",
        "adapter.steps[4].cast.to": "expected one of number, integer, string, boolean",
        "adapter.steps[5].cast.field": "expected a non-empty field name",
        "adapter.steps[6].drop": "expected an object with field",
        "adapter.steps[7].derive.expr": "expected an expression (a string)",
        "adapter.steps[8].explode": (
            "unknown step kind (expected one of rename, default, cast, drop, derive)"
        ),
        "adapter.steps[9]": "expected exactly one of rename, default, cast, drop, derive",
        "adapter.steps[10].note": (
            "unknown step kind (expected one of rename, default, cast, drop, derive)"
        ),
        "adapter.steps[11]": "expected exactly one of rename, default, cast, drop, derive",
        "adapter.steps[12]": ("expected an object with one of rename, default, cast, drop, derive"),
    }


@pytest.mark.parametrize(
    ("doc", "path", "reason"),
    [
        (None, "adapter", "expected an object"),
        ([{"drop": {"field": "x"}}], "adapter", "expected an object"),
        ({}, "adapter.steps", "expected a non-empty list of steps"),
        ({"steps": []}, "adapter.steps", "expected a non-empty list of steps"),
        ({"steps": {"drop": {"field": "x"}}}, "adapter.steps", "expected a non-empty list"),
        (
            {"steps": [{"drop": {"field": "x"}}] * 101},
            "adapter.steps",
            "101 steps exceed the limit of 100",
        ),
        ({"versions": [], "steps": [{"drop": {"field": "x"}}]}, "adapter.versions", "non-empty"),
        ({"versions": 5, "steps": [{"drop": {"field": "x"}}]}, "adapter.versions", "non-empty"),
        (
            {"versions": [True], "steps": [{"drop": {"field": "x"}}]},
            "adapter.versions[0]",
            "version",
        ),
        (
            {"versions": [[4]], "steps": [{"drop": {"field": "x"}}]},
            "adapter.versions[0]",
            "version",
        ),
    ],
)
def test_document_shape_problems(doc: Any, path: str, reason: str) -> None:
    problems = _rejected(doc)
    assert path in problems and reason in problems[path]


def test_a_step_with_unknown_keys_still_reports_its_other_problems() -> None:
    problems = _rejected(
        {"steps": [{"derive": {"field": "", "expr": "a.b", "why": 1}}]},
    )
    assert problems == {
        "adapter.steps[0].derive.why": "unexpected key (field, expr)",
        "adapter.steps[0].derive.field": "expected a non-empty field name",
        "adapter.steps[0].derive.expr": "not allowed: attribute access (at column 1)",
    }
