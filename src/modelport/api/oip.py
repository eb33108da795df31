"""The Open Inference Protocol V2 (REST), as plain data: tensors in, tensors out.

Requests carry tensors as JSON (``data``, nested or flat, row-major) or, with the binary
tensor extension, as raw little-endian bytes after a JSON header whose length is in the
``Inference-Header-Content-Length`` header. A version's schema maps to tensors two ways:

- one input per field, named as the field, shape ``[n]`` (or ``[n, 1]``);
- one 2-D input ``[n, k]`` holding the ``k`` fields in schema order (any name; the metadata
  calls it ``input-0``), as tritonclient and KServe users usually send.

Outputs are ``predict`` and, for classifiers, ``predict_proba`` (``[n, classes]``, the class
labels in the output's ``parameters.classes`` as a JSON list). This module imports no web
framework: :mod:`modelport.api.v2` is the transport.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from ..errors import InvalidInput, InvalidRequest
from ..ids import MAX_ID
from ..inputs.rows import adapted_table
from ..inputs.schema import Field, Schema
from ..inputs.table import Table
from . import payload

if TYPE_CHECKING:
    from ..inputs.adapters import Adapter
    from ..serving.routing import Served

#: OIP datatype -> numpy dtype (little-endian, as the binary extension requires).
NUMPY_TYPES: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
DATATYPES = (*NUMPY_TYPES, "BYTES")
MATRIX_INPUT = "input-0"
#: The longest request id the ledger keeps (as for X-Request-ID).
MAX_ID_LENGTH = 200
OUTPUTS = ("predict", "predict_proba")


def _bad(message: str, field: str) -> InvalidInput:
    return InvalidInput(message, details=[{"field": field, "reason": message}])


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    values: list[Any] | np.ndarray  # flat, row-major: plain values, or an array from binary


@dataclass
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: dict[str, bool] = field(default_factory=dict)  # name -> binary
    binary_default: bool = False


# -- metadata --------------------------------------------------------------------------------------


def field_datatype(f: Field) -> str:
    if f.type == "number":
        return "FP64"
    if f.type == "integer":
        return "INT64"
    if f.type == "boolean":
        return "BOOL"
    if f.type == "category" and all(
        isinstance(c, int | float) and not isinstance(c, bool) for c in f.categories or ()
    ):
        return "FP64"
    return "BYTES"


def model_metadata(
    name: str,
    version: int,
    versions: list[int],
    schema: Schema,
    flavor: str,
    classes: list[Any] | None,
) -> dict[str, Any]:
    types = {field_datatype(f) for f in schema.fields}
    meta: dict[str, Any] = {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": f"modelport_{flavor}",
        "inputs": [
            {"name": f.name, "datatype": field_datatype(f), "shape": [-1]} for f in schema.fields
        ],
        "outputs": [
            {
                "name": "predict",
                "datatype": "BYTES"
                if classes and any(isinstance(c, str) for c in classes)
                else "FP64",
                "shape": [-1],
            }
        ],
        # The other way to send the same inputs: one matrix, fields in schema order.
        "matrix_input": {
            "name": MATRIX_INPUT,
            "datatype": types.pop() if len(types) == 1 else "BYTES",
            "shape": [-1, len(schema.fields)],
            "columns": schema.names,
        },
        "parameters": {"version": str(version)},
    }
    if classes is not None:
        meta["outputs"].append(
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(classes)]}
        )
    return meta


# -- requests --------------------------------------------------------------------------------------


def version_number(text: str | None) -> int | None:
    """The version a request names (None: it names none), from its text."""
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_ID:
        raise InvalidRequest(
            f"version must be a whole number from 1 to {MAX_ID}, got {text!r}",
            details=[{"field": "version", "reason": f"expected a whole number from 1 to {MAX_ID}"}],
        )
    return int(text)


def split_body(body: bytes, header_length: str | None, max_depth: int) -> tuple[Any, bytes]:
    """The JSON header and the binary tail of an infer request."""
    if header_length is None:
        head, tail = body, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise InvalidRequest("Inference-Header-Content-Length must be an integer") from None
        if n < 0 or n > len(body):
            raise InvalidRequest(
                f"Inference-Header-Content-Length {n} does not fit a body of {len(body)} bytes"
            )
        head, tail = body[:n], body[n:]
    return payload.loads(head, max_depth, what="the inference request"), tail


def parse_request(doc: Any, binary: bytes, max_elements: int) -> InferRequest:
    """Check an inference request and decode its tensors."""
    if not isinstance(doc, dict):
        raise _bad("the inference request must be a JSON object", "body")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _bad("'id' must be a string", "id")
    if request_id is not None and len(request_id) > MAX_ID_LENGTH:
        raise _bad(f"'id' is longer than {MAX_ID_LENGTH} characters", "id")
    params = _parameters(doc, "parameters")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _bad("'inputs' must be a non-empty list of tensors", "inputs")
    offset = 0
    tensors = []
    for i, spec in enumerate(inputs):
        tensor, offset = _tensor(spec, i, binary, offset, max_elements)
        tensors.append(tensor)
    if offset != len(binary):
        raise InvalidRequest(
            f"the body has {len(binary) - offset} binary bytes that no input's binary_data_size claims"
        )
    outputs: dict[str, bool] = {}
    binary_default = bool(params.get("binary_data_output", False))
    wanted = doc.get("outputs")
    if wanted is not None and not isinstance(wanted, list):
        raise _bad("'outputs' must be a list of objects", "outputs")
    for j, out in enumerate(wanted or []):
        name = check_output(out.get("name") if isinstance(out, dict) else None, j)
        out_params = _parameters(out, f"outputs[{j}].parameters")
        outputs[name] = bool(out_params.get("binary_data", binary_default))
    return InferRequest(request_id, tensors, outputs, binary_default)


def check_output(name: Any, j: int) -> str:
    """The name of the ``j``-th requested output, if it is one of :data:`OUTPUTS`."""
    if name not in OUTPUTS:
        raise _bad(
            f"unknown output {name!r}; this model has {', '.join(OUTPUTS)}", f"outputs[{j}].name"
        )
    return str(name)


def _parameters(doc: dict[str, Any], field: str) -> dict[str, Any]:
    """The ``parameters`` object of a request, input or output ({} when absent)."""
    params = doc.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise _bad(f"'{field}' must be an object", field)
    return params


def _tensor(spec: Any, i: int, binary: bytes, offset: int, max_elements: int) -> tuple[Tensor, int]:
    where = f"inputs[{i}]"
    if not isinstance(spec, dict):
        raise _bad("each input must be an object", where)
    name, datatype, shape, count = check_tensor(
        spec.get("name"), spec.get("datatype"), spec.get("shape"), where, max_elements
    )
    size = _parameters(spec, f"{where}.parameters").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise _bad(
                f"input {name!r}: binary_data_size does not fit the body", f"{where}.parameters"
            )
        values = from_binary(
            binary[offset : offset + size], datatype, count, name, f"{where}.parameters"
        )
        offset += size
    else:
        if "data" not in spec:
            raise _bad(f"input {name!r} has no data", f"{where}.data")
        values = from_values(_flatten(spec["data"]), datatype, shape, name, f"{where}.data")
    return Tensor(name, datatype, shape, values), offset


def check_tensor(
    name: Any, datatype: Any, shape: Any, where: str, max_elements: int
) -> tuple[str, str, list[int], int]:
    """Check an input's name, datatype and shape (``where`` names it); they and its element
    count."""
    if not isinstance(name, str) or not name:
        raise _bad("input needs a name", f"{where}.name")
    if datatype not in DATATYPES:
        raise _bad(f"input {name!r}: unknown datatype {datatype!r}", f"{where}.datatype")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise _bad(
            f"input {name!r}: shape must be a list of non-negative integers", f"{where}.shape"
        )
    count = math.prod(shape)
    if count > max_elements:
        raise _bad(
            f"input {name!r}: {count} elements exceed the limit of {max_elements}", f"{where}.shape"
        )
    return name, datatype, shape, count


def from_values(
    values: list[Any], datatype: str, shape: list[int], name: str, where: str
) -> list[Any]:
    """An input's flat values, checked against its shape and datatype (``where``: the field
    that holds them)."""
    check_count(len(values), shape, name, where)
    return _from_json(values, datatype, name, where)


def check_count(got: int, shape: list[int], name: str, where: str) -> None:
    """Whether an input holds as many values as its shape needs (``where`` holds them)."""
    count = math.prod(shape)
    if got != count:
        field = where.rsplit(".", 1)[-1]
        raise _bad(f"input {name!r}: shape {shape} needs {count} values, {field} has {got}", where)


def _flatten(data: Any) -> list[Any]:
    """Row-major values of nested lists (a scalar is one value)."""
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = data
    # One level at a time while every element is a list: C-speed for the usual [[...], ...].
    types = set(map(type, flat))
    while types == {list}:
        flat = list(chain.from_iterable(flat))
        types = set(map(type, flat))
    if list not in types:
        return flat
    out: list[Any] = []  # ragged nesting: element by element
    for v in flat:
        out.extend(_flatten(v))
    return out


def _from_json(values: list[Any], datatype: str, name: str, where: str) -> list[Any]:
    """Values checked against their datatype (``where``: the field that holds them)."""
    types = set(map(type, values))
    if datatype == "BYTES":
        if not types <= {str}:
            raise _bad(f"input {name!r}: BYTES data must be strings", where)
        return values
    if datatype == "BOOL":
        if not types <= {bool}:
            raise _bad(f"input {name!r}: BOOL data must be true or false", where)
        return values
    if not types <= {int, float}:
        raise _bad(f"input {name!r}: {datatype} data must be numbers", where)
    if (
        datatype.startswith(("INT", "UINT"))
        and float in types
        and not all(float(v).is_integer() for v in values)
    ):
        raise _bad(f"input {name!r}: {datatype} data must be integers", where)
    if values:
        # Values are kept as sent, but each must fit the type it is declared as.
        dtype = np.dtype(NUMPY_TYPES[datatype])
        # As Python numbers, so that comparing with any JSON integer is exact.
        least: float
        most: float
        if dtype.kind in "iu":
            least, most = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
        else:
            least, most = float(np.finfo(dtype).min), float(np.finfo(dtype).max)
        low, high = min(values), max(values)
        if low < least or high > most:
            raise _bad(
                f"input {name!r}: {low if low < least else high} does not fit {datatype} "
                f"({least} to {most})",
                where,
            )
    return values


def from_binary(
    raw: bytes, datatype: str, count: int, name: str, where: str
) -> list[Any] | np.ndarray:
    """Raw little-endian values of an input (``where``: the field that holds them); BYTES
    elements are each a 4-byte length and UTF-8 text."""
    values: list[Any] | np.ndarray
    if datatype == "BYTES":
        values, pos = [], 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise _bad(f"input {name!r}: truncated BYTES element", where)
            (n,) = struct.unpack_from("<I", raw, pos)
            pos += 4
            chunk = raw[pos : pos + n]
            if len(chunk) != n:
                raise _bad(f"input {name!r}: truncated BYTES element", where)
            try:
                values.append(chunk.decode("utf-8"))
            except UnicodeDecodeError:
                raise _bad(f"input {name!r}: BYTES element is not UTF-8 text", where) from None
            pos += n
    else:
        dtype = np.dtype(NUMPY_TYPES[datatype])
        if len(raw) != count * dtype.itemsize:
            raise _bad(
                f"input {name!r}: {len(raw)} bytes do not hold {count} {datatype} values",
                where,
            )
        values = np.frombuffer(raw, dtype=dtype)
    if len(values) != count:
        raise _bad(f"input {name!r}: shape needs {count} values, got {len(values)}", where)
    return values


def table(
    request: InferRequest, schema: Schema, max_rows: int, adapter: Adapter | None = None
) -> Table:
    """The request's tensors as validated rows (one input per field, or one matrix).

    An ``adapter`` applies to inputs sent one per field (by name); a matrix is in the
    version's own field order already.
    """
    names = schema.names
    known = set(names)
    tensors = request.inputs
    if (
        len(tensors) == 1
        and len(tensors[0].shape) == 2
        and (tensors[0].name not in known or len(names) > 1)
    ):
        t = tensors[0]
        n, k = t.shape
        if k != len(names):
            raise _bad(
                f"input {t.name!r} has {k} columns; the schema has {len(names)} fields ({', '.join(names)})",
                "inputs[0].shape",
            )
        _check_rows(n, max_rows)
        if isinstance(t.values, np.ndarray):
            return schema.table_from_matrix(t.values.reshape(n, k))
        if t.datatype not in ("BYTES", "BOOL"):
            return schema.table_from_matrix(np.array(t.values).reshape(n, k))
        values = t.values
        return schema.table_from_rows([values[r * k : (r + 1) * k] for r in range(n)])
    rows: int | None = None
    for i, t in enumerate(tensors):
        if t.name not in known and adapter is None:
            raise _bad(
                f"input {t.name!r} is not a field of the schema ({', '.join(names)}); send one "
                f"input per field, or a single [n, {len(names)}] input",
                f"inputs[{i}].name",
            )
        if len(t.shape) > 2 or (len(t.shape) == 2 and t.shape[1] != 1):
            raise _bad(f"input {t.name!r}: shape must be [n] or [n, 1]", f"inputs[{i}].shape")
        if rows is None:
            rows = t.shape[0]
        elif t.shape[0] != rows:
            raise _bad(
                f"input {t.name!r} has {t.shape[0]} rows, others have {rows}", f"inputs[{i}].shape"
            )
    assert rows is not None
    _check_rows(rows, max_rows)
    columns = {
        t.name: t.values.tolist() if isinstance(t.values, np.ndarray) else t.values for t in tensors
    }
    if adapter is not None:
        records = [{name: col[r] for name, col in columns.items()} for r in range(rows)]
        return adapted_table(schema, records, adapter)
    if len(columns) == len(names):
        return schema.table_from_rows(list(zip(*(columns[n] for n in names), strict=True)))
    # Fields missing (or given twice): the record path names every problem.
    return schema.table([{name: col[r] for name, col in columns.items()} for r in range(rows)])


def first_value(request: InferRequest, name: str) -> str | None:
    """The first value of the input called ``name`` (a unit key), or None."""
    for t in request.inputs:
        if t.name == name and len(t.values):
            value = t.values[0]
            return None if value is None else str(value.item() if hasattr(value, "item") else value)
    return None


@dataclass(frozen=True)
class InferPayload:
    """An inference request as the scoring engine reads it (a
    :class:`~modelport.serving.payloads.Payload`): its tensors validated against the version
    it reaches; its unit key from the ``X-Unit-ID`` header or an input's first value."""

    request: InferRequest
    max_rows: int
    unit_id: str | None = None

    def table(self, served: Served, adapter: Adapter | None) -> Table:
        return table(self.request, served.schema, self.max_rows, adapter)

    def unit(self, field: str | None) -> str | None:
        return self.unit_id if field is None else first_value(self.request, field)


