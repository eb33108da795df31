"""What every part of the service shares: its attributes, reads, and registry changes.

:class:`modelport.service.core.Service` is made of parts (:mod:`.registry`, :mod:`.learning`,
:mod:`.releases`, :mod:`.monitoring`), each a class of operations over these attributes; the
service sets them when it is made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import Connection

from ..errors import InvalidInput
from ..learning import observations as learning
from ..registry import models as registry
from ..releases import consumers as releases
from ..store.tables import models

if TYPE_CHECKING:
    import httpx

    from ..monitoring.metrics import Metrics
    from ..registry.keys import KeyCache, Principal
    from ..runtime import Runtime
    from ..serving.engine import Engine
    from ..serving.routing import Router
    from ..settings import Settings
    from ..store import Store
    from ..store.archive import Archive
    from ..store.artifacts import LocalArtifactStore, RemoteArtifactStore
    from ..store.writer import Writer

T = TypeVar("T")


class ServiceBase:
    """The attributes and helpers the service's parts share."""

    settings: Settings
    runtime: Runtime
    store: Store
    writer: Writer
    artifacts: LocalArtifactStore | RemoteArtifactStore
    router: Router
    metrics: Metrics
    engine: Engine
    archive: Archive  # the ledger rows retention moved out of the table
    keys: KeyCache
    webhook_transport: httpx.AsyncBaseTransport | None
    _jobs_wake: asyncio.Event

    def _read(self, fn: Callable[[Connection], T]) -> Awaitable[T]:
        return self.runtime.read(fn)

    async def _change(self, principal: Principal, fn: Callable[[Connection], T]) -> T:
        """An admin's registry change: run on the writer, then every route sees it."""
        principal.require("admin")
        out = await self.writer.run(fn)
        await self._after_registry_change()
        return out

    async def _after_registry_change(self) -> None:
        await self.runtime.registry_changed()

    async def _set_model_document(
        self,
        principal: Principal,
        name: str,
        doc: Any,
        key: str,
        check: Callable[[Any], Any],
        *,
        learned_only: bool = False,
        audit: Callable[[Any], Any] | None = None,
    ) -> dict[str, Any]:
        """Store ``{key: {...}}`` (or ``{key: null}``) in the model's column ``key``, audited as
        the event ``<key>_set`` (with ``audit(value)`` when given: what the event may show);
        every server's release loop picks it up. ``learned_only`` refuses models pushed as
        artifacts (409)."""
        if not isinstance(doc, dict) or set(doc) != {key}:
            raise InvalidInput(
                f'the body must be {{"{key}": {{...}}}} or {{"{key}": null}}',
                details=[{"field": "body", "reason": f'expected an object with the key "{key}"'}],
            )
        value = check(doc[key])

        def store(conn: Connection) -> dict[str, Any]:
            if learned_only:
                learning.spec_of(conn, name)
            model = registry.model_row(conn, name)
            conn.execute(models.update().where(models.c.id == model.id).values({key: value}))
            shown = audit(value) if audit is not None else value
            releases.record_event(conn, model.id, f"{key}_set", principal.consumer, {key: shown})
            registry.bump_generation(conn)
            return {"model": name, key: value}

        return await self._change(principal, store)
