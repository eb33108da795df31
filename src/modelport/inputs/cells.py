"""Cells of a column as a field's type: text cells (a CSV's) parsed one by one, typed cells
(Parquet's, Spark's) with their nulls made missing.

Batch scoring and observation files read cells this way, so a cell that does not parse stays
as it was and the schema's check names it: one bad cell rejects its own row, never its
neighbours. pandas is imported only when a column is read (the CLI starts without it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .schema import Field

if TYPE_CHECKING:
    import pandas as pd

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def missing(v: Any) -> bool:
    """An empty cell, a null, a NaN or pandas' NA."""
    if v is None or v is _NA.value:
        return True
    if isinstance(v, float):
        return v != v
    return isinstance(v, str) and not v


class _NA:
    """pandas' NA, looked up once the first file is read (the CLI starts without pandas)."""

    value: Any = None

    @classmethod
    def load(cls) -> None:
        if cls.value is None:
            import pandas as pd

            cls.value = pd.NA


def text_values(values: Sequence[Any], f: Field) -> list[Any]:
    """Cells of a text column (CSV) as the field's type; what does not parse stays text, so
    the schema's check names the problem (one bad cell never spoils its neighbours)."""
    _NA.load()
    if f.type == "string":
        return [None if missing(v) else v for v in values]
    if f.type in ("number", "integer"):
        import pandas as pd

        parsed = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
        if not parsed.isna().any():  # the common case: every cell a number
            return list(parsed.tolist())
        nums = parsed.tolist()
        out: list[Any] = []
        for v, x in zip(values, nums, strict=True):
            if missing(v):
                out.append(None)
            elif x == x and x is not None:  # parsed (NaN marks what did not)
                out.append(int(x) if f.type == "integer" and float(x).is_integer() else x)
            else:
                out.append(v)
        return out
    if f.type == "boolean":
        out = []
        for v in values:
            if missing(v):
                out.append(None)
            elif isinstance(v, str) and v.strip().lower() in _TRUE:
                out.append(True)
            elif isinstance(v, str) and v.strip().lower() in _FALSE:
                out.append(False)
            else:
                out.append(v)
        return out
    by_text = {str(c): c for c in f.categories or ()}
    numeric = {float(c): c for c in f.categories or () if isinstance(c, int | float)}
    out = []
    for v in values:
        if missing(v):
            out.append(None)
        elif v in by_text:
            out.append(by_text[v])
        else:
            try:
                out.append(numeric.get(float(v), v))
            except (TypeError, ValueError):
                out.append(v)
    return out


def typed_values(values: Sequence[Any], f: Field) -> list[Any]:
    """Cells of a typed column (Parquet, Spark): NaN and nulls become missing."""
    out = [None if missing(v) else v for v in values]
    if f.type == "category" and any(isinstance(c, str) for c in f.categories or ()):
        # a category column of numbers in the file may match text categories ("1" vs 1)
        by_text = {str(c): c for c in f.categories or ()}
        allowed = set(f.categories or ())
        out = [v if v is None or v in allowed else by_text.get(str(v), v) for v in out]
    return out


def is_text(series: pd.Series) -> bool:
    import pandas as pd

    return bool(series.dtype == object or pd.api.types.is_string_dtype(series.dtype))