def _check_rows(n: int, max_rows: int) -> None:
    if n == 0:
        raise _bad("the request has no rows", "inputs")
    if n > max_rows:
        raise _bad(f"too many rows: {n} (the limit is {max_rows})", "inputs")


# -- responses -------------------------------------------------------------------------------------


def _datatype_of(flat: list[Any]) -> str:
    types = set(map(type, flat))
    if types <= {bool}:
        return "BOOL"
    if types <= {int}:
        return "INT64"
    if types <= {int, float}:
        return "FP64"
    return "BYTES"


def encode(values: Any, datatype: str) -> bytes:
    """Output values as raw little-endian bytes (BYTES: a 4-byte length before each element)."""
    if isinstance(values, np.ndarray):
        return values.astype(NUMPY_TYPES[datatype], copy=False).tobytes()
    flat = _flatten(values)
    if datatype == "BYTES":
        parts = []
        for v in flat:
            b = str(v).encode()
            parts.append(struct.pack("<I", len(b)) + b)
        return b"".join(parts)
    return np.asarray(flat, dtype=NUMPY_TYPES[datatype]).tobytes()


@dataclass
class Output:
    """An output tensor: flat values (a list, or an array for predict_proba)."""

    name: str
    datatype: str
    shape: list[int]
    values: Any
    parameters: dict[str, Any]
    binary: bool


