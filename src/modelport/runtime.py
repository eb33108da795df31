"""What one server process runs on: the parts every loop of it shares.

The scoring engine, the online learner and the job runner each receive one :class:`Runtime`
instead of the whole service: the store and its writer thread (every write goes through the
writer), the artifact store, the router with the loaded versions, the metrics and the settings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .flavors.load_cache import LoadCache
from .monitoring.metrics import Metrics
from .serving.routing import Router
from .store import Store
from .store.artifacts import artifact_store
from .store.writer import Writer, unstorable

if TYPE_CHECKING:
    from .settings import Settings
    from .store.artifacts import LocalArtifactStore, RemoteArtifactStore

T = TypeVar("T")

log = logging.getLogger("modelport.runtime")


@dataclass
class Runtime:
    """A server process's shared parts; :meth:`open` makes them from the settings."""

    settings: Settings
    store: Store
    writer: Writer
    artifacts: LocalArtifactStore | RemoteArtifactStore
    router: Router
    metrics: Metrics
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    # Registry changes announced from worker threads and not done yet: each refreshes the
    # router on a connection of the store's, so the service waits for them before closing it.
    _changes: set[Future[None]] = field(default_factory=set, init=False, repr=False)

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        store = Store(settings.store_url, sqlite_synchronous=settings.sqlite_synchronous)
        artifacts = artifact_store(settings)
        metrics = Metrics(max_series=settings.metrics_max_series)
        writer = Writer(
            store,
            max_batch=settings.ledger_max_batch,
            checkpoint_seconds=settings.sqlite_checkpoint_seconds,
        )
        writer.observer = metrics.committed
        cache = LoadCache(settings.home / "cache" if settings.model_cache else None)
        router = Router(store, artifacts, cache)
        router.segments_observer = metrics.segments_changed
        return cls(settings, store, writer, artifacts, router, metrics)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` on a read connection, off the event loop; a value the database cannot hold
        (a NUL byte in a key, say) is the caller's error, not the server's."""

        def run() -> T:
            with self.store.read() as conn:
                try:
                    return fn(conn)
                except sa.exc.DataError as exc:
                    raise unstorable(exc) from None

        return await asyncio.to_thread(run)

    async def registry_changed(self) -> None:
        """A registry change was committed: every route sees it, its versions loaded."""
        await asyncio.to_thread(self.router.refresh)
        await self.router.warm()

    def registry_changed_from_thread(self) -> None:
        """The same, from a worker thread (the learner), on the server's event loop; it runs
        after this returns, and :meth:`registry_changes_done` waits for it."""
        if self.loop is not None:
            change = asyncio.run_coroutine_threadsafe(self.registry_changed(), self.loop)
            self._changes.add(change)
            change.add_done_callback(self._change_done)

    def _change_done(self, change: Future[None]) -> None:
        self._changes.discard(change)
        if not change.cancelled() and change.exception() is not None:
            # The watcher's next poll sees the change anyway.
            log.warning("registry refresh after a change failed: %s", change.exception())

    async def registry_changes_done(self) -> None:
        """Wait for every registry change announced from a thread so far."""
        pending = [asyncio.wrap_future(change) for change in list(self._changes)]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
