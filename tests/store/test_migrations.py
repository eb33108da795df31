"""Migrations: applied on open, idempotent, and equal to the table definitions."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from modelport.store import Store, metadata


def test_migrations_reach_head_and_match_the_tables(store_url: str) -> None:
    store = Store(store_url)
    try:
        config = Config()
        config.set_main_option("script_location", "modelport.store:migrations")
        head = ScriptDirectory.from_config(config).get_current_head()
        assert store.revision() == head == "0001"
        store.migrate()  # a second run is a no-op
        assert store.revision() == head
        with store.read() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
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
