"""Monitoring: live performance from feedback, drift (on request and in the background, with
webhooks), monitoring settings, the dashboard's views.

A part of :class:`modelport.service.core.Service`: the methods assume its attributes (see
:class:`modelport.service.base.ServiceBase`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any

from sqlalchemy.engine import Connection

from ..monitoring import checks as monitoring
from ..monitoring import fit, performance, timeline
from ..registry import models as registry
from ..registry.keys import Principal
from ..releases import consumers as releases
from ..timefmt import parse_window
from .base import ServiceBase

log = logging.getLogger("modelport.service")


class MonitoringOps(ServiceBase):
    """Monitoring."""

    async def performance(
        self,
        principal: Principal,
        name: str,
        *,
        window: str | None = None,
        version: int | None = None,
        buckets: int = 24,
        consumer: str | None = None,
        segment: str | None = None,
    ) -> dict[str, Any]:
        """Live metrics per version from feedback labels, over a window cut into buckets
        (of one consumer's, one segment's predictions when given)."""
        principal.require("read")
        span = parse_window(window, "window", 86400.0)
        timeline.check_buckets(buckets)
        until = time.time()
        return await self._read(
            functools.partial(
                performance.report,
                name=name,
                since=until - span,
                until=until,
                version=version,
                buckets=buckets,
                consumer=consumer,
                segment=segment,
                max_rows=self.settings.performance_max_rows,
                archive=self.archive,
            )
        )

    async def drift(
        self,
        principal: Principal,
        name: str,
        *,
        window: str | None = None,
        version: int | None = None,
        segment: str | None = None,
    ) -> dict[str, Any]:
        """Per version with traffic in the window (of one segment when given): its inputs and
        predictions against its reference."""
        principal.require("read")
        return await self._read(
            functools.partial(
                monitoring.drift_report,
                name=name,
                window=window,
                version=version,
                segment=segment,
                max_rows=self.settings.drift_max_rows,
            )
        )

    async def get_monitoring(self, principal: Principal, name: str) -> dict[str, Any]:
        principal.require("read")

        def run(conn: Connection) -> dict[str, Any]:
            doc = registry.model_row(conn, name).monitoring
            if not principal.allows("admin"):
                doc = monitoring.masked(doc)  # the webhook URL may hold its secret
            return {
                "model": name,
                "monitoring": doc,
                "thresholds": monitoring.thresholds_of(doc),
                "window_seconds": monitoring.window_of(doc),
            }

        return await self._read(run)

    async def set_monitoring(self, principal: Principal, name: str, doc: Any) -> dict[str, Any]:
        """Drift thresholds, window and webhook (``{"monitoring": null}`` removes them)."""
        return await self._set_model_document(
            principal, name, doc, "monitoring", monitoring.check_monitoring, audit=monitoring.masked
        )

    async def set_reference(
        self, principal: Principal, name: str, version: int, doc: Any
    ) -> dict[str, Any]:
        """A version's drift reference from a window of its own logged traffic (audited)."""
        principal.require("admin")
        since, until = monitoring.check_reference_window(doc)
        return await self.writer.run(
            functools.partial(
                monitoring.set_reference_from_traffic,
                name=name,
                version=version,
                since=since,
                until=until,
                actor=principal.consumer,
                max_rows=self.settings.drift_max_rows,
            )
        )

    async def check_drift(self) -> None:
        """One round of the background drift check: a ``drift`` or ``drift_cleared`` event
        (and the model's webhook) when a version's verdict changes."""
        for name, model in list(self.router.models.items()):
            found = await self._read(
                functools.partial(
                    monitoring.drift_report,
                    name=name,
                    max_rows=self.settings.drift_max_rows,
                    with_settings=True,
                )
            )
            settings = found.pop("settings", None) or {}
            for entry in found["versions"]:
                if not monitoring.judged(entry, found["thresholds"]):
                    continue
                detail = monitoring.event_detail(entry, found["window"])
                try:
                    kind = await self.writer.run(
                        functools.partial(
                            monitoring.transition,
                            model_id=model["id"],
                            version=entry["version"],
                            drifted=entry["drifted"],
                            detail=detail,
                        )
                    )
                except Exception as exc:  # another server recorded it first
                    log.info("drift state of %s v%s: %s", name, entry["version"], exc)
                    continue
                if kind is not None:
                    log.warning("%s: %s version %s %s", kind, name, entry["version"], detail)
                    if settings.get("webhook"):
                        payload = monitoring.webhook_payload(name, kind, detail)
                        await self._webhook(model["id"], settings["webhook"], payload)

    async def _webhook(self, model_id: int, url: str, payload: dict[str, Any]) -> None:
        """POST a monitoring event; a failure is logged and recorded, never raised."""
        import httpx

        timeout = self.settings.webhook_timeout_seconds
        try:
            async with httpx.AsyncClient(transport=self.webhook_transport, timeout=timeout) as http:
                response = await asyncio.wait_for(http.post(url, json=payload), timeout * 2)
                response.raise_for_status()
        except Exception as exc:
            # The URL may hold its secret, and errors quote it: both go out masked.
            error = monitoring.scrubbed(f"{type(exc).__name__}: {exc}", url)[:500]
            shown = monitoring.masked_url(url)
            log.warning("webhook %s for %s failed: %s", shown, payload["model"], error)
            detail = {"url": shown, "event": payload["event"], "error": error}
            with contextlib.suppress(Exception):
                await self.writer.run(
                    lambda c: releases.record_event(
                        c, model_id, "webhook_failed", releases.SYSTEM_ACTOR, detail
                    )
                )

    async def timeline(
        self,
        principal: Principal,
        name: str,
        *,
        seconds: float,
        buckets: int,
        segment: str | None = None,
    ) -> dict[str, Any]:
        """Requests, rows, errors and latency per version and time bucket (of one segment)."""
        principal.require("read")
        return await self._read(
            lambda c: timeline.timeline(c, name, seconds=seconds, buckets=buckets, segment=segment)
        )

    async def recent_predictions(
        self, principal: Principal, name: str, limit: int
    ) -> dict[str, Any]:
        """The newest predictions, newest first, with their current feedback."""
        principal.require("read")
        return await self._read(lambda c: timeline.recent(c, name, limit))

    async def fit_view(self, principal: Principal, name: str, points: int) -> dict[str, Any]:
        """A one-input regression's last labelled points and the production version's line
        over them (scored without touching the ledger)."""
        principal.require("read")
        fit.check_points(points)
        served, alias = await self.router.resolve(name)
        field = fit.input_field(served)
        found = await self._read(lambda c: fit.labelled_points(c, name, field, points))
        line = await asyncio.to_thread(fit.line, served, fit.grid(found, served))
        return {
            "model": name,
            "version": served.version,
            "alias": alias,
            "field": field,
            "points": found,
            "line": line,
        }
