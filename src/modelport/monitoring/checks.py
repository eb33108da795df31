"""A model's monitoring settings, and the background drift check that acts on them.

The settings live in ``models.monitoring`` (set with ``PUT /v1/models/{name}/monitoring``,
audited as a ``monitoring_set`` event):

    {"thresholds": {"psi": 0.2, "ks_pvalue": 0.01, "chi2_pvalue": 0.01, "min_rows": 100},
     "window": "1h", "webhook": "https://hooks.example.com/modelport"}

Every key is optional; absent thresholds take the defaults. Every ``drift_check_seconds`` each
server judges the drift of each version with traffic in the model's window. Whether a version
is drifted is kept in ``drift_state``; a server changes it only from the state it read, so
when several servers share a store and notice the same change, one records the ``drift`` (or
``drift_cleared``) event and calls the webhook. A webhook that fails is logged and recorded as
a ``webhook_failed`` event; it never stops the check.

A webhook URL often carries its secret (basic auth, a token path such as Slack's
``/services/T000/B000/SECRET``, a token in the query). Only admins see it whole (``GET
.../monitoring``); other keys, the events (``monitoring_set``, ``webhook_failed``) and the log
see it through :func:`masked_url`: scheme, host and port, the rest masked.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from pydantic import Field, field_validator
from sqlalchemy.engine import Connection

from ..documents import Document, Number, Whole, checked
from ..errors import InvalidInput
from ..releases import consumers as releases
from ..store.tables import drift_state
from ..timefmt import iso, parse_window

log = logging.getLogger("modelport.monitoring")

DEFAULT_THRESHOLDS: dict[str, Any] = {
    "psi": 0.2,
    "ks_pvalue": 0.01,
    "chi2_pvalue": 0.01,
    "min_rows": 100,
}
#: The window the background check looks at, unless the model's settings say otherwise.
DEFAULT_WINDOW = 3600.0


class Thresholds(Document):
    """When drift is declared (each key optional; the server's defaults fill the rest)."""

    psi: Number | None = Field(None, gt=0, allow_inf_nan=False, description="Default 0.2.")
    ks_pvalue: Number | None = Field(None, gt=0, lt=1, description="Default 0.01.")
    chi2_pvalue: Number | None = Field(None, gt=0, lt=1, description="Default 0.01.")
    min_rows: Whole | None = Field(None, ge=1, description="Default 100.")


class Monitoring(Document):
    """A model's monitoring settings: drift thresholds, the window the background check
    reads, and the webhook told when drift starts or ends."""

    thresholds: Thresholds | None = None
    window: str | Number | None = Field(None, description="A duration: 3600, 15m, 2h, 7d.")
    webhook: str | None = Field(None, description="An http(s) URL.")

    @field_validator("window")
    @classmethod
    def _window(cls, value: Any) -> Any:
        if value is not None:
            try:
                parse_window(value, "monitoring.window")
            except InvalidInput as exc:
                raise ValueError((exc.details or [{}])[0].get("reason", str(exc))) from None
        return value

    @field_validator("webhook")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("expected an http(s) URL")
        return value


def check_monitoring(doc: Any) -> dict[str, Any] | None:
    """Monitoring settings, checked (None removes them); problems name their field."""
    if doc is None:
        return None
    return checked(Monitoring, doc, "monitoring settings", "monitoring").model_dump(
        exclude_none=True
    )


MASK = "***"


def masked_url(url: str) -> str:
    """``url`` with its userinfo, path and query masked: ``http://***@host:port/***?***``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return MASK
    host = parts.hostname or ""
    netloc = ("***@" if "@" in parts.netloc else "") + (f"[{host}]" if ":" in host else host)
    netloc += f":{port}" if port is not None else ""
    path = "/" + MASK if parts.path.strip("/") else parts.path
    return urlunsplit((parts.scheme, netloc, path, MASK if parts.query else "", ""))


def masked(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """Monitoring settings with the webhook URL masked (see :func:`masked_url`)."""
    if not doc or not isinstance(doc.get("webhook"), str):
        return doc
    return {**doc, "webhook": masked_url(doc["webhook"])}


def scrubbed(text: str, url: str) -> str:
    """``text`` (an error message) without the secret parts of ``url`` it may quote."""
    text = text.replace(url, masked_url(url))
    try:
        parts = urlsplit(url)
        pieces = [parts.netloc.rpartition("@")[0], parts.password, parts.path, parts.query]
    except ValueError:
        return text
    # Pieces quoted apart from the URL (or re-encoded); short ones would garble the message
    # and hide nothing.
    for piece in sorted((p for p in pieces if p and len(p) >= 4), key=len, reverse=True):
        text = text.replace(piece, MASK)
    return text


def shown_event(kind: str, detail: Any) -> Any:
    """An event's detail as readers see it: webhook URLs masked (events recorded before
    URLs were masked when stored held them whole)."""
    if not isinstance(detail, dict):
        return detail
    if kind == "monitoring_set" and isinstance(detail.get("monitoring"), dict):
        return {**detail, "monitoring": masked(detail["monitoring"])}
    if kind == "webhook_failed" and isinstance(detail.get("url"), str):
        return {**detail, "url": masked_url(detail["url"])}
    return detail


def thresholds_of(monitoring: dict[str, Any] | None) -> dict[str, Any]:
    """The effective thresholds: the model's, over the defaults."""
    return {**DEFAULT_THRESHOLDS, **((monitoring or {}).get("thresholds") or {})}


def window_of(monitoring: dict[str, Any] | None) -> float:
    return parse_window((monitoring or {}).get("window"), "window", DEFAULT_WINDOW)


