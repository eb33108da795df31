"""A scoring request's rows, as each protocol carries them.

The engine learns which version answers a request (and so its schema and the consumer's
adapter) only after routing, so a request arrives as a :class:`Payload`: parsed, not yet
validated. ``table(served, adapter)`` validates it against the version it reached;
``unit(field)`` gives the key that keeps a unit on one arm of a split (``field`` None: the
``X-Unit-ID`` header) or a segmented model's segment value. :class:`NativePayload` is the
``/v1`` predict body; the Open Inference Protocol's is :class:`modelport.api.oip.InferPayload`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import InvalidInput, InvalidRequest
from ..ids import MAX_ID, is_version_number
from ..inputs.rows import table_from_payload

if TYPE_CHECKING:
    from ..inputs.adapters import Adapter
    from ..inputs.table import Table
    from .routing import Served

#: The keys a native predict body may have.
_PREDICT_KEYS = frozenset({"inputs", "columns", "data", "version", "alias"})


class Payload(Protocol):
    """A request's rows, read once the version that answers it is known."""

    def table(self, served: Served, adapter: Adapter | None) -> Table: ...

    def unit(self, field: str | None) -> str | None: ...


@dataclass(frozen=True)
class NativePayload:
    """A ``/v1`` predict body: ``{"inputs": [...]}`` or ``{"columns", "data"}``, and the
    version or alias it asks for."""

    body: dict[str, Any]
    max_rows: int
    unit_id: str | None
    version: int | None
    alias: str | None

    @classmethod
    def parse(cls, body: Any, max_rows: int, unit_id: str | None) -> NativePayload:
        """Check the body's shape (its rows are checked against the version's schema later)."""
        if not isinstance(body, dict):
            raise InvalidRequest(
                "the body must be a JSON object",
                details=[{"field": "body", "reason": "not an object"}],
            )
        unexpected = sorted(set(body) - _PREDICT_KEYS)
        if unexpected:
            # A misspelt "version" must not quietly score with the production alias.
            hint = ""
            if not set(body) & {"inputs", "columns", "data"}:
                # Most often a row sent as the body itself.
                hint = (
                    '; rows go under "inputs" ({"inputs": [{...}, ...]}), or as "columns" '
                    'and "data"'
                )
            raise InvalidInput(
                f"unexpected field(s) in the body: {', '.join(unexpected)}{hint}",
                details=[{"field": k, "reason": "unexpected field"} for k in unexpected],
            )
        version = body.get("version")
        if version is not None and not is_version_number(version):
            raise InvalidInput(
                f"'version' must be a whole number from 1 to {MAX_ID}",
                details=[
                    {"field": "version", "reason": f"expected a whole number from 1 to {MAX_ID}"}
                ],
            )
        alias = body.get("alias")
        if alias is not None and not isinstance(alias, str):
            raise InvalidInput(
                "'alias' must be a string",
                details=[{"field": "alias", "reason": "expected a string"}],
            )
        if version is not None and alias is not None:
            raise InvalidInput(
                "give 'version' or 'alias', not both",
                details=[{"field": "version", "reason": "conflicts with alias"}],
            )
        return cls(body, max_rows, unit_id, version, alias)

    def table(self, served: Served, adapter: Adapter | None) -> Table:
        return table_from_payload(served.schema, self.body, self.max_rows, adapter)

    def unit(self, field: str | None) -> str | None:
        """The ``X-Unit-ID`` header (``field`` None), else ``field``'s value in the first row."""
        if field is None:
            return self.unit_id
        inputs = self.body.get("inputs")
        if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
            value = inputs[0].get(field)
        else:
            columns, data = self.body.get("columns"), self.body.get("data")
            if not (
                isinstance(columns, list) and field in columns and isinstance(data, list) and data
            ):
                return None
            first = data[0]
            index = columns.index(field)
            value = first[index] if isinstance(first, list) and index < len(first) else None
        return None if value is None else str(value)


def check_idempotency_key(value: str) -> str:
    """The ``Idempotency-Key`` header's value, checked."""
    if not value or len(value) > 200:
        raise InvalidRequest(
            "the Idempotency-Key header must be 1 to 200 characters",
            details=[{"field": "Idempotency-Key", "reason": "expected 1 to 200 characters"}],
        )
    return value
