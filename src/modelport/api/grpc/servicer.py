"""The ``inference.GRPCInferenceService`` RPCs: thin handlers over the service, as REST's.

Each RPC reads its key from the ``authorization`` metadata (``Bearer <key>``) or
``x-api-key``, calls the same service methods as ``/v2`` and answers a message or a status:
the exception tree's HTTP statuses map to gRPC codes (:func:`status_of`), with the message
REST gives. Messages are parsed here rather than by grpcio, so a malformed one is
``INVALID_ARGUMENT`` like any bad input; one past the size limit is grpcio's
``RESOURCE_EXHAUSTED``. Scoring goes through :func:`score`, the one call into the service's
prediction path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from ...errors import InvalidRequest, ModelportError
from ...ids import request_id as new_request_id
from ...monitoring.metrics import UNKNOWN
from .. import errors, front, oip, v2
from . import grpc_predict_v2_pb2 as pb
from . import tensors

if TYPE_CHECKING:
    from ...registry.keys import Principal
    from ...service.core import Service
    from ...serving.engine import Scored

log = logging.getLogger("modelport.api")

SERVICE_NAME = "inference.GRPCInferenceService"

#: HTTP status of an error (see errors.py) -> gRPC status code.
STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    421: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_of(exc: ModelportError) -> grpc.StatusCode:
    """The gRPC status code of one of our errors (INTERNAL for anything unlisted)."""
    return STATUS.get(exc.status_code, grpc.StatusCode.INTERNAL)


async def score(
    service: Service,
    who: Principal,
    name: str,
    version: int | None,
    request: oip.InferRequest,
    request_id: str,
    unit_id: str | None,
) -> Scored:
    """Score one decoded inference request: the gRPC server's one call into the service.

    Routed like REST ``/v2`` (an explicit version, else the consumer's pin, else the traffic
    policy, sticky by ``x-unit-id`` or the policy's unit input), batched with REST's requests
    to the same version, and in the ledger before this returns.
    """
    payload = oip.InferPayload(request, service.settings.max_rows_per_request, unit_id)
    # A caller that hangs up (or whose deadline passes) cancels this call: the request it
    # made still finishes, so its rows reach the ledger whole, as a REST request's would.
    scoring = asyncio.ensure_future(
        service.engine.score(
            who, name, payload, version=version, alias=None, request_id=request.id or request_id
        )
    )
    scoring.add_done_callback(_retrieve)
    return await asyncio.shield(scoring)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Collect the outcome of a call nobody awaits any more (its caller went away)."""
    if not task.cancelled():
        task.exception()


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):  # -bin keys carry bytes, none of which we read
            found.setdefault(key, value)
    return found


def _key(metadata: dict[str, str]) -> str | None:
    return front.key_from(metadata.get("authorization"), metadata.get("x-api-key"))


Handler = Callable[[Any, dict[str, str]], Awaitable[Any]]


class Servicer:
    """The service's RPCs over one :class:`~modelport.service.core.Service`."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to add to a ``grpc.aio`` server."""
        methods: Sequence[tuple[str, Any, Handler]] = (
            ("ServerLive", pb.ServerLiveRequest, self.server_live),
            ("ServerReady", pb.ServerReadyRequest, self.server_ready),
            ("ModelReady", pb.ModelReadyRequest, self.model_ready),
            ("ServerMetadata", pb.ServerMetadataRequest, self.server_metadata),
            ("ModelMetadata", pb.ModelMetadataRequest, self.model_metadata),
            ("ModelInfer", pb.ModelInferRequest, self.model_infer),
        )
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                name: grpc.unary_unary_rpc_method_handler(self._rpc(name, message, fn))
                for name, message, fn in methods
            },
        )

    def _rpc(
        self, method: str, message: Any, fn: Handler
    ) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
        metrics = self.service.metrics

        async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                try:
                    request = message.FromString(raw)
                except DecodeError:
                    raise InvalidRequest(
                        f"the request is not a valid {message.DESCRIPTOR.full_name} message"
                    ) from None
                reply = await fn(request, _metadata(context))
                return bytes(reply.SerializeToString())
            except ModelportError as exc:
                code, text = status_of(exc), exc.message
            except asyncio.CancelledError:  # the caller went away, or the server stopped
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                log.error("unhandled error in %s", method, exc_info=exc)
                code, text = grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"
            finally:
                metrics.rpc(method, code.name, time.perf_counter() - started)
            await context.abort(code, text)
            raise AssertionError("abort returned")  # it raises; this keeps the types honest

        return handle

    # -- the RPCs ----------------------------------------------------------------------------

    async def server_live(self, request: Any, metadata: dict[str, str]) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, metadata: dict[str, str]) -> pb.ServerReadyResponse:
        # The server runs only between the service's start and stop.
        return pb.ServerReadyResponse(ready=True)

    async def server_metadata(
        self, request: Any, metadata: dict[str, str]
    ) -> pb.ServerMetadataResponse:
        return tensors.server_metadata()

    async def model_ready(
        self, request: pb.ModelReadyRequest, metadata: dict[str, str]
    ) -> pb.ModelReadyResponse:
        version = oip.version_number(request.version or None)
        who = await self.service.authenticate(_key(metadata))
        await self.service.served(who, request.name, version)
        return pb.ModelReadyResponse(ready=True)

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, metadata: dict[str, str]
    ) -> pb.ModelMetadataResponse:
        version = oip.version_number(request.version or None)
        who = await self.service.authenticate(_key(metadata))
        return tensors.model_metadata(await v2.metadata(self.service, who, request.name, version))

    async def model_infer(
        self, request: pb.ModelInferRequest, metadata: dict[str, str]
    ) -> pb.ModelInferResponse:
        svc = self.service
        name = request.model_name
        svc.metrics.inflight.inc()
        try:
            version = oip.version_number(request.model_version or None)
            who = await svc.authenticate(_key(metadata))
            decoded = tensors.infer_request(request, svc.settings.max_rows_per_request * 1024)
            scored = await score(
                svc,
                who,
                name,
                version,
                decoded,
                metadata.get("x-request-id", "")[:200] or new_request_id(),
                metadata.get("x-unit-id"),
            )
            return tensors.infer_response(name, decoded, scored)
        except ModelportError as exc:
            model = name if name in svc.router.models else UNKNOWN
            svc.metrics.refused(model, exc.version, "", errors.oip_status(exc))
            raise
        finally:
            svc.metrics.inflight.dec()
