"""Validated input rows, held column by column: what flows from the schema to the model.

A :class:`Table` is built by :meth:`modelport.inputs.schema.Schema.table` (which checks every value)
and by nothing else on the serving path. It keeps the rows in the form that costs least to
hand on: one ``float64`` matrix when every field is a number (the common case, and what an
estimator fitted on arrays takes as is), or one typed array per field otherwise. Batching joins
tables and splits them by row; the model gets the matrix or a DataFrame built from the columns;
the ledger serializes the values in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

if TYPE_CHECKING:
    import pandas as pd

    from .schema import Schema


class Table:
    """``n`` validated rows of a schema: a numeric matrix, or one array per field."""

    __slots__ = ("_columns", "_matrix", "n", "raw", "schema")

    def __init__(
        self,
        schema: Schema,
        *,
        matrix: np.ndarray | None = None,
        columns: Sequence[np.ndarray] | None = None,
    ) -> None:
        if (matrix is None) == (columns is None):
            raise ValueError("give a matrix or columns")
        self.schema = schema
        self._matrix = matrix
        self._columns = tuple(columns) if columns is not None else None
        self.n = len(matrix) if matrix is not None else len(self._columns[0])  # type: ignore[index]
        #: The records as the consumer sent them (JSON), when they differ from the rows.
        self.raw: str | None = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, rows: slice) -> Table:
        """The rows in ``rows`` (a slice), without copying."""
        if self._matrix is not None:
            return Table(self.schema, matrix=self._matrix[rows])
        assert self._columns is not None
        return Table(self.schema, columns=[c[rows] for c in self._columns])

    def take(self, indices: Sequence[int] | np.ndarray, *, raw: bool = True) -> Table:
        """The rows at ``indices``, in that order (a copy), with their records as sent unless
        ``raw`` is false (rows for the model only)."""
        idx = np.asarray(indices, dtype="int64")
        if self._matrix is not None:
            out = Table(self.schema, matrix=self._matrix[idx])
        else:
            assert self._columns is not None
            out = Table(self.schema, columns=[c[idx] for c in self._columns])
        if raw and self.raw is not None:
            records = orjson.loads(self.raw)
            out.raw = orjson.dumps([records[i] for i in idx.tolist()]).decode()
        return out

    def row_keys(self) -> list[Any]:
        """One hashable key per row, equal for rows with equal values (the cache's keys)."""
        if self._matrix is not None:
            return [row.tobytes() for row in self._matrix]
        return [tuple(row) for row in self.rows()]

    @classmethod
    def concat(cls, tables: Sequence[Table]) -> Table:
        """One table holding the rows of ``tables`` (of one schema), in order."""
        if len(tables) == 1:
            return tables[0]
        first = tables[0]
        if first._matrix is not None:
            return cls(first.schema, matrix=np.concatenate([t.matrix() for t in tables]))
        width = len(first.schema.fields)
        return cls(
            first.schema,
            columns=[_concat([t.columns()[j] for t in tables]) for j in range(width)],
        )

    # -- views for the model ------------------------------------------------------------------

    def matrix(self) -> np.ndarray:
        """The rows as an ``n x fields`` array: float64 when every field is numeric."""
        if self._matrix is not None:
            return self._matrix
        cols = self.columns()
        if all(c.dtype.kind in "fiub" for c in cols):
            return np.column_stack([c.astype("float64", copy=False) for c in cols])
        return np.column_stack([c.astype(object) for c in cols])

    def columns(self) -> tuple[np.ndarray, ...]:
        """One array per field, in schema order."""
        if self._columns is None:
            assert self._matrix is not None
            self._columns = tuple(self._matrix[:, j] for j in range(self._matrix.shape[1]))
        return self._columns

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame with the schema's columns and dtypes."""
        import pandas as pd

        names = self.schema.names
        if self._matrix is not None:
            return pd.DataFrame(self._matrix, columns=names, copy=False)
        return pd.DataFrame(dict(zip(names, self.columns(), strict=True)), columns=names)

    # -- plain values, for the ledger and custom code -----------------------------------------

    def rows(self) -> list[list[Any]]:
        """The rows as lists of plain Python values (missing numbers as None)."""
        if self._matrix is not None:
            return _nan_to_none(self._matrix.tolist()) if self._has_nan() else self._matrix.tolist()
        cols = [_plain_column(c) for c in self.columns()]
        return [list(row) for row in zip(*cols, strict=True)]

    @property
    def float_matrix(self) -> np.ndarray | None:
        """The float64 matrix the rows are held in, or None when they are held per field."""
        return self._matrix

    def _has_nan(self) -> bool:
        m = self._matrix
        return m is not None and bool(np.isnan(m).any())


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    if len({p.dtype for p in parts}) == 1:
        return np.concatenate(parts)
    # e.g. an integer column that had a missing value in one request (float64) but not another
    kinds = {p.dtype.kind for p in parts}
    target = "float64" if kinds <= {"i", "u", "f"} else object
    return np.concatenate([p.astype(target) for p in parts])


def _plain_column(col: np.ndarray) -> list[Any]:
    values: list[Any] = col.tolist()
    if col.dtype.kind == "f":
        return _nan_to_none_flat(values)
    return values


def _nan_to_none_flat(values: list[Any]) -> list[Any]:
    return [None if v != v else v for v in values]


def _nan_to_none(rows: list[list[Any]]) -> list[list[Any]]:
    return [_nan_to_none_flat(r) for r in rows]
