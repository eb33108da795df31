"""The JSON every route reads: the nesting limit and the NUL check, exactly at their edges,
through each of the check's paths (plain text, brackets inside strings, escapes)."""

from __future__ import annotations

import orjson
import pytest

from modelport.api.payload import loads
from modelport.errors import InvalidRequest

LIMIT = 8


def _nested(depth: int, inner: bytes = b"1") -> bytes:
    """``depth`` levels, alternating objects and arrays, around ``inner``."""
    text = inner
    for level in range(depth):
        text = b'{"k": ' + text + b"}" if level % 2 else b"[" + text + b"]"
    return text


@pytest.mark.parametrize(
    "inner",
    [
        b"1",
        b'"plain"',
        b'"a string with [[[[ {{{{ brackets"',  # brackets in strings are not nesting
        b'"an escape \\" and \\\\ here"',  # escapes: the parsed document is walked
    ],
)
def test_the_limit_is_exact_on_every_path(inner: bytes) -> None:
    # Padded with many shallow brackets, so that counting brackets alone cannot decide.
    pad = b", ".join([b"[]"] * (LIMIT + 5))
    at = b'{"pad": [' + pad + b'], "v": ' + _nested(LIMIT - 1, inner) + b"}"
    over = b'{"pad": [' + pad + b'], "v": ' + _nested(LIMIT, inner) + b"}"
    assert loads(at, LIMIT) == orjson.loads(at)
    with pytest.raises(InvalidRequest, match=rf"deeper than max_json_depth \({LIMIT} levels\)"):
        loads(over, LIMIT)


def test_short_bodies_and_few_brackets_pass_without_a_closer_look() -> None:
    assert loads(b"[[1]]", LIMIT) == [[1]]
    wide = orjson.dumps({"inputs": [[float(i)] * 20 for i in range(100)]})
    assert loads(wide, 3) == orjson.loads(wide)
    flat = orjson.dumps({"data": list(range(1000))})
    assert loads(flat, 2) == orjson.loads(flat)
    with pytest.raises(InvalidRequest, match="deeper"):
        loads(orjson.dumps({"inputs": [[1.0]]}), 2)


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "a\\u0000b"}',
        b'{"a\\u0000": 1}',
        b'["\\"", "\\u0000"]',
    ],
)
def test_a_nul_character_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidRequest, match="NUL character") as caught:
        loads(body, LIMIT)
    assert caught.value.details == [{"field": "body", "reason": str(caught.value)}]


def test_other_escapes_are_not_a_nul() -> None:
    assert loads(b'{"name": "tab\\there \\u0041"}', LIMIT) == {"name": "tab\there A"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"", "is empty"), (b"{", "not valid JSON"), (b"[NaN]", "not valid JSON")],
)
def test_bodies_that_are_not_json(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        loads(body, LIMIT)
