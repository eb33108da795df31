"""Batch scoring from and into databases: a SQL query's rows read in chunks, and scored rows
written into a table (with the run's id, so a failed run's rows can be taken back)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput, InvalidRequest

if TYPE_CHECKING:
    import pandas as pd


from .files import Source


def open_sql_source(db: str, query: str, chunk_rows: int) -> Source:
    """The rows of a query, fetched ``chunk_rows`` at a time through a server-side cursor (so
    memory follows the chunk, not the result), as typed columns."""
    import pandas as pd
    import sqlalchemy as sa

    from ..store import normalize_url

    engine = sa.create_engine(normalize_url(db))
    conn = None
    try:
        conn = engine.connect()
        result = conn.execution_options(stream_results=True).execute(sa.text(query))
    except sa.exc.SQLAlchemyError as exc:
        if conn is not None:
            conn.close()
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise InvalidInput(
            f"--from-sql: the query failed: {reason}",
            details=[{"field": "from_sql", "reason": reason}],
        ) from None
    columns = [str(c) for c in result.keys()]  # noqa: SIM118 - a Result, not a dict
    done = [0]

    def chunks() -> Iterator[tuple[int, pd.DataFrame]]:
        for part in result.partitions(chunk_rows):
            frame = pd.DataFrame([tuple(r) for r in part], columns=columns)
            done[0] += len(frame)  # read: the position counts it before it is scored
            yield done[0] - len(frame), frame

    def close() -> None:
        result.close()
        conn.close()
        engine.dispose()

    return Source(columns, chunks(), 0, "rows", lambda: done[0], close)


def check_sqlite_journal(db: str) -> None:
    """Reading a query's rows while appending to a table of the same SQLite file needs WAL:
    in the other journal modes the open read blocks every write until it ends."""
    import sqlalchemy as sa

    from ..store import normalize_url

    url = sa.engine.make_url(normalize_url(db))
    if url.get_backend_name() != "sqlite":
        return
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            mode = str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()).lower()
    finally:
        engine.dispose()
    if mode != "wal":
        raise InvalidRequest(
            f"--db: this SQLite database is in {mode} journal mode, where reading --from-sql "
            "blocks writing --to-table; switch it to WAL (PRAGMA journal_mode=WAL) or write to "
            "a file",
            details=[{"field": "db", "reason": f"SQLite journal mode {mode}; WAL is needed"}],
        )


class TableOutput:
    """A database table, created when missing and appended to chunk by chunk (one transaction
    each); a run that fails takes its rows out again (every row carries its ``run_id``)."""

    def __init__(self, db: str, table: str, run_id: int, engine: Any = None) -> None:
        import sqlalchemy as sa

        from ..store import normalize_url

        self.engine = engine if engine is not None else sa.create_engine(normalize_url(db))
        self.schema, _, self.name = table.rpartition(".")
        self.run_id = run_id
        self.wrote = False

    def write(self, frame: pd.DataFrame) -> None:
        if not len(frame):
            return
        if "run_id" not in frame.columns:
            frame = frame.assign(run_id=self.run_id)
        frame = frame.astype(
            {c: "object" for c in frame.columns if str(frame[c].dtype).endswith("[pyarrow]")}
        )
        with self.engine.begin() as conn:
            frame.to_sql(
                self.name, conn, schema=self.schema or None, if_exists="append", index=False
            )
        self.wrote = True

    def close(self, empty: pd.DataFrame) -> None:
        """Create the table even when no row was written (``empty`` gives its columns)."""
        if not self.wrote:
            if "run_id" not in empty.columns:
                empty = empty.assign(run_id=pd_int64())
            with self.engine.begin() as conn:
                empty.to_sql(
                    self.name, conn, schema=self.schema or None, if_exists="append", index=False
                )
        self.engine.dispose()

    def abort(self) -> None:
        import sqlalchemy as sa

        with contextlib.suppress(Exception):
            table = sa.Table(
                self.name, sa.MetaData(), schema=self.schema or None, autoload_with=self.engine
            )
            with self.engine.begin() as conn:
                conn.execute(table.delete().where(table.c.run_id == self.run_id))
        self.engine.dispose()


def pd_int64() -> Any:
    import pandas as pd

    return pd.Series(dtype="int64")
