"""Times at the API edge: epoch seconds inside, ISO-8601 (UTC) outside."""

from __future__ import annotations

from datetime import datetime, timezone

from .errors import InvalidRequest


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO-8601 in UTC with a ``Z``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def parse_time(value: str | None, field: str) -> float | None:
    """An ISO-8601 time (naive means UTC) or epoch seconds, as epoch seconds."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"{field}: expected an ISO-8601 time or epoch seconds, got {value!r}",
            details=[{"field": field, "reason": "not a time"}],
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()
