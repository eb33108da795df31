"""Schemas inferred from training data (types, nulls, ranges, categories, per-field
statistics), and the files (CSV, Parquet) they are read from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInput
from .schema import Field, FieldType, Schema

#: A text column with at most this many distinct values (and few per row) is a category.
_CATEGORY_MAX_VALUES = 20

if TYPE_CHECKING:
    import pandas as pd


def infer_schema(
    df: pd.DataFrame, *, fields: Sequence[str] | None = None
) -> tuple[Schema, dict[str, Any]]:
    """Infer a schema and per-field training statistics from a DataFrame.

    ``fields`` selects and orders the columns (e.g. the estimator's ``feature_names_in_``);
    by default every column is a field. Ranges are not inferred: training data rarely covers
    what production may legitimately send, so the statistics keep the observed range instead.
    """
    import pandas as pd

    names = list(fields) if fields is not None else [str(c) for c in df.columns]
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise InvalidInput(
            f"training data lacks the column(s) {', '.join(missing)}",
            details=[{"field": n, "reason": "not in the training data"} for n in missing],
        )
    out: list[Field] = []
    stats: dict[str, Any] = {"rows": len(df), "fields": {}}
    for name in names:
        col = df[name]
        nulls = int(col.isna().sum())
        required = nulls == 0
        s: dict[str, Any] = {"missing": nulls}
        if pd.api.types.is_bool_dtype(col):
            ftype: FieldType = "boolean"
            s["counts"] = {str(k): int(v) for k, v in col.value_counts().items()}
            out.append(Field(name, ftype, required=required))
        elif pd.api.types.is_numeric_dtype(col):
            ftype = "integer" if pd.api.types.is_integer_dtype(col) else "number"
            s.update(_numeric_stats(col))
            out.append(Field(name, ftype, required=required))
        else:
            values = col.dropna()
            uniques = values.unique()
            counts = values.value_counts()
            if len(uniques) <= _CATEGORY_MAX_VALUES and len(uniques) < max(2, len(values) // 2):
                cats = sorted(_plain(v) for v in uniques)
                out.append(Field(name, "category", required=required, categories=tuple(cats)))
            else:
                out.append(Field(name, "string", required=required))
            s["counts"] = {str(k): int(v) for k, v in counts.head(50).items()}
            s["distinct"] = len(uniques)
        stats["fields"][name] = s
    return Schema(tuple(out)), stats


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _numeric_stats(col: pd.Series) -> dict[str, Any]:

    values = col.dropna().to_numpy(dtype="float64")
    if values.size == 0:
        return {"count": 0}
    qs = np.quantile(values, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
    counts, edges = np.histogram(values, bins=10)
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "quantiles": dict(
            zip(["p01", "p05", "p25", "p50", "p75", "p95", "p99"], map(float, qs), strict=True)
        ),
        "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    }


def read_table(path: str, *, text: bool = False) -> pd.DataFrame:
    """Read a CSV or Parquet file by its extension. ``text``: a CSV's cells stay text (empty
    for a missing one), for reading cell by cell against a schema."""
    import pandas as pd

    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise InvalidInput(
                f"{path}: reading Parquet needs pyarrow (part of the core install): "
                "pip install pyarrow",
                details=[{"field": "train_data", "reason": "pyarrow is not installed"}],
            ) from None
        return pd.read_parquet(path)
    if lower.endswith((".csv", ".csv.gz", ".txt")):
        if text:
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
        return pd.read_csv(path)
    raise InvalidInput(
        f"{path}: unsupported file type (use .csv or .parquet)",
        details=[{"field": "train_data", "reason": "expected a .csv or .parquet file"}],
    )