def output_tensors(
    request: InferRequest,
    predictions: list[Any],
    probabilities: np.ndarray | None,
    classes: list[Any] | None,
) -> list[Output]:
    """The outputs a request asked for (all of them when it named none), in protocol order."""
    wanted = request.outputs or {
        name: request.binary_default
        for name in OUTPUTS
        if name == "predict" or probabilities is not None
    }
    if "predict_proba" in wanted and probabilities is None:
        raise _bad(
            "this model has no predict_proba output (it is not a probabilistic classifier)",
            "outputs",
        )
    n = len(predictions)
    tensors: list[Output] = []
    if "predict" in wanted:
        flat = _flatten(predictions)
        dt = _datatype_of(flat)
        first = predictions[0] if predictions else None
        shape = [n, len(first)] if isinstance(first, list) else [n]
        data: list[Any] = [str(v) for v in flat] if dt == "BYTES" else flat
        tensors.append(Output("predict", dt, shape, data, {}, wanted["predict"]))
    if "predict_proba" in wanted:
        assert probabilities is not None and classes is not None
        tensors.append(
            Output(
                "predict_proba",
                "FP64",
                [n, len(classes)],
                probabilities.ravel(),
                {"classes": orjson.dumps(classes).decode()},
                wanted["predict_proba"],
            )
        )
    return tensors


def response(
    *,
    model: str,
    version: int,
    request: InferRequest,
    predictions: list[Any],
    probabilities: np.ndarray | None,
    classes: list[Any] | None,
    prediction_ids: list[str],
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    chunks = []
    described = []
    for t in output_tensors(request, predictions, probabilities, classes):
        out: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if t.binary:
            raw = encode(t.values, t.datatype)
            chunks.append(raw)
            out["parameters"] = {**t.parameters, "binary_data_size": len(raw)}
        else:
            if t.parameters:
                out["parameters"] = t.parameters
            out["data"] = t.values
        described.append(out)
    header: dict[str, Any] = {
        "model_name": model,
        "model_version": str(version),
        "id": request.id or "",
        "parameters": {"prediction_ids": ",".join(prediction_ids)},
        "outputs": described,
    }
    head = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)
