"""The ledger archive: ledger rows that left the hot store, as Parquet files in the artifact store.

A file holds ledger rows of one model and one UTC day (a day's rows may take several files,
one per archive batch), with every column of the ``predictions`` table, sorted by id (stored
as deltas of their shared prefixes) and cut into row groups whose id statistics let a lookup
read one group. Its name is the sha256 of its bytes (the artifact store's contract);
``ledger_archive`` lists it with its model, day, id range, time range and counts.

Reads merge both stores: what the hot table still holds wins, and rows found in several
files (a crash between registering a file and deleting its rows, then archiving them again)
come back once. Needs pyarrow (``pip install 'modelport[parquet]'``); without it nothing is
archived and retention cannot be switched on.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import time
import uuid
from collections.abc import Iterable, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import InvalidRequest
from ..ids import lowest_first
from .tables import ledger_archive, predictions

if TYPE_CHECKING:
    from .artifacts import ArtifactStore

#: Ledger rows per Parquet row group: a lookup by id reads and decodes one group, so its cost
#: follows this number, not the file's size (1,024 rows: about 1.3 ms, against 2-3 ms for
#: 4,096, for 3 % more bytes; bench/RESULTS.md).
ROW_GROUP = 1024
#: What a missing pyarrow means for the archive.
NEEDS_PYARROW = (
    "the ledger archive writes Parquet and needs pyarrow: pip install 'modelport[parquet]' "
    "(retention stays off without it, so no row leaves the ledger unarchived)"
)

#: The ledger columns kept in an archive file: all of them (outputs as JSON text).
COLUMNS = tuple(c.name for c in predictions.columns)


def available() -> bool:
    """Whether pyarrow can be imported (checked without importing it)."""
    return importlib.util.find_spec("pyarrow") is not None


def require() -> None:
    """Raise a clear error when the archive cannot be written or read."""
    if not available():
        raise InvalidRequest(NEEDS_PYARROW)


def _schema() -> Any:
    import pyarrow as pa

    s, i32, f64 = pa.string(), pa.int32(), pa.float64()
    types = {
        "id": s,
        "rows": i32,
        "ts": f64,
        "model": s,
        "version": i32,
        "alias": s,
        "consumer": s,
        "request_id": s,
        "fields": s,
        "inputs": pa.binary(),
        "outputs": s,
        "latency_ms": f64,
        "policy": s,
        "arm": s,
        "traffic_rev": i32,
        "shadow": pa.bool_(),
        "raw_inputs": s,
        "segment": s,
        "cached": s,
        "idempotency_key": s,
    }
    return pa.schema(list(types.items()))


def select_rows() -> sa.Select[Any]:
    """The ledger columns an archive file takes, outputs read as their JSON text."""
    return sa.select(
        *(
            sa.cast(predictions.c.outputs, sa.Text).label("outputs")
            if name == "outputs"
            else predictions.c[name]
            for name in COLUMNS
        )
    )


def last_id(first: str, rows: int) -> str:
    """The id of the last prediction of a ledger row."""
    return str(uuid.UUID(int=uuid.UUID(first).int + rows - 1))


def day_of(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


def parquet_bytes(rows: Sequence[Any]) -> bytes:
    """Ledger rows (as :func:`select_rows` reads them) as one Parquet file, sorted by id."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ordered = sorted(rows, key=lambda r: r.id)
    data: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for r in ordered:
        for name in COLUMNS:
            value = getattr(r, name)
            data[name].append(bytes(value) if name == "inputs" else value)
    data["shadow"] = [bool(v) for v in data["shadow"]]
    table = pa.Table.from_pydict(data, schema=_schema())
    out = io.BytesIO()
    pq.write_table(
        table,
        out,
        row_group_size=ROW_GROUP,
        compression="zstd",
        # Statistics only where a read filters on them; dictionaries where values repeat.
        write_statistics=["id", "ts"],
        use_dictionary=["model", "alias", "consumer", "fields", "policy", "arm", "segment"],
        column_encoding={"id": "DELTA_BYTE_ARRAY"},
    )
    return out.getvalue()


def entry(rows: Sequence[Any], sha256: str, size: int) -> dict[str, Any]:
    """The ``ledger_archive`` row of a file holding ``rows`` (one model, one day)."""
    first = min(rows, key=lambda r: r.id)
    last = max(rows, key=lambda r: r.id)
    return {
        "sha256": sha256,
        "model": first.model,
        "day": day_of(first.ts),
        "first_id": first.id,
        "last_id": last_id(last.id, last.rows),
        "min_ts": min(r.ts for r in rows),
        "max_ts": max(r.ts for r in rows),
        "requests": len(rows),
        "predictions": sum(r.rows for r in rows),
        "size_bytes": size,
        "created_at": time.time(),
    }


def register(conn: Connection, entries: Iterable[dict[str, Any]]) -> int:
    """List files in the archive (a file already listed, archived again after a crash, is
    not listed twice); how many were new."""
    new = 0
    for e in entries:
        known = conn.execute(
            sa.select(ledger_archive.c.id).where(ledger_archive.c.sha256 == e["sha256"])
        ).first()
        if known is None:
            conn.execute(ledger_archive.insert().values(**e))
            new += 1
    return new


