"""Migrations: applied on open, idempotent, and equal to the table definitions."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from modelport.registry.keys import create_key, list_keys
from modelport.store import HEAD_REVISION, Store, metadata


def _head() -> str | None:
    config = Config()
    config.set_main_option("script_location", "modelport.store:migrations")
    return ScriptDirectory.from_config(config).get_current_head()


def test_migrations_reach_head_and_match_the_tables(store_url: str) -> None:
    store = Store(store_url)
    try:
        assert store.revision() == _head() == HEAD_REVISION
        with store.read() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
            generation = conn.exec_driver_sql("SELECT id, generation FROM registry_generation")
            assert generation.all() == [(1, 0)]
        assert tables == set(metadata.tables) | {"alembic_version"}
        assert diff == []
    finally:
        store.close()


def test_migrating_again_is_a_no_op(store_url: str) -> None:
    store = Store(store_url)
    try:
        with store.transaction() as conn:
            create_key(conn, "kept", ["read"])
        store.migrate()
        again = Store(store_url)  # a second process opening the same store migrates too
        again.close()
        assert store.revision() == _head()
        with store.read() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
            assert [k["consumer"] for k in list_keys(conn)] == ["kept"]
            assert conn.exec_driver_sql("SELECT count(*) FROM registry_generation").scalar() == 1
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        store.close()


def test_two_stores_on_one_database_share_it(store_url: str) -> None:
    first, second = Store(store_url), Store(store_url)
    try:
        with first.transaction() as conn:
            conn.exec_driver_sql("UPDATE registry_generation SET generation = 41 WHERE id = 1")
        with second.read() as conn:
            assert conn.exec_driver_sql("SELECT generation FROM registry_generation").scalar() == 41
    finally:
        first.close()
        second.close()


def test_ledger_rows_of_the_earlier_layout_survive_the_block_migration(store_url: str) -> None:
    """0003 turns one-prediction-per-row ledger rows into blocks of one, feedback joined."""
    from modelport.ids import new_id
    from modelport.ledger import get_prediction

    old = Store(store_url, migrate=False)
    try:
        old.migrate("0002")
        pid = new_id()
        with old.transaction() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO predictions (id, ts, model, version, alias, consumer, request_id, "
                    "inputs, outputs, latency_ms) VALUES (:id, 1700000000.0, 'iris', 2, "
                    "'production', 'app', 'r-1', :inputs, :outputs, 1.5)"
                ).bindparams(
                    sa.bindparam("inputs", type_=sa.JSON), sa.bindparam("outputs", type_=sa.JSON)
                ),
                {
                    "id": pid,
                    "inputs": {"a": 1.0, "b": "x"},
                    "outputs": {"prediction": "yes", "probabilities": {"no": 0.25, "yes": 0.75}},
                },
            )
            conn.execute(
                sa.text(
                    "INSERT INTO feedback (prediction_id, label, reward, consumer, ts) "
                    "VALUES (:pid, '\"yes\"', NULL, 'app', 1700000001.0)"
                ),
                {"pid": pid},
            )
        old.migrate()
        assert old.revision() == _head()
        with old.read() as conn:
            record = get_prediction(conn, pid)
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
            joined = conn.exec_driver_sql("SELECT ledger_id, ledger_row FROM feedback").all()
    finally:
        old.close()
    assert record["inputs"] == {"a": 1.0, "b": "x"}
    assert record["outputs"] == {"prediction": "yes", "probabilities": {"no": 0.25, "yes": 0.75}}
    assert (record["version"], record["consumer"], record["request_id"]) == (2, "app", "r-1")
    assert [f["label"] for f in record["feedback"]] == ["yes"]
    assert joined == [(pid, 0)]


def test_a_store_at_the_newest_revision_opens_without_alembic(store_url: str) -> None:
    import subprocess
    import sys

    Store(store_url).close()  # migrated here
    code = (
        "import sys; from modelport.store import Store; "
        f"Store({store_url!r}).close(); "
        "print('alembic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_replicas_starting_at_once_on_a_new_store_all_migrate_it(store_url: str) -> None:
    """Replicas started together on an empty database: one migrates, the others wait and find
    the schema current (on PostgreSQL an advisory lock; on SQLite the write lock)."""
    import threading

    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_store() -> None:
        start.wait()
        try:
            Store(store_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    store = Store(store_url)
    try:
        assert store.revision() == HEAD_REVISION
    finally:
        store.close()
