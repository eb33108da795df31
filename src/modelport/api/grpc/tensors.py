"""Protocol buffer messages <-> the protocol's plain data (:mod:`modelport.api.oip`).

A ``ModelInferRequest`` becomes the same :class:`~modelport.api.oip.InferRequest` a REST body
does, checked by the same functions, so both transports refuse bad input with the same
messages; the outputs come from :func:`~modelport.api.oip.output_tensors` too. Problems name
the message's fields (``inputs[0].contents.fp64_contents``, ``raw_input_contents[1]``).

Outputs are raw (``raw_output_contents``) when the inputs came raw, or when the request's
``binary_data_output`` parameter or an output's ``binary_data`` parameter says so; otherwise
typed ``contents``, as the inputs came.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ... import __version__
from ...errors import InvalidInput
from .. import oip
from . import grpc_predict_v2_pb2 as pb

if TYPE_CHECKING:
    from ...serving.engine import Scored

#: Which ``InferTensorContents`` field holds each datatype's values (FP16: raw only).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
#: The protocol extensions the gRPC server has (the binary tensor extension is REST's).
EXTENSIONS: list[str] = []


def _bad(message: str, field: str) -> InvalidInput:
    return InvalidInput(message, details=[{"field": field, "reason": message}])


def _flag(value: pb.InferParameter | None, default: bool) -> bool:
    """A yes/no parameter: a bool, a number (0: no), or text ("true", "1": yes)."""
    choice = None if value is None else value.WhichOneof("parameter_choice")
    if value is None or choice is None:
        return default
    given = getattr(value, choice)
    if isinstance(given, str):
        return given.strip().lower() in ("true", "1", "yes")
    return bool(given)


def infer_request(msg: pb.ModelInferRequest, max_elements: int) -> oip.InferRequest:
    """Check a ``ModelInferRequest`` and decode its tensors."""
    if len(msg.id) > oip.MAX_ID_LENGTH:
        raise _bad(f"'id' is longer than {oip.MAX_ID_LENGTH} characters", "id")
    if not msg.inputs:
        raise _bad("'inputs' must be a non-empty list of tensors", "inputs")
    raw = msg.raw_input_contents
    if raw and len(raw) != len(msg.inputs):
        raise _bad(
            f"raw_input_contents has {len(raw)} entries for {len(msg.inputs)} inputs; give one "
            "per input, in order (or none, and contents in every input)",
            "raw_input_contents",
        )
    tensors = []
    for i, spec in enumerate(msg.inputs):
        where = f"inputs[{i}]"
        name, datatype, shape, count = oip.check_tensor(
            spec.name, spec.datatype, list(spec.shape), where, max_elements
        )
        values: list[Any] | np.ndarray
        if raw:
            if spec.HasField("contents"):
                raise _bad(
                    f"input {spec.name!r}: give contents or raw_input_contents, not both",
                    f"{where}.contents",
                )
            values = oip.from_binary(raw[i], datatype, count, name, f"raw_input_contents[{i}]")
        else:
            values = _typed(spec, shape, f"{where}.contents")
        tensors.append(oip.Tensor(name, datatype, shape, values))
    binary_default = _flag(msg.parameters.get("binary_data_output"), bool(raw))
    outputs: dict[str, bool] = {}
    for j, out in enumerate(msg.outputs):
        name = oip.check_output(out.name, j)
        outputs[name] = _flag(out.parameters.get("binary_data"), binary_default)
    return oip.InferRequest(msg.id or None, tensors, outputs, binary_default)


#: Datatypes whose contents field holds any value of the type (int_contents is int32,
#: uint_contents uint32, fp32_contents float32): no value needs a range check.
_WHOLE_RANGE = frozenset({"INT32", "INT64", "UINT32", "UINT64", "FP32", "FP64"})


def _typed(
    spec: pb.ModelInferRequest.InferInputTensor, shape: list[int], where: str
) -> list[Any] | np.ndarray:
    field = CONTENTS.get(spec.datatype)
    if field is None:
        raise _bad(f"input {spec.name!r}: {spec.datatype} values go in raw_input_contents", where)
    where = f"{where}.{field}"
    values: list[Any] = list(getattr(spec.contents, field))
    if spec.datatype in _WHOLE_RANGE:
        # Numbers the wire format has already typed: one array, as raw contents give.
        oip.check_count(len(values), shape, spec.name, where)
        return np.array(values, dtype=oip.NUMPY_TYPES[spec.datatype])
    if spec.datatype == "BYTES":
        try:
            values = [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise _bad(f"input {spec.name!r}: BYTES element is not UTF-8 text", where) from None
    return oip.from_values(values, spec.datatype, shape, spec.name, where)


def infer_response(model: str, request: oip.InferRequest, scored: Scored) -> pb.ModelInferResponse:
    """The ``ModelInferResponse`` of a scored request."""
    tensors = oip.output_tensors(
        request, scored.predictions, scored.probabilities, scored.served.loaded.classes
    )
    msg = pb.ModelInferResponse(
        model_name=model, model_version=str(scored.version), id=request.id or ""
    )
    msg.parameters["prediction_ids"].string_param = ",".join(scored.ids)
    # Raw for every output or for none (the protocol allows no mix).
    raw = any(t.binary for t in tensors)
    for t in tensors:
        out = msg.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        for key, value in t.parameters.items():
            out.parameters[key].string_param = value
        if raw:
            msg.raw_output_contents.append(oip.encode(t.values, t.datatype))
            continue
        values = t.values.tolist() if isinstance(t.values, np.ndarray) else t.values
        if t.datatype == "BYTES":
            values = [str(v).encode() for v in values]
        getattr(out.contents, CONTENTS[t.datatype]).extend(values)
    return msg


def server_metadata() -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name="modelport", version=__version__, extensions=EXTENSIONS)


def model_metadata(meta: dict[str, Any]) -> pb.ModelMetadataResponse:
    """The metadata REST answers (:func:`~modelport.api.oip.model_metadata`), as a message
    (which has no place for its ``matrix_input``: an ``[n, k]`` input-0 works all the same)."""
    msg = pb.ModelMetadataResponse(
        name=meta["name"], versions=meta["versions"], platform=meta["platform"]
    )
    for kind in ("inputs", "outputs"):
        for t in meta[kind]:
            getattr(msg, kind).add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
    return msg
