"""The database behind modelport: one schema on SQLite or PostgreSQL, migrated on open.

:class:`Store` owns the engines. Reads take a pooled connection; every write in a server goes
through :class:`~modelport.store.writer.Writer`, one thread that groups concurrent writes into
one transaction (group commit). Short-lived tools (the CLI's ``keys`` commands, tests) may use
:meth:`Store.transaction` directly: SQLite serializes them with ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from ..errors import StoreUnavailable

try:
    import fcntl
except ImportError:  # not POSIX: SQLite's own locking alone
    fcntl = None  # type: ignore[assignment]
from .tables import metadata

log = logging.getLogger("modelport.store")


class _Outage:
    """Logs a database outage once, then at most every ``every`` seconds with a count, so a
    flood of failing requests does not become a flood of log lines."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.last = 0.0
        self.suppressed = 0
        self.lock = threading.Lock()

    def report(self, exc: BaseException) -> None:
        now = time.monotonic()
        with self.lock:
            if now - self.last < self.every:
                self.suppressed += 1
                return
            more, self.suppressed, self.last = self.suppressed, 0, now
        orig = getattr(exc, "orig", None) or exc
        tail = f" ({more} more failures since the last report)" if more else ""
        log.error("the store cannot be reached: %s%s", str(orig).splitlines()[0], tail)


unavailable = _Outage()

__all__ = ["Store", "cannot_open", "metadata", "normalize_url"]

