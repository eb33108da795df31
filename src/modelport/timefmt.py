"""Times at the API edge: epoch seconds inside, ISO-8601 (UTC) outside."""

from __future__ import annotations

from datetime import datetime, timezone

from .errors import InvalidInput, InvalidRequest

#: Seconds per unit of a window such as ``15m``, ``2h`` or ``7d``.
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
#: The longest window accepted: 100 years.
MAX_WINDOW = 100 * 365 * 86400.0
#: Times accepted: from the epoch to the last second of the year 9999 (what ISO-8601 can say).
MAX_TIME = 253402300799.0


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
        seconds = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequest(
                f"{field}: expected an ISO-8601 time or epoch seconds, got {value!r}",
                details=[{"field": field, "reason": "not a time"}],
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        seconds = parsed.timestamp()
    if not 0 <= seconds <= MAX_TIME:  # NaN fails too
        raise InvalidInput(
            f"{field}: expected a time from 1970 to 9999, got {value!r}",
            details=[
                {"field": field, "reason": f"out of range (0 to {MAX_TIME:.0f} epoch seconds)"}
            ],
        )
    return seconds


def parse_window(
    value: str | float | None, field: str = "window", default: float = 3600.0
) -> float:
    """A time window as seconds: ``90`` (seconds), ``15m``, ``2h``, ``7d`` or ``1w``.

    Bad or non-positive values raise a 422 naming ``field``.
    """
    if value is None or value == "":
        return default
    text = str(value).strip().lower()
    unit = _UNITS.get(text[-1:]) if text else None
    number = text[:-1] if unit is not None else text
    try:
        seconds = float(number) * (unit or 1.0)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= MAX_WINDOW:  # NaN and infinity fail too
        raise InvalidInput(
            f"{field}: expected a positive duration of at most 100 years, such as 90, 15m, 2h "
            f"or 7d, got {value!r}",
            details=[{"field": field, "reason": "not a positive duration (s, m, h, d, w) <= 100y"}],
        )
    return seconds