def _record(values: dict[str, Any]) -> Any:
    """An archived ledger row shaped like a row of the ``predictions`` table."""
    values["outputs"] = orjson.loads(values["outputs"])
    return SimpleNamespace(**values)


class Archive:
    """Reads of the archived ledger through the artifact store."""

    def __init__(self, artifacts: ArtifactStore) -> None:
        self.artifacts = artifacts

    def read(
        self,
        sha256: str,
        filters: list[tuple[str, str, Any]] | None = None,
        columns: Sequence[str] | None = None,
    ) -> list[Any]:
        """The rows of one file (those matching ``filters``, pyarrow's form)."""
        require()
        import pyarrow.parquet as pq

        path = self.artifacts.local_path(sha256)
        table = pq.read_table(path, filters=filters or None, columns=list(columns or COLUMNS))
        out = []
        for values in table.to_pylist():
            if "outputs" in values:
                out.append(_record(values))
            else:
                out.append(SimpleNamespace(**values))
        return out

    def listed(self, conn: Connection) -> bool:
        """Whether the archive lists any file."""
        return conn.execute(sa.select(ledger_archive.c.id).limit(1)).first() is not None

    def candidates(self, conn: Connection, prediction_id: str) -> list[str]:
        """The files whose id range spans ``prediction_id``."""
        return list(
            conn.execute(
                sa.select(ledger_archive.c.sha256)
                .where(
                    ledger_archive.c.first_id <= prediction_id,
                    ledger_archive.c.last_id >= prediction_id,
                )
                .order_by(ledger_archive.c.id)
            ).scalars()
        )

    def locate(self, conn: Connection, prediction_id: str) -> tuple[Any, int] | None:
        """The archived ledger row holding ``prediction_id`` and its place in it, or None."""
        target = uuid.UUID(prediction_id).int
        lowest = lowest_first(prediction_id)  # ids compare as strings
        for sha in self.candidates(conn, prediction_id):
            for row in self._groups_spanning(sha, lowest, prediction_id):
                at = target - uuid.UUID(row.id).int
                if 0 <= at < row.rows:
                    return row, at
        return None

    def _groups_spanning(self, sha256: str, low: str, high: str) -> list[Any]:
        """The rows of the row groups of a file whose ids may fall in ``[low, high]`` (by the
        groups' statistics), read without the dataset layer: a lookup reads one group."""
        require()
        import pyarrow.parquet as pq

        handle = pq.ParquetFile(self.artifacts.local_path(sha256))
        meta = handle.metadata
        at = meta.schema.to_arrow_schema().get_field_index("id")
        groups = []
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(at).statistics
            if stats is None or not stats.has_min_max or (stats.min <= high and stats.max >= low):
                groups.append(g)
        if not groups:
            return []
        import pyarrow.compute as pc

        table = handle.read_row_groups(groups, columns=list(COLUMNS))
        ids = table.column("id")
        table = table.filter(pc.and_(pc.greater_equal(ids, low), pc.less_equal(ids, high)))
        return [_record(values) for values in table.to_pylist()]

    def files(
        self, conn: Connection, model: str, since: float | None, until: float | None
    ) -> list[str]:
        """The files of a model with rows in ``[since, until)``, oldest first."""
        where = [ledger_archive.c.model == model]
        if until is not None:
            where.append(ledger_archive.c.min_ts < until)
        if since is not None:
            where.append(ledger_archive.c.max_ts >= since)
        return list(
            conn.execute(
                sa.select(ledger_archive.c.sha256).where(*where).order_by(ledger_archive.c.min_ts)
            ).scalars()
        )

    def window(
        self,
        conn: Connection,
        model: str,
        since: float | None,
        until: float | None,
        *,
        columns: Sequence[str] | None = None,
        version: int | None = None,
        consumer: str | None = None,
        segment: str | None = None,
        shadow: bool | None = False,
    ) -> list[Any]:
        """A model's archived rows in ``[since, until)`` (of one version, consumer, segment
        when given; shadow copies left out unless ``shadow`` is None), once each, by id."""
        filters: list[tuple[str, str, Any]] = []
        if since is not None:
            filters.append(("ts", ">=", since))
        if until is not None:
            filters.append(("ts", "<", until))
        for name, value in (("version", version), ("consumer", consumer), ("segment", segment)):
            if value is not None:
                filters.append((name, "==", value))
        if shadow is not None:
            filters.append(("shadow", "==", shadow))
        wanted = list(columns or COLUMNS)
        if "id" not in wanted:
            wanted.append("id")
        seen: dict[str, Any] = {}
        for sha in self.files(conn, model, since, until):
            for row in self.read(sha, filters, wanted):
                seen.setdefault(row.id, row)
        return [seen[k] for k in sorted(seen)]


def merged(hot: Sequence[Any], archived: Sequence[Any]) -> list[Any]:
    """Hot and archived ledger rows once each (the hot copy wins), by id."""
    if not archived:
        return list(hot)
    by_id = {r.id: r for r in archived}
    by_id.update((r.id, r) for r in hot)
    return [by_id[k] for k in sorted(by_id)]