_MIGRATIONS = Path(__file__).parent / "migrations"
#: The newest migration: revision ids are the four digits its file name starts with.
HEAD_REVISION = max(
    p.name[:4] for p in (_MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")
)


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _json_loads(value: Any) -> Any:
    # SQLite gives JSON columns numeric affinity: a stored scalar may come back as a number.
    if isinstance(value, str | bytes):
        return orjson.loads(value)
    return value


def _as_is(value: Any) -> Any:
    return value


def _bind_without_lookup() -> None:
    """Let the SQLite driver bind None, bytes and bools without its failed adapter lookup
    (called when a SQLite store opens; a PostgreSQL store leaves the driver alone).

    The driver binds an int, float, str or bytearray as it is and sends every other
    parameter through its adapter registry; a type with no adapter there costs a failed
    lookup of ``__adapt__`` that raises and clears a formatted exception. A ledger row holds
    up to eight such values (absent columns, the inputs, the shadow flag): 26,000 instructions
    of a one-row request went there, 11,000 with these types registered as themselves (the
    registry's own lookup and call remain). They are bound exactly as before: None as NULL,
    bytes as a blob, a bool as 0 or 1. An adapter the application registered first is kept.
    """
    import sqlite3

    for kind in (type(None), bytes, bool):
        sqlite3.adapters.setdefault((kind, sqlite3.PrepareProtocol), _as_is)


#: The PostgreSQL advisory lock key migrations hold ("modelpor" in ASCII).
_MIGRATION_LOCK = 0x6D6F64656C706F72


class _WriteLock:
    """One writer at a time across threads and processes (a thread lock and a file lock).

    The thread that holds it may take it again (each taking is given back once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._owner: int | None = None  # the holding thread's ident
        self._depth = 0

    def __enter__(self) -> None:
        self.take(wait=True)

    def take(self, *, wait: bool) -> bool:
        """Take the lock; without ``wait``, only if no other thread or process holds it."""
        me = threading.get_ident()
        if self._owner == me:
            self._depth += 1
            return True
        if not self._thread_lock.acquire(blocking=wait):
            return False
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._thread_lock.release()
            return False
        except BaseException:
            self._thread_lock.release()
            raise
        self._owner, self._depth = me, 1
        return True

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth:
            return
        self._owner = None
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        with self._thread_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def normalize_url(url: str) -> str:
    """Map ``postgresql://`` and ``postgres://`` to the psycopg 3 driver; keep others as given."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def cannot_open(url: str, exc: sa.exc.DBAPIError) -> StoreUnavailable:
    """The store cannot be opened, in one line; a PostgreSQL database that does not exist is
    named with the command that creates it."""
    reason = " ".join(str(exc.orig).split())
    parsed = make_url(url)
    if getattr(exc.orig, "sqlstate", None) == "3D000" or (
        parsed.get_backend_name() == "postgresql" and "does not exist" in reason
    ):
        where = " ".join(
            f"{flag} {value}"
            for flag, value in (("-h", parsed.host), ("-p", parsed.port), ("-U", parsed.username))
            if value
        )
        return StoreUnavailable(
            f"the database {parsed.database!r} does not exist on "
            f"{parsed.host or 'localhost'}:{parsed.port or 5432}; create it with: createdb "
            f"{where} {parsed.database} (or CREATE DATABASE {parsed.database}), then start again"
        )
    return StoreUnavailable(f"cannot open the store {parsed.render_as_string()}: {reason}")


class Store:
    """Engines over one database, with the schema migrated to the newest revision."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", migrate: bool = True):
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise StoreUnavailable(
                f"unsupported store URL scheme {parsed.drivername!r}: use sqlite:/// or postgresql://"
            )
        common: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": _json_loads}
        self._write_lock: _WriteLock | None = None
        if self.dialect == "sqlite":
            _bind_without_lookup()
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                if fcntl is not None:
                    self._write_lock = _WriteLock(Path(parsed.database + ".write-lock"))
            self.read_engine = self._sqlite_engine(sqlite_synchronous, immediate=False, **common)
            self.write_engine = self._sqlite_engine(sqlite_synchronous, immediate=True, **common)
        else:
            engine = sa.create_engine(
                self.url, pool_pre_ping=True, pool_size=8, max_overflow=8, **common
            )
            self.write_engine = engine
            # Reads run outside a transaction: under READ COMMITTED each statement sees its
            # own snapshot either way, and a lookup is saved its BEGIN and ROLLBACK, two round
            # trips of the four it would make (one pool, shared with the writes).
            self.read_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        if migrate:
            self.migrate()

    def _sqlite_engine(self, synchronous: str, *, immediate: bool, **kwargs: Any) -> Engine:
        engine = sa.create_engine(
            self.url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, decide when transactions begin.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql(begin)

        return engine

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` (the newest by default; a no-op when it is there).

        A store already at the newest revision is recognized without loading Alembic, which
        a serving process then never imports (it would stay in memory for nothing).
        """
        if revision == "head" and self._recorded_revision() == HEAD_REVISION:
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        try:
            with self.transaction() as conn:
                if self.dialect == "postgresql":
                    # Replicas started together on a new database: one migrates, the others
                    # wait here and then find the schema current (SQLite: the write lock).
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
        except sa.exc.OperationalError as exc:
            raise cannot_open(self.url, exc) from exc

    def has_schema(self) -> bool:
        """Whether the database holds a modelport schema (a store that cannot be reached is
        StoreUnavailable, with what to do)."""
        try:
            with self.read_engine.connect() as conn:
                return sa.inspect(conn).has_table("alembic_version")
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise cannot_open(self.url, exc) from exc

    def _recorded_revision(self) -> str | None:
        try:
            with self.read_engine.connect() as conn:
                return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        except sa.exc.SQLAlchemyError:
            return None  # a new database (or an unreachable one: migrate says which)

    def revision(self) -> str | None:
        """The schema revision recorded in the database."""
        from alembic.runtime.migration import MigrationContext

        with self.read_engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading, returned to the pool afterwards.

        A database that cannot be reached (or drops the connection) is StoreUnavailable, a
        503 for the caller, not an unexpected error.
        """
        try:
            with self.read_engine.connect() as conn:
                yield conn
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            unavailable.report(exc)
            raise StoreUnavailable(f"the store cannot be reached: {exc.orig}") from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction: the writer thread's groups, migrations, tools and tests.

        On SQLite, writers of every process queue on a file lock first, so a waiting writer
        is woken the moment the lock is free; SQLite's own busy handler would poll with
        growing sleeps (up to 100 ms), which is what two server processes on one file saw.
        """
        with self.write_engine.connect() as conn, self.transaction_on(conn):
            yield conn

    @contextlib.contextmanager
    def transaction_on(self, conn: Connection) -> Iterator[Connection]:
        """A write transaction on a connection the caller keeps (the writer thread's own: a
        connection taken from the pool for each group costs more than the group's insert)."""
        with self._write_lock or contextlib.nullcontext(), conn.begin():
            yield conn

    @contextlib.contextmanager
    def write_lock_now(self) -> Iterator[bool]:
        """The store's write lock if no other writer (thread or process) holds it now: yields
        whether it was taken, and holds it for the block (writes in it take it again without
        waiting). Always taken where there is none (PostgreSQL, a database in memory)."""
        lock = self._write_lock
        if lock is None:
            yield True
            return
        taken = lock.take(wait=False)
        try:
            yield taken
        finally:
            if taken:
                lock.__exit__()

    @contextlib.contextmanager
    def driver_transaction_on(self, conn: Connection) -> Iterator[Any]:
        """A write transaction straight on the driver's connection under ``conn``, yielding a
        driver cursor: for plain statements over tuples of plain values (the writer's ledger
        groups), where SQLAlchemy's per-statement work costs more than the insert.

        The statements go to the driver as written (its own parameter style), and its errors
        come out as SQLAlchemy's, as from :meth:`transaction_on`. ``conn`` holds no
        SQLAlchemy transaction before or after.
        """
        raw = conn.connection.driver_connection
        sqlite = self.dialect == "sqlite"
        with self._write_lock or contextlib.nullcontext():
            cur = raw.cursor()  # type: ignore[union-attr]
            try:
                if sqlite:
                    cur.execute("BEGIN IMMEDIATE")
                yield cur
                if sqlite:
                    cur.execute("COMMIT")
                else:
                    raw.commit()  # type: ignore[union-attr]
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    if sqlite:
                        raw.execute("ROLLBACK")  # type: ignore[union-attr]
                    else:
                        raw.rollback()  # type: ignore[union-attr]
                dbapi = self.write_engine.dialect.loaded_dbapi
                if isinstance(exc, dbapi.Error):
                    raise sa.exc.DBAPIError.instance(
                        None, None, exc, dbapi.Error, dialect=self.write_engine.dialect
                    ) from exc
                raise
            finally:
                cur.close()

    def close(self) -> None:
        if self._write_lock is not None:
            self._write_lock.close()
        self.write_engine.dispose()
        if self.dialect == "sqlite":
            self.read_engine.dispose()
