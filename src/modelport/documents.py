"""Request documents checked by one declaration: the pydantic model that also documents them.

A settings document (a model's serving settings, its retraining triggers, its promotion gate)
is declared once, as a :class:`Document` subclass next to the code that uses it; the API
publishes the same class in OpenAPI, and :func:`checked` validates a request's document
with it, mapping every problem to modelport's 422 shape: the field's dotted path and a
reason a person can act on ("expected a number from 0 to 60000", "unknown field; known:
...").

Numbers are JSON numbers: ``true`` and ``"5"`` are refused where a number is expected (pydantic
would take them as 1 and 5), while ``3.0`` is a whole number.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from .errors import InvalidInput, InvalidRequest


def _json_number(value: Any) -> Any:
    if isinstance(value, bool | str):
        raise ValueError("not a number")
    return value


#: A JSON number (not a boolean, not text).
Number = Annotated[float, BeforeValidator(_json_number)]
#: A whole JSON number (``3`` or ``3.0``; not a boolean, not text).
Whole = Annotated[int, BeforeValidator(_json_number)]


class Document(BaseModel):
    """A request document: unknown keys are refused, not ignored (a misspelt key must not
    silently do nothing)."""

    model_config = ConfigDict(extra="forbid")


D = TypeVar("D", bound=BaseModel)


def checked(model: type[D], doc: Any, what: str, path: str = "") -> D:
    """``doc`` as ``model``; else :class:`InvalidInput` naming every problem: the message
    says ``invalid <what>``, each field is a dotted path under ``path`` (the document's key in
    its request body; "" when the document is the body)."""
    if not isinstance(doc, dict):  # the body itself (400), or a field of it (422)
        refused = InvalidInput if path else InvalidRequest
        raise refused(
            f"{what} must be an object",
            details=[{"field": path or "body", "reason": "not an object"}],
        )
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        details = [
            {
                "field": ".".join([*([path] if path else []), *map(str, e["loc"])]),
                "reason": _reason(model, e),
            }
            for e in exc.errors()
        ]
        first = details[0]
        raise InvalidInput(
            f"invalid {what}: {first['field']}: {first['reason']}", details=details
        ) from None


def _reason(model: type[BaseModel], error: Any) -> str:
    """Pydantic's error as a reason: numbers with their range, unknown keys with the known."""
    owner, field = _field_of(model, error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden" and owner is not None:
        return f"unknown field; known: {', '.join(owner.model_fields)}"
    if field is not None and kind != "missing":
        number = _number_range(field)
        if number is not None:
            return number
    if kind == "missing":
        return "missing"
    if kind == "value_error":  # a validator's own reason
        return str(error["ctx"]["error"])
    return str(error["msg"])


def _field_of(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, Any]:
    """The model that holds the field at ``loc``, and the field (None where the path leaves
    the declared models, or names an unknown key)."""
    owner: type[BaseModel] | None = model
    for part in loc[:-1]:
        inner = owner.model_fields.get(part) if owner and isinstance(part, str) else None
        owner = _model_in(inner.annotation) if inner is not None else None
    last = loc[-1] if loc else None
    field = owner.model_fields.get(last) if owner and isinstance(last, str) else None
    return owner, field


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class in an annotation such as ``Replay | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _number_range(field: Any) -> str | None:
    """ "expected an integer from 1 to 1024" for a bounded number field, else None."""
    annotation = field.annotation
    args = [a for a in getattr(annotation, "__args__", (annotation,)) if a is not type(None)]
    base = getattr(args[0], "__origin__", args[0]) if args else None
    if base not in (int, float):
        return None
    what = "an integer" if base is int else "a number"
    low: Any = None
    high: Any = None
    strict_low = strict_high = False
    for meta in field.metadata:
        if isinstance(meta, Ge):
            low = meta.ge
        elif isinstance(meta, Gt):
            low, strict_low = meta.gt, True
        elif isinstance(meta, Le):
            high = meta.le
        elif isinstance(meta, Lt):
            high, strict_high = meta.lt, True
    above, below = (">" if strict_low else ">="), ("<" if strict_high else "<=")
    if low is not None and high is not None:
        if not (strict_low or strict_high):
            return f"expected {what} from {_shown(low)} to {_shown(high)}"
        return f"expected {what} {above} {_shown(low)} and {below} {_shown(high)}"
    if low is not None:
        return f"expected {what} {above} {_shown(low)}"
    if high is not None:
        return f"expected {what} {below} {_shown(high)}"
    return f"expected {what}"


def _shown(bound: Any) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"
