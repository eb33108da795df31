"""Input schemas: what a model version accepts and how rows are checked against it.

A schema is an ordered list of fields, each with a type (number, integer, string, boolean,
category), required or optional with a default, and for numbers an inclusive range. Validation
checks every row before anything reaches the model and reports *every* problem at once, each with
its row index, field and reason. Checkers are compiled once per schema, not per request.
A predict body's forms are read in :mod:`.rows`; a schema is inferred in :mod:`.inference`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any, Literal

import numpy as np
import orjson

from ..errors import InvalidInput
from .table import Table
from .typed import BodyReader

FieldType = Literal["number", "integer", "string", "boolean", "category"]
FIELD_TYPES: tuple[str, ...] = ("number", "integer", "string", "boolean", "category")
MAX_REPORTED_PROBLEMS = 100

_Checker = Callable[[Any], "tuple[bool, Any, str]"]


@dataclass(frozen=True)
class Field:
    """One input field of a schema."""

    name: str
    type: FieldType
    required: bool = True
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[Any, ...] | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        if not self.required:
            out["default"] = self.default
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.categories is not None:
            out["categories"] = list(self.categories)
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class Schema:
    """An ordered list of fields, with validators compiled once."""

    fields: tuple[Field, ...]
    _checkers: tuple[_Checker, ...] = field(init=False, repr=False, compare=False)
    _index: dict[str, int] = field(init=False, repr=False, compare=False)
    _fast: _FastPlan = field(init=False, repr=False, compare=False)
    _names: list[str] = field(init=False, repr=False, compare=False)
    _reader: list[BodyReader | None] = field(init=False, repr=False, compare=False)
    names_json: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_names", [f.name for f in self.fields])
        object.__setattr__(self, "names_json", orjson.dumps(self._names).decode())
        object.__setattr__(self, "_checkers", tuple(_compile(f) for f in self.fields))
        object.__setattr__(self, "_index", {f.name: i for i, f in enumerate(self.fields)})
        object.__setattr__(self, "_fast", _FastPlan(self.fields))
        object.__setattr__(self, "_reader", [])

    @property
    def names(self) -> list[str]:
        """The field names in order (the same list every time: do not change it)."""
        return self._names

    def to_dict(self) -> dict[str, Any]:
        return {"fields": [f.to_dict() for f in self.fields]}

    def body_reader(self) -> BodyReader | None:
        """The typed reader of predict bodies (:mod:`.typed`) when every field is a number,
        made on first use; None otherwise."""
        if not self._reader:
            usable = self._fast.all_number and bool(self.fields)
            self._reader.append(BodyReader(self) if usable else None)
        return self._reader[0]

    def fits(self, matrix: np.ndarray) -> bool:
        """Whether a float matrix of this all-number schema's rows is finite and in range."""
        return self._fast.check_matrix(matrix)

    @classmethod
    def from_dict(cls, data: Any) -> Schema:
        """Parse and check a schema document; problems are reported as ``InvalidInput``."""
        return parse_schema(data)

    # -- validation ---------------------------------------------------------------------------

    def validate(self, records: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        """Check records and return them as rows of values in field order.

        Raises :class:`InvalidInput` listing every offending field (up to
        ``MAX_REPORTED_PROBLEMS``) with its row index and reason.
        """
        problems: list[dict[str, Any]] = []
        rows: list[list[Any]] = []
        for i, record in enumerate(records):
            rows.append(self._check_record(i, record, problems))
            if len(problems) >= MAX_REPORTED_PROBLEMS:
                break
        if problems:
            raise invalid_rows(problems)
        return rows

    def partition(
        self, records: Sequence[Mapping[str, Any]]
    ) -> tuple[list[list[Any]], list[int], dict[int, list[dict[str, Any]]]]:
        """Split records into the rows that fit and the problems of those that do not.

        Returns the good rows (values in field order), their indexes in ``records``, and for
        each bad record's index every problem it has (field and reason). Nothing is raised:
        batch scoring scores the good rows and writes the bad ones aside.
        """
        good: list[list[Any]] = []
        kept: list[int] = []
        bad: dict[int, list[dict[str, Any]]] = {}
        for i, record in enumerate(records):
            problems: list[dict[str, Any]] = []
            row = self._check_record(i, record, problems)
            if problems:
                bad[i] = problems
            else:
                good.append(row)
                kept.append(i)
        return good, kept, bad

    def _check_record(self, i: int, record: Any, problems: list[dict[str, Any]]) -> list[Any]:
        """One record's values in field order; its problems are appended to ``problems``."""
        fields = self.fields
        nfields = len(fields)
        row: list[Any] = [None] * nfields
        if not isinstance(record, Mapping):
            problems.append({"row": i, "field": None, "reason": "each input must be a JSON object"})
            return row
        checkers = self._checkers
        for j in range(nfields):
            f = fields[j]
            value = record.get(f.name, _MISSING)
            if value is _MISSING or value is None:
                if f.required:
                    reason = "missing" if value is _MISSING else "null is not allowed"
                    problems.append({"row": i, "field": f.name, "reason": reason})
                else:
                    row[j] = f.default
                continue
            ok, coerced, reason = checkers[j](value)
            if ok:
                row[j] = coerced
            else:
                problems.append({"row": i, "field": f.name, "reason": reason})
        index = self._index
        if len(record) > nfields or any(k not in index for k in record):
            for key in record:
                if key not in index:
                    problems.append({"row": i, "field": key, "reason": "unexpected field"})
        return row

    def table(self, records: Sequence[Mapping[str, Any]]) -> Table:
        """Check records and return them as a :class:`~modelport.inputs.table.Table`.

        Well-formed input (every field present, of its type, in range) takes a vectorized path
        with no per-value Python work beyond one type scan; anything else goes through
        :meth:`validate`, which is authoritative and reports every problem.
        """
        fast = self._fast
        k = len(self.fields)
        try:
            if set(map(len, records)) == {k}:
                # k keys each and every field name present: nothing missing, nothing extra
                table = self._table_from_rows(list(map(fast.getter, records)))
                if table is not None:
                    return table
        except (KeyError, TypeError, IndexError):
            pass
        return self._checked_table(records)

    def table_from_rows(self, rows: Sequence[Sequence[Any]], *, shaped: bool = False) -> Table:
        """Like :meth:`table`, for rows of values already in field order (lists or tuples).

        ``shaped`` says the caller has checked that every row is a list of the right length.
        """
        k = len(self.fields)
        if shaped or (set(map(type, rows)) <= {list, tuple} and set(map(len, rows)) == {k}):
            table = self._table_from_rows(rows)
            if table is not None:
                return table
        names = self.names
        records: list[Any] = [
            dict(zip(names, r, strict=True)) if isinstance(r, list | tuple) and len(r) == k else r
            for r in rows
        ]
        return self._checked_table(records)

    def table_from_matrix(self, matrix: np.ndarray) -> Table:
        """Like :meth:`table`, for a numeric ``n x fields`` array (decoded binary tensors)."""
        fast = self._fast
        if fast.all_number and matrix.dtype.kind in "fiu":
            m = np.ascontiguousarray(matrix, dtype="float64")
            if fast.check_matrix(m):
                return Table(self, matrix=m)
        return self.table_from_rows(matrix.tolist())

    def _table_from_rows(self, rows: Sequence[Sequence[Any]]) -> Table | None:
        """The fast path; None when anything needs a closer look."""
        fast = self._fast
        if not rows:
            return None
        if fast.all_number:
            if not set(map(type, chain.from_iterable(rows))) <= _NUMBER_TYPES:
                return None
            try:
                m = np.array(rows, dtype="float64")
            except (OverflowError, ValueError):
                return None
            return Table(self, matrix=m) if fast.check_matrix(m) else None
        columns = []
        for build, values in zip(fast.columns, zip(*rows, strict=True), strict=True):
            col = build(values)
            if col is None:
                return None
            columns.append(col)
        return Table(self, columns=columns)

    def _checked_table(self, records: Sequence[Mapping[str, Any]]) -> Table:
        rows = self.validate(records)
        if self._fast.all_number:
            table = Table(self, matrix=np.array(rows, dtype="float64"))
        else:
            cols = list(zip(*rows, strict=True))
            table = Table(
                self, columns=[_typed_column(f, c) for f, c in zip(self.fields, cols, strict=True)]
            )
        # What was sent differs from the rows (defaults filled in, values coerced): keep it.
        table.raw = orjson.dumps(list(records)).decode()
        return table

    def example_record(self) -> dict[str, Any]:
        """A record that fits the schema, for the smoke prediction at push time."""
        return {f.name: _example_value(f) for f in self.fields}


_MISSING = object()
_NUMBER_TYPES = frozenset({float, int})
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class _FastPlan:
    """What :meth:`Schema.table` needs, worked out once per schema."""

    def __init__(self, fields: tuple[Field, ...]) -> None:
        names = [f.name for f in fields]
        if len(names) == 1:
            only = names[0]
            self.getter: Callable[[Any], tuple[Any, ...]] = lambda r: (r[only],)
        else:
            self.getter = itemgetter(*names)
        self.all_number = all(f.type == "number" for f in fields)
        ranged = any(f.minimum is not None or f.maximum is not None for f in fields)
        self.lo = (
            np.array([-np.inf if f.minimum is None else f.minimum for f in fields])
            if ranged
            else None
        )
        self.hi = (
            np.array([np.inf if f.maximum is None else f.maximum for f in fields])
            if ranged
            else None
        )
        self.columns = [_fast_column(f) for f in fields]

    def check_matrix(self, m: np.ndarray) -> bool:
        if not np.isfinite(m).all():
            return False
        return self.lo is None or not ((m < self.lo).any() or (m > self.hi).any())


def _fast_column(f: Field) -> Callable[[tuple[Any, ...]], np.ndarray | None]:
    """A checker-and-builder for one field's values that gives up (None) on anything unusual."""
    lo = -math.inf if f.minimum is None else f.minimum
    hi = math.inf if f.maximum is None else f.maximum
    if f.type in ("number", "integer"):
        allowed = _NUMBER_TYPES if f.type == "number" else frozenset({int})
        dtype = "float64" if f.type == "number" else "int64"

        def numbers(values: tuple[Any, ...]) -> np.ndarray | None:
            if not set(map(type, values)) <= allowed:
                return None
            try:
                col = np.array(values, dtype=dtype)
            except (OverflowError, ValueError):
                return None
            if dtype == "float64" and not np.isfinite(col).all():
                return None
            if (lo > -math.inf and (col < lo).any()) or (hi < math.inf and (col > hi).any()):
                return None
            return col

        return numbers
    if f.type == "boolean":

        def booleans(values: tuple[Any, ...]) -> np.ndarray | None:
            return np.array(values, dtype=bool) if set(map(type, values)) == {bool} else None

        return booleans
    if f.type == "string":

        def strings(values: tuple[Any, ...]) -> np.ndarray | None:
            return _object_array(values) if set(map(type, values)) == {str} else None

        return strings
    allowed_values = frozenset(f.categories or ())
    allowed_types = frozenset(type(c) for c in f.categories or ())

    def categories(values: tuple[Any, ...]) -> np.ndarray | None:
        if set(map(type, values)) <= allowed_types and set(values) <= allowed_values:
            return _object_array(values)
        return None

    return categories


def _object_array(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _typed_column(f: Field, values: Sequence[Any]) -> np.ndarray:
    """A validated field's values as an array of the field's dtype (None allowed)."""
    has_none = None in values
    if f.type == "number" or (f.type == "integer" and has_none):
        return np.array(values, dtype="float64")  # None becomes NaN
    if f.type == "integer":
        return np.array(values, dtype="int64")
    if f.type == "boolean" and not has_none:
        return np.array(values, dtype=bool)
    return _object_array(values)


def invalid_rows(problems: list[dict[str, Any]]) -> InvalidInput:
    shown = problems[:MAX_REPORTED_PROBLEMS]
    first = shown[0]
    where = f"row {first['row']}" + (f", field {first['field']!r}" if first["field"] else "")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return InvalidInput(
        f"input does not fit the schema: {where}: {first['reason']}{more}", details=shown
    )


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _compile(f: Field) -> _Checker:
    lo, hi = f.minimum, f.maximum

    def in_range(x: float) -> str:
        if lo is not None and x < lo:
            return f"out of range: {x} is below the minimum {lo}"
        if hi is not None and x > hi:
            return f"out of range: {x} is above the maximum {hi}"
        return ""

    if f.type == "number":

        def check_number(v: Any) -> tuple[bool, Any, str]:
            if isinstance(v, bool) or not isinstance(v, int | float):
                return False, None, f"expected a number, got {_type_name(v)}"
            x = float(v)
            if not math.isfinite(x):
                return False, None, "expected a finite number"
            problem = in_range(x)
            return (not problem), x, problem

        return check_number
    if f.type == "integer":

        def check_integer(v: Any) -> tuple[bool, Any, str]:
            if isinstance(v, bool) or not isinstance(v, int | float):
                return False, None, f"expected an integer, got {_type_name(v)}"
            if isinstance(v, float):
                if not v.is_integer():
                    return False, None, f"expected an integer, got {v}"
                v = int(v)
            if not _INT64_MIN <= v <= _INT64_MAX:
                return False, None, f"out of range: {v} does not fit a 64-bit integer"
            problem = in_range(v)
            return (not problem), v, problem

        return check_integer
    if f.type == "boolean":

        def check_boolean(v: Any) -> tuple[bool, Any, str]:
            if isinstance(v, bool):
                return True, v, ""
            return False, None, f"expected a boolean, got {_type_name(v)}"

        return check_boolean
    if f.type == "string":

        def check_string(v: Any) -> tuple[bool, Any, str]:
            if isinstance(v, str):
                return True, v, ""
            return False, None, f"expected a string, got {_type_name(v)}"

        return check_string
    allowed = set(f.categories or ())
    shown = ", ".join(repr(c) for c in list(f.categories or ())[:10])

    def check_category(v: Any) -> tuple[bool, Any, str]:
        if isinstance(v, list | dict):
            return False, None, f"expected one of {shown}, got {_type_name(v)}"
        if v in allowed and not (isinstance(v, bool) and not any(c is v for c in allowed)):
            return True, v, ""
        return False, None, f"unknown category {v!r}; allowed: {shown}"

    return check_category


def _example_value(f: Field) -> Any:
    if not f.required:
        return f.default
    if f.type == "category":
        return (f.categories or (None,))[0]
    if f.type == "boolean":
        return False
    if f.type == "string":
        return ""
    lo, hi = f.minimum, f.maximum
    if lo is not None and hi is not None:
        x = (lo + hi) / 2
    elif lo is not None:
        x = lo
    elif hi is not None:
        x = min(hi, 0.0)
    else:
        x = 0.0
    return math.ceil(x) if f.type == "integer" else float(x)


# -- parsing a schema document -----------------------------------------------------------------


def parse_schema(data: Any) -> Schema:
    """Parse ``{"fields": [...]}`` (or a bare list of fields) into a :class:`Schema`."""
    problems: list[dict[str, Any]] = []

    def bad(path: str, reason: str) -> None:
        problems.append({"field": path, "reason": reason})

    items = data.get("fields") if isinstance(data, Mapping) else data
    if not isinstance(items, list) or not items:
        raise InvalidInput(
            "schema must be an object with a non-empty list 'fields'",
            details=[{"field": "schema.fields", "reason": "expected a non-empty list"}],
        )
    known = {
        "name",
        "type",
        "required",
        "default",
        "minimum",
        "maximum",
        "categories",
        "description",
    }
    fields: list[Field] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        path = f"schema.fields[{i}]"
        if not isinstance(item, Mapping):
            bad(path, "expected an object")
            continue
        for key in item:
            if key not in known:
                bad(f"{path}.{key}", "unexpected key")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            bad(f"{path}.name", "expected a non-empty string")
            continue
        if name in seen:
            bad(f"{path}.name", f"duplicate field name {name!r}")
        seen.add(name)
        ftype = item.get("type")
        if ftype not in FIELD_TYPES:
            bad(f"{path}.type", f"expected one of {', '.join(FIELD_TYPES)}")
            continue
        required = item.get("required", "default" not in item)
        if not isinstance(required, bool):
            bad(f"{path}.required", "expected a boolean")
            continue
        lo, hi = item.get("minimum"), item.get("maximum")
        for key, val in (("minimum", lo), ("maximum", hi)):
            if val is not None and (isinstance(val, bool) or not isinstance(val, int | float)):
                bad(f"{path}.{key}", "expected a number")
        if (lo is not None or hi is not None) and ftype not in ("number", "integer"):
            bad(path, "minimum/maximum apply to number and integer fields only")
        if isinstance(lo, int | float) and isinstance(hi, int | float) and lo > hi:
            bad(path, "minimum is above maximum")
        cats = item.get("categories")
        if ftype == "category":
            if not isinstance(cats, list) or not cats:
                bad(f"{path}.categories", "a category field needs a non-empty list of values")
                continue
            if any(isinstance(c, list | dict) or c is None for c in cats):
                bad(f"{path}.categories", "categories must be strings, numbers or booleans")
                continue
        elif cats is not None:
            bad(f"{path}.categories", "categories apply to category fields only")
        description = item.get("description", "")
        if not isinstance(description, str):
            bad(f"{path}.description", "expected a string")
        fields.append(
            Field(
                name=name,
                type=ftype,
                required=required,
                default=item.get("default"),
                minimum=lo,
                maximum=hi,
                categories=tuple(cats) if ftype == "category" and isinstance(cats, list) else None,
                description=description if isinstance(description, str) else "",
            )
        )
    if not problems:
        # A default must itself fit the field.
        for i, f in enumerate(fields):
            if not f.required and f.default is not None:
                ok, _, reason = _compile(f)(f.default)
                if not ok:
                    bad(f"schema.fields[{i}].default", reason)
    if problems:
        raise InvalidInput(
            f"invalid schema: {problems[0]['field']}: {problems[0]['reason']}", details=problems
        )
    return Schema(tuple(fields))


# -- payloads ------------------------------------------------------------------------------------
