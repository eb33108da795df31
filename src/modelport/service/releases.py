"""Releases per consuming app: traffic policies, consumer pins and adapters, model events,
experiment reports.

A part of :class:`modelport.service.core.Service`: the methods assume its attributes (see
:class:`modelport.service.base.ServiceBase`)."""

from __future__ import annotations

from typing import Any

from ..monitoring import checks as monitoring
from ..registry import models as registry
from ..registry.keys import Principal
from ..releases import consumers as releases
from ..releases import outcomes
from .base import ServiceBase


class ReleaseOps(ServiceBase):
    """Releases per consuming app."""

    async def get_traffic(self, principal: Principal, name: str) -> dict[str, Any]:
        principal.require("read")
        return await self._read(lambda c: releases.get_traffic(c, name))

    async def set_traffic(self, principal: Principal, name: str, doc: Any) -> dict[str, Any]:
        """Replace the traffic policy of a model's unversioned routes (a new experiment)."""
        return await self._change(
            principal, lambda c: releases.set_traffic(c, name, doc, actor=principal.consumer)
        )

    async def list_consumers(self, principal: Principal, name: str) -> list[dict[str, Any]]:
        principal.require("read")
        return await self._read(lambda c: releases.list_consumers(c, name))

    async def get_consumer(self, principal: Principal, name: str, consumer: str) -> dict[str, Any]:
        principal.require("read")
        return await self._read(lambda c: releases.get_consumer(c, name, consumer))

    async def set_consumer(
        self, principal: Principal, name: str, consumer: str, doc: Any
    ) -> dict[str, Any]:
        """Pin a consumer to a version or alias and/or give it an adapter."""
        return await self._change(
            principal,
            lambda c: releases.set_consumer(c, name, consumer, doc, actor=principal.consumer),
        )

    async def delete_consumer(
        self, principal: Principal, name: str, consumer: str
    ) -> dict[str, Any]:
        return await self._change(
            principal,
            lambda c: releases.delete_consumer(c, name, consumer, actor=principal.consumer),
        )

    async def get_adapter(self, principal: Principal, name: str) -> dict[str, Any]:
        principal.require("read")
        return await self._read(
            lambda c: {"model": name, "adapter": registry.model_row(c, name).adapter}
        )

    async def set_adapter(self, principal: Principal, name: str, doc: Any) -> dict[str, Any]:
        """The model-wide adapter (consumers with their own use theirs); null removes it."""
        return await self._change(
            principal, lambda c: releases.set_model_adapter(c, name, doc, actor=principal.consumer)
        )

    async def events(
        self, principal: Principal, name: str, limit: int = 200
    ) -> list[dict[str, Any]]:
        principal.require("read")
        found = await self._read(lambda c: releases.list_events(c, name, limit))
        return [{**e, "detail": monitoring.shown_event(e["kind"], e["detail"])} for e in found]

    async def experiment(
        self,
        principal: Principal,
        name: str,
        *,
        metric: str | None = None,
        revision: int | None = None,
        alpha: float = 0.05,
    ) -> dict[str, Any]:
        """The report of a traffic experiment: per arm, traffic, feedback, the metric with its
        interval, and the difference to the control arm with its test."""
        principal.require("read")
        return await self._read(
            lambda c: outcomes.report_for(c, name, metric=metric, revision=revision, alpha=alpha)
        )