def transition(
    conn: Connection,
    model_id: int,
    version: int,
    drifted: bool,
    detail: dict[str, Any],
) -> str | None:
    """Record a version's drift state; the event kind when this call changed it, else None.

    The update is conditional on the state read, so of several servers that see the same
    change, one gets the row and records the event.
    """
    now = time.time()
    row = conn.execute(
        sa.select(drift_state.c.drifted).where(
            drift_state.c.model_id == model_id, drift_state.c.version == version
        )
    ).first()
    if row is None:
        conn.execute(
            drift_state.insert().values(
                model_id=model_id, version=version, drifted=drifted, detail=detail, changed_at=now
            )
        )
        changed = drifted  # a first look that finds no drift is no news
    elif bool(row.drifted) == drifted:
        return None
    else:
        changed = bool(
            conn.execute(
                drift_state.update()
                .where(
                    drift_state.c.model_id == model_id,
                    drift_state.c.version == version,
                    drift_state.c.drifted == bool(row.drifted),
                )
                .values(drifted=drifted, detail=detail, changed_at=now)
            ).rowcount
        )
    if not changed:
        return None
    kind = "drift" if drifted else "drift_cleared"
    releases.record_event(conn, model_id, kind, releases.SYSTEM_ACTOR, detail)
    return kind


def event_detail(version: dict[str, Any], window: dict[str, Any]) -> dict[str, Any]:
    """What a drift event (and its webhook) says about a version."""
    judged = [*version["fields"], *([version["predictions"]] if version["predictions"] else [])]
    return {
        "version": version["version"],
        "window": window,
        "rows": version["rows"],
        "drifted_fields": [f["field"] for f in judged if f["drifted"]],
        "reasons": {f["field"]: f["reasons"] for f in judged if f["drifted"]},
    }


def webhook_payload(name: str, kind: str, detail: dict[str, Any]) -> dict[str, Any]:
    return {"event": kind, "model": name, "time": iso(time.time()), **detail}


def drift_report(
    conn: Connection,
    name: str,
    *,
    window: str | float | None = None,
    until: float | None = None,
    version: int | None = None,
    max_rows: int = 50_000,
    with_settings: bool = False,
    segment: str | None = None,
) -> dict[str, Any]:
    """The answer of ``GET /v1/models/{name}/drift`` (window: the model's, by default);
    ``with_settings`` adds the model's monitoring settings (for the background check)."""
    from ..registry import models as registry
    from . import drift, performance

    model = registry.model_row(conn, name)
    span = parse_window(window, "window", window_of(model.monitoring))
    end = until if until is not None else time.time()
    thresholds = thresholds_of(model.monitoring)
    out = {
        "model": name,
        "window": performance.window_dict(end - span, end),
        "thresholds": thresholds,
        "versions": drift.report(
            conn,
            name,
            since=end - span,
            until=end,
            thresholds=thresholds,
            version=version,
            max_rows=max_rows,
            segment=segment,
        ),
    }
    if segment is not None:
        out["segment"] = segment
    if with_settings:
        out["settings"] = model.monitoring
    return out


def check_reference_window(doc: Any) -> tuple[float, float]:
    """``{"since": time, "until": time}`` (ISO-8601 or epoch seconds), checked."""
    if not isinstance(doc, dict) or set(doc) - {"since", "until"} or "since" not in doc:
        raise InvalidInput(
            'the body must be {"since": time, "until": time} (until defaults to now)',
            details=[{"field": "body", "reason": "expected an object with since and until"}],
        )
    since = _time(doc.get("since"), "since")
    until = _time(doc.get("until"), "until") if doc.get("until") is not None else time.time()
    assert since is not None
    if until <= since:
        raise InvalidInput(
            "until must be after since", details=[{"field": "until", "reason": "not after since"}]
        )
    return since, until


def _time(value: Any, field: str) -> float:
    from ..errors import InvalidRequest
    from ..timefmt import parse_time

    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise InvalidInput(
            f"{field}: expected an ISO-8601 time or epoch seconds",
            details=[{"field": field, "reason": "not a time"}],
        )
    try:
        parsed = parse_time(str(value), field)
    except InvalidRequest as exc:
        raise InvalidInput(str(exc), details=exc.details) from None
    if parsed is None:
        raise InvalidInput(f"{field}: missing", details=[{"field": field, "reason": "missing"}])
    return parsed


def set_reference_from_traffic(
    conn: Connection,
    name: str,
    version: int,
    since: float,
    until: float,
    actor: str,
    max_rows: int,
) -> dict[str, Any]:
    """Make a window of the version's logged traffic its drift reference; audited."""
    from ..errors import Conflict
    from ..registry import models as registry
    from ..store.tables import versions
    from . import drift

    row = registry.version_row(conn, name, version)
    reference = drift.reference_from_traffic(conn, name, version, since, until, max_rows=max_rows)
    if reference is None:
        raise Conflict(
            f"version {version} of {name!r} served no predictions between "
            f"{iso(since)} and {iso(until)}",
            details=[{"field": "since", "reason": "no traffic of this version in the window"}],
        )
    conn.execute(versions.update().where(versions.c.id == row.id).values(reference=reference))
    detail = {
        "version": version,
        "since": iso(since),
        "until": iso(until),
        "rows": reference["rows"],
        "sample_rows": len(reference["sample"]),
    }
    releases.record_event(conn, row.model_id, "reference_set", actor, detail)
    conn.execute(
        drift_state.delete().where(
            drift_state.c.model_id == row.model_id, drift_state.c.version == version
        )
    )
    return {"model": name, "source": "traffic", **detail}


def judged(entry: dict[str, Any], thresholds: dict[str, Any]) -> bool:
    """Whether a version's drift entry is a verdict (a reference, and enough rows)."""
    return bool(entry["reference"]) and entry["rows"] >= thresholds["min_rows"]
