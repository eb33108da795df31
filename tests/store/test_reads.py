"""Reads: what a read connection sees, and what it costs the database, on each store."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from modelport import ledger
from modelport.errors import PredictionNotFound
from modelport.ids import MAX_BLOCK, new_ids
from modelport.store import Store
from modelport.store.tables import predictions, registry_generation
from tests.store.test_writer import _row


def _generation(conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(registry_generation.c.generation)).scalar_one())


def _bump(store: Store) -> None:
    with store.transaction() as conn:
        conn.execute(
            registry_generation.update().values(generation=registry_generation.c.generation + 1)
        )


def test_a_read_holds_a_transaction_only_where_it_buys_a_snapshot(store: Store) -> None:
    """SQLite: a read is one snapshot (a write committed during it is not seen). PostgreSQL
    under READ COMMITTED gives every statement its own snapshot anyway, so a read runs outside
    a transaction: between statements the server sees the session idle, not "idle in
    transaction", and no BEGIN or ROLLBACK round trip is paid."""
    with store.read() as conn:
        before = _generation(conn)
        _bump(store)
        seen = _generation(conn)
        if store.dialect == "sqlite":
            assert seen == before
        else:
            assert seen == before + 1
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with store.write_engine.connect() as other:
                state = other.exec_driver_sql(
                    "SELECT state FROM pg_stat_activity WHERE pid = %(pid)s", {"pid": pid}
                ).scalar_one()
            assert state == "idle"
    with store.read() as conn:
        assert _generation(conn) == before + 1


def _insert(store: Store, firsts: list[str], rows: int = 1) -> None:
    """Ledger rows starting at ``firsts``, each said to hold ``rows`` predictions."""
    values = [_row("r", first, rows) for first in firsts]
    with store.transaction() as conn:
        conn.exec_driver_sql(ledger.insert_statement(store.write_engine.dialect.paramstyle), values)


def _plus(prediction_id: str, n: int) -> str:
    return str(uuid.UUID(int=uuid.UUID(prediction_id).int + n))


def test_a_lookup_finds_every_id_of_the_largest_block_and_none_past_it(store: Store) -> None:
    (first,) = new_ids(1)
    _insert(store, [first], rows=MAX_BLOCK)
    columns = (predictions.c.id, predictions.c.rows)
    with store.read() as conn:
        for at in (0, 1, MAX_BLOCK - 2, MAX_BLOCK - 1):
            found = ledger._locate(conn, _plus(first, at), *columns)
            assert found is not None and found[0].id == first and found[1] == at
        assert ledger._locate(conn, _plus(first, MAX_BLOCK), *columns) is None
        assert ledger._locate(conn, _plus(first, -1), *columns) is None


def test_a_lookup_of_a_deleted_id_steps_over_no_deleted_rows(store: Store) -> None:
    """Archived rows are deleted from the table. A lookup of one of their ids searches only
    the ids a block holding it could start at, so on PostgreSQL neither the lookup nor its
    planning walks over the dead index entries of every older deleted row (thousands, until
    a vacuum)."""
    firsts = [new_ids(1)[0] for _ in range(20_000)]
    if store.dialect == "postgresql":
        with store.transaction() as conn:
            conn.exec_driver_sql("ALTER TABLE predictions SET (autovacuum_enabled = false)")
    _insert(store, firsts)
    with store.transaction() as conn:
        # Statistics from before the deletes, as when an archive pass follows the last
        # ANALYZE: the deleted ids fill the histogram's first buckets.
        conn.exec_driver_sql("ANALYZE predictions")
        conn.execute(predictions.delete().where(predictions.c.id <= firsts[-11]))
    if store.dialect == "postgresql":
        # Any index scan over them marks their entries dead (as a day of lookups would); a
        # scan then steps over those pages without visiting the table, and without a limit.
        with store.read() as conn:
            conn.exec_driver_sql("SET enable_seqscan = off")
            conn.exec_driver_sql("SET enable_bitmapscan = off")
            conn.exec_driver_sql("SELECT count(rows) FROM predictions WHERE id > ''")
            conn.exec_driver_sql("RESET ALL")
    # The newest deleted id (a scan down from it would cross every older deleted row) and
    # one of the oldest (in the histogram's first bucket).
    newest_gone, oldest_gone = firsts[-11], firsts[5]
    statements: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "FROM predictions" in statement:
            statements.append((statement, params))

    sa.event.listen(store.read_engine, "before_cursor_execute", seen)
    try:
        for gone in (newest_gone, oldest_gone):
            with store.read() as conn, pytest.raises(PredictionNotFound):
                ledger.get_prediction(conn, gone)
        with store.read() as conn:
            assert ledger.get_prediction(conn, firsts[-10])["id"] == firsts[-10]
    finally:
        sa.event.remove(store.read_engine, "before_cursor_execute", seen)
    assert len(statements) == 3
    if store.dialect == "sqlite":
        return  # SQLite takes deleted keys out of its B-tree: there is nothing to step over

    def pages(node: dict[str, Any]) -> int:
        return int(node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0))

    with store.read() as conn:
        newest, oldest = (
            conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params
            ).scalar_one()[0]
            for sql, params in statements[:2]
        )
    assert newest["Plan"]["Actual Rows"] == oldest["Plan"]["Actual Rows"] == 0
    # Executing: a scan down from the newest deleted id without a lower bound reads about 130
    # index pages here.
    assert pages(newest["Plan"]) <= 5, newest["Plan"]
    # Planning: with the bounds' values in sight, the planner reads the index from its lowest
    # end to the first live entry to estimate the range: the same dead entries.
    assert pages(oldest["Planning"]) <= 5, oldest["Planning"]
