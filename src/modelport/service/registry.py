"""The registry's operations: models, versions, aliases and their history, pushes, artifacts,
per-model serving settings, segment keys.

A part of :class:`modelport.service.core.Service`: the methods assume its attributes (see
:class:`modelport.service.base.ServiceBase`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from ..registry import models as registry
from ..registry.keys import Principal
from ..registry.push import push as push_version
from ..serving import segments
from .base import ServiceBase


class RegistryOps(ServiceBase):
    """The registry's operations."""

    async def create_model(
        self,
        principal: Principal,
        name: str,
        task: str,
        description: str,
        segment_by: str | None = None,
    ) -> dict[str, Any]:
        """An empty model (and its segment key), in one transaction: both or neither."""
        principal.require("admin")
        if segment_by is not None:
            segments.check_segment_key(segment_by, None)

        def create(conn: Connection) -> dict[str, Any]:
            out = registry.create_model(
                conn, name, task=task, description=description, actor=principal.consumer
            )
            if segment_by is not None:
                doc = {"field": segment_by}
                segments.set_segment_key(conn, name, doc, actor=principal.consumer)
                out["segment_by"] = segment_by
            return out

        out = await self.writer.run(create)
        await asyncio.to_thread(self.router.refresh)
        return out

    async def list_models(self, principal: Principal) -> list[dict[str, Any]]:
        principal.require("read")
        return await self._read(registry.list_models)

    async def get_model(self, principal: Principal, name: str) -> dict[str, Any]:
        principal.require("read")
        return await self._read(lambda c: registry.get_model(c, name))

    async def list_versions(self, principal: Principal, name: str) -> list[dict[str, Any]]:
        principal.require("read")
        return await self._read(lambda c: registry.list_versions(c, name))

    async def get_version(
        self, principal: Principal, name: str, version: int, *, stats: bool = False
    ) -> dict[str, Any]:
        principal.require("read")
        return await self._read(lambda c: registry.get_version(c, name, version, stats=stats))

    async def set_alias(
        self, principal: Principal, name: str, alias: str, version: int, reason: str = ""
    ) -> dict[str, Any]:
        principal.require("admin")
        out = await self.writer.run(
            lambda c: registry.set_alias(
                c, name, alias, version, actor=principal.consumer, reason=reason
            )
        )
        await self._after_registry_change()
        return out

    async def rollback(
        self, principal: Principal, name: str, alias: str, reason: str = ""
    ) -> dict[str, Any]:
        principal.require("admin")
        out = await self.writer.run(
            lambda c: registry.rollback_alias(
                c, name, alias, actor=principal.consumer, reason=reason
            )
        )
        await self._after_registry_change()
        return out

    async def alias_history(
        self, principal: Principal, name: str, alias: str | None = None
    ) -> list[dict[str, Any]]:
        principal.require("read")
        return await self._read(lambda c: registry.alias_history(c, name, alias))

    async def push(
        self, principal: Principal, name: str, artifact: Path, meta: dict[str, Any]
    ) -> dict[str, Any]:
        """Check an artifact and add it as a new version (:func:`modelport.registry.push.push`)."""
        return await push_version(self.runtime, principal, name, artifact, meta)

    async def artifact(self, principal: Principal, name: str, version: int) -> tuple[Path, str]:
        """A version's artifact file and sha256, for batch scoring (predict and read scopes)."""
        principal.require("predict")
        principal.require("read")
        row = await self._read(lambda c: registry.version_row(c, name, version))
        return self.artifacts.local_path(row.sha256), str(row.sha256)

    async def get_serving(self, principal: Principal, name: str) -> dict[str, Any]:
        principal.require("read")
        return await self._read(lambda c: registry.get_serving(c, name))

    async def set_serving(self, principal: Principal, name: str, config: Any) -> dict[str, Any]:
        """Per-model serving settings (batching); every server applies them on its next refresh."""
        principal.require("admin")
        out = await self.writer.run(lambda c: registry.set_serving(c, name, config))
        await asyncio.to_thread(self.router.refresh)
        return out

    async def get_segments(self, principal: Principal, name: str) -> dict[str, Any]:
        """A model's segment key, its segments (versions, aliases) and which are loaded here."""
        principal.require("read")
        live = dict((self.router.live.get(name) or segments.LiveSegments()).items())
        return await self._read(lambda c: segments.describe(c, name, live))

    async def set_segments(self, principal: Principal, name: str, doc: Any) -> dict[str, Any]:
        """A pushed model's segment key (``{"field": null}`` removes it); audited."""
        return await self._change(
            principal,
            lambda c: segments.set_segment_key(c, name, doc, actor=principal.consumer),
        )
