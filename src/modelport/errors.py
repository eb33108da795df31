"""The exceptions modelport raises, one tree under :class:`ModelportError`.

::

    ModelportError                      500  something went wrong on our side
    ├── InvalidRequest                  400  the request itself is malformed
    │   ├── UnsupportedMediaType        415  a body in a content type the route does not read
    │   └── HostNotAllowed              421  a Host header that names another server
    ├── Unauthorized                    401  missing or unknown API key
    ├── Forbidden                       403  the key lacks the scope
    │   └── CrossSiteRequest                 a browser page of another site tried a change
    ├── NotFound                        404
    │   ├── ModelNotFound
    │   ├── VersionNotFound
    │   ├── AliasNotFound
    │   ├── PredictionNotFound
    │   ├── KeyNotFound
    │   ├── ConsumerNotFound            no settings for that consumer on that model
    │   ├── JobNotFound
    │   └── DatasetNotFound
    ├── Conflict                        409
    │   ├── NoVersionBehindAlias        the alias points nowhere yet
    │   ├── NothingToRollBack           the alias has no earlier target
    │   ├── Incompatible                a strict push that some consumers' traffic would fail
    │   └── NotEnoughObservations       an online model that has not learned enough to answer
    ├── RequestTimeout                  408  the body stopped arriving
    ├── PayloadTooLarge                 413
    ├── InvalidInput                    422  carries field-level ``details``
    │   └── ArtifactRejected            the pushed artifact cannot be loaded or smoke-tested
    ├── ModelNotReady                   503
    ├── ServerSaturated                 503  no predict thread came free within the timeout
    ├── ModelFailed                     500  the model itself raised while predicting
    │   ├── ModelTimeout                504  the call ran past its timeout
    │   └── VersionUnhealthy            503  the version is not called until a probe succeeds
    ├── StoreUnavailable                503  the database cannot be reached
    ├── ArtifactUnavailable             503  a blob is missing, corrupt or out of reach
    ├── Cancelled                       500  a job or batch run was cancelled while it ran
    └── StreamError                     500  a stream worker cannot go on (broker, key)

Every class lives here, so a client process knows each ``code`` from the moment it imports
this module (``modelport.client`` maps codes to classes by walking this tree).

The HTTP status is a class attribute; only the web layer reads it. This module imports no web
framework, so the CLI, the client and the service layer share the same tree.
"""

from __future__ import annotations

from typing import Any


class ModelportError(Exception):
    """Root of every error modelport raises on purpose."""

    status_code = 500
    code = "internal_error"
    #: The model version a scoring request had been routed to when it failed (for metrics).
    version: int | None = None

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidRequest(ModelportError):
    """The request is malformed: not JSON, wrong shape, a bad parameter."""

    status_code = 400
    code = "invalid_request"


class UnsupportedMediaType(InvalidRequest):
    """The body's Content-Type is not one the route reads (JSON, or its file formats)."""

    status_code = 415
    code = "unsupported_media_type"


class HostNotAllowed(InvalidRequest):
    """The ``Host`` header names a server this one is not (see the ``allowed_hosts`` setting):
    what a DNS rebinding attack sends."""

    status_code = 421
    code = "host_not_allowed"


class Unauthorized(ModelportError):
    """No API key was given, or the key is unknown or revoked."""

    status_code = 401
    code = "unauthorized"


class Forbidden(ModelportError):
    """The API key is valid but lacks the scope the call needs."""

    status_code = 403
    code = "forbidden"


class CrossSiteRequest(Forbidden):
    """A browser sent a change (any method but GET and HEAD) from a page of another site."""

    code = "cross_site_request"


class NotFound(ModelportError):
    """Something named in the request does not exist."""

    status_code = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class AliasNotFound(NotFound):
    code = "alias_not_found"


class PredictionNotFound(NotFound):
    code = "prediction_not_found"


class KeyNotFound(NotFound):
    code = "key_not_found"


class ConsumerNotFound(NotFound):
    code = "consumer_not_found"


class Conflict(ModelportError):
    """The request conflicts with the current state."""

    status_code = 409
    code = "conflict"


class NoVersionBehindAlias(Conflict):
    code = "no_version_behind_alias"


class NothingToRollBack(Conflict):
    code = "nothing_to_roll_back"


class Incompatible(Conflict):
    """A strict push that the recent traffic of some consumers would fail (``details``)."""

    code = "incompatible"


class RequestTimeout(ModelportError):
    """The request body stopped arriving for longer than ``body_timeout_seconds``."""

    status_code = 408
    code = "request_timeout"


class PayloadTooLarge(ModelportError):
    status_code = 413
    code = "payload_too_large"


class InvalidInput(ModelportError):
    """The payload does not fit the schema; ``details`` lists every offending field."""

    status_code = 422
    code = "invalid_input"


class ArtifactRejected(InvalidInput):
    """A pushed artifact cannot be loaded, or fails its smoke prediction."""

    code = "artifact_rejected"


class ModelNotReady(ModelportError):
    status_code = 503
    code = "model_not_ready"


class ServerSaturated(ModelportError):
    """Every predict thread stayed busy for the call's whole timeout, so it never ran. The
    server's load, not the version's fault: its health is not touched."""

    status_code = 503
    code = "server_saturated"
    #: Not retried row by row by the batcher: every request of the batch would wait again.
    retry_alone = False


class ModelFailed(ModelportError):
    """The model raised while predicting on input that passed validation."""

    status_code = 500
    code = "model_failed"


class ModelTimeout(ModelFailed):
    """The model call ran past its timeout (it fails this request; the version is marked
    unhealthy)."""

    status_code = 504
    code = "model_timeout"
    #: Not retried row by row by the batcher: every request of the batch would wait again.
    retry_alone = False


class VersionUnhealthy(ModelFailed):
    """The version failed repeatedly, hung or leaked memory; it is not called until a probe
    after the cooldown succeeds."""

    status_code = 503
    code = "version_unhealthy"
    retry_alone = False


class StoreUnavailable(ModelportError):
    """The database could not be reached or refused the write."""

    status_code = 503
    code = "store_unavailable"


class ArtifactUnavailable(ModelportError):
    """The artifact store cannot be reached, or a blob in it is missing or corrupt."""

    status_code = 503
    code = "artifact_unavailable"


class JobNotFound(NotFound):
    code = "job_not_found"


class DatasetNotFound(NotFound):
    code = "dataset_not_found"


class NotEnoughObservations(Conflict):
    """An online model asked to predict before it has learned from enough observations."""

    code = "not_enough_observations"


class Cancelled(ModelportError):
    """A job or batch run was cancelled (``POST /v1/jobs/{id}/cancel``) while it ran."""

    code = "cancelled"


class StreamError(ModelportError):
    """The stream worker cannot go on (a broker it cannot open, a key the server refuses)."""

    code = "stream_error"
