"""A scoring request's rows, as each protocol carries them.

The engine learns which version answers a request (and so its schema and the consumer's
adapter) only after routing, so a request arrives as a :class:`Payload`: parsed, not yet
validated. ``table(served, adapter)`` validates it against the version it reached;
``unit(field)`` gives the key that keeps a unit on one arm of a split (``field`` None: the
``X-Unit-ID`` header) or a segmented model's segment value. :class:`NativePayload` is the
``/v1`` predict body; the Open Inference Protocol's is :class:`modelport.api.oip.InferPayload`.

A native body can come as its bytes (:class:`RawBody`) with a hint of the schema that will
likely answer it (the one that answered the consumer's last request): when that schema's typed
reader (:mod:`modelport.inputs.typed`) takes the body, its rows are ready before routing, and
they are used when the version reached has that schema and no adapter; otherwise the body is
parsed and read the general way, as it is when the reader does not take it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import InvalidInput, InvalidRequest
from ..ids import MAX_ID, is_version_number
from ..inputs.rows import table_from_payload
from ..inputs.table import Table

if TYPE_CHECKING:
    from ..inputs.adapters import Adapter
    from ..inputs.schema import Schema
    from ..inputs.typed import Read
    from .routing import Served

#: The keys a native predict body may have.
_PREDICT_KEYS = frozenset({"inputs", "columns", "data", "version", "alias"})


class Payload(Protocol):
    """A request's rows, read once the version that answers it is known."""

    def table(self, served: Served, adapter: Adapter | None) -> Table: ...

    def unit(self, field: str | None) -> str | None: ...


@dataclass(frozen=True)
class RawBody:
    """A native predict body as it arrived, and the server's JSON parser for bodies."""

    data: bytes
    loads: Callable[[bytes], Any]


class NativePayload:
    """A ``/v1`` predict body: ``{"inputs": [...]}`` or ``{"columns", "data"}``, and the
    version or alias it asks for."""

    __slots__ = (
        "_body",
        "_lent",
        "_raw",
        "_read",
        "alias",
        "max_rows",
        "needs_body",
        "unit_id",
        "version",
    )

    def __init__(
        self,
        body: dict[str, Any] | None,
        max_rows: int,
        unit_id: str | None,
        version: int | None,
        alias: str | None,
        *,
        raw: RawBody | None = None,
        read: tuple[Schema, Read] | None = None,
    ) -> None:
        self._body = body
        self._raw = raw
        self._read = read  # rows the typed reader made, and the schema they were read for
        self._lent = False  # those rows went to a table: a later one gets a copy
        # Whether answering read the parsed body (an adapter, a segment key): then the typed
        # reader's work would be spent twice, and the engine gives no hint for the next body.
        self.needs_body = False
        self.max_rows = max_rows
        self.unit_id = unit_id
        self.version = version
        self.alias = alias

    @property
    def body(self) -> dict[str, Any]:
        """The parsed body (parsed now when the typed reader took its bytes)."""
        if self._body is None:
            assert self._raw is not None
            self._body = self._raw.loads(self._raw.data)
        return self._body

    @classmethod
    def read(
        cls, raw: RawBody, max_rows: int, unit_id: str | None, hint: Schema | None
    ) -> NativePayload:
        """A body from its bytes: by ``hint``'s typed reader when it takes them, else parsed
        and checked by :meth:`parse`."""
        reader = hint.body_reader() if hint is not None else None
        if reader is not None:
            read = reader.read(raw.data, max_rows)
            if read is not None:
                assert hint is not None
                return cls(
                    None, max_rows, unit_id, read.version, read.alias, raw=raw, read=(hint, read)
                )
        return cls.parse(raw.loads(raw.data), max_rows, unit_id)

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
        return self.rows(served.schema, adapter)

    def rows(self, schema: Schema, adapter: Adapter | None) -> Table:
        """The body's rows validated by ``schema`` (through ``adapter``)."""
        if adapter is not None:
            self.needs_body = True
        elif self._read is not None:
            read_for, read = self._read
            if schema is read_for or schema == read_for:
                # A second table (a shadow copy, a canary's fallback) gets its own rows, so no
                # model sees rows another one changed in place.
                matrix = read.matrix.copy() if self._lent else read.matrix
                self._lent = True
                return Table(schema, matrix=matrix)
        return table_from_payload(schema, self.body, self.max_rows, adapter)

    def unit(self, field: str | None) -> str | None:
        """The ``X-Unit-ID`` header (``field`` None), else ``field``'s value in the first row."""
        if field is None:
            return self.unit_id
        self.needs_body = True
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
