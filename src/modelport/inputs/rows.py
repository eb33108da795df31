"""A predict body's rows: records (``{"inputs": [{...}, ...]}``) or columns and data
(``{"columns": [...], "data": [[...], ...]}``), adapted when the consumer has an adapter, then
validated into a :class:`~modelport.inputs.table.Table` by the version's schema."""

from __future__ import annotations

from collections.abc import Mapping
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import InvalidInput
from .schema import Schema, invalid_rows
from .table import Table

if TYPE_CHECKING:
    from .adapters import Adapter


def table_from_payload(
    schema: Schema, body: Mapping[str, Any], max_rows: int, adapter: Adapter | None = None
) -> Table:
    """The validated rows of a predict body: ``{"inputs": [...]}`` or ``{"columns", "data"}``.

    With an ``adapter``, the records are adapted first; the table then keeps the records as
    sent (``raw``) for the ledger.
    """
    inputs, columns, data = _payload_form(body, max_rows)
    if adapter is not None:
        return adapted_table(schema, records_of_payload(body, max_rows), adapter)
    if inputs is not None:
        return schema.table(inputs)
    assert columns is not None and data is not None
    names = schema.names
    width = len(columns)
    if columns == names:
        return schema.table_from_rows(data, shaped=True)
    if sorted(columns) == sorted(names):  # the schema's fields in another order
        reorder = itemgetter(*(columns.index(n) for n in names)) if width > 1 else None
        rows = data if reorder is None else list(map(reorder, data))
        return schema.table_from_rows(rows, shaped=True)
    return schema.table([dict(zip(columns, row, strict=True)) for row in data])


def records_of_payload(body: Mapping[str, Any], max_rows: int) -> list[Any]:
    """A predict body's rows as records, whichever form it came in."""
    inputs, columns, data = _payload_form(body, max_rows)
    if inputs is not None:
        return inputs
    assert columns is not None and data is not None
    return [dict(zip(columns, row, strict=True)) for row in data]


def _payload_form(
    body: Mapping[str, Any], max_rows: int
) -> tuple[list[Any] | None, list[str] | None, list[list[Any]] | None]:
    """``(inputs, None, None)`` or ``(None, columns, data)``, after every shape check."""
    inputs = body.get("inputs")
    columns = body.get("columns")
    if inputs is not None and (columns is not None or "data" in body):
        raise InvalidInput(
            "give either 'inputs' or 'columns' with 'data', not both",
            details=[{"field": "inputs", "reason": "conflicts with columns/data"}],
        )
    if inputs is not None:
        if not isinstance(inputs, list) or not inputs:
            raise InvalidInput(
                "'inputs' must be a non-empty list of objects",
                details=[{"field": "inputs", "reason": "expected a non-empty list of objects"}],
            )
        _check_rows(len(inputs), max_rows, "inputs")
        return inputs, None, None
    if columns is None:
        raise InvalidInput(
            "the body needs 'inputs' (a list of records) or 'columns' and 'data'",
            details=[{"field": "inputs", "reason": "missing"}],
        )
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InvalidInput(
            "'columns' must be a list of field names",
            details=[{"field": "columns", "reason": "expected a list of strings"}],
        )
    if len(set(columns)) != len(columns):
        raise InvalidInput(
            "'columns' has duplicate names",
            details=[{"field": "columns", "reason": "duplicate column names"}],
        )
    data = body.get("data")
    if not isinstance(data, list) or not data:
        raise InvalidInput(
            "'data' must be a non-empty list of rows",
            details=[{"field": "data", "reason": "expected a non-empty list of lists"}],
        )
    _check_rows(len(data), max_rows, "data")
    width = len(columns)
    if set(map(type, data)) != {list} or set(map(len, data)) != {width}:
        raise invalid_rows(
            [
                {"row": i, "field": None, "reason": f"expected a list of {width} values"}
                for i, row in enumerate(data)
                if not isinstance(row, list) or len(row) != width
            ]
        )
    return None, columns, data


def adapted_table(schema: Schema, records: list[Any], adapter: Adapter) -> Table:
    """Records through an adapter, then validated; problems of either kind are one 422."""
    adapted, problems = adapter.apply(records)
    if problems:
        raise invalid_rows(problems)
    table = schema.table(adapted)
    table.raw = orjson.dumps(records).decode()
    return table


def _check_rows(n: int, max_rows: int, name: str) -> None:
    if n > max_rows:
        raise InvalidInput(
            f"too many rows: {n} (the limit is {max_rows})",
            details=[{"field": name, "reason": f"{n} rows exceed the limit of {max_rows}"}],
        )


# -- inference from training data ----------------------------------------------------------------
