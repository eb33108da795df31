"""The front door: what every HTTP request passes before any route, scoring routes included.

A server on 127.0.0.1 is reachable by every web page its user opens, and so is one without
keys (``no_auth``) that trusts whoever reaches it. Two checks keep browsers out:

- **Host.** DNS rebinding points a name the attacker controls at 127.0.0.1; the page then
  talks to the server as its own origin, reads answers included, but its requests carry
  ``Host: attacker.example``. A request whose Host is not a name this server answers to gets
  421. Loopback names (``localhost``, ``*.localhost``) and IP addresses cannot be rebound and
  are always accepted; other names are those of the ``allowed_hosts`` setting (default: the
  ``host`` setting, or any name for a server with keys listening on every interface).
- **Cross-site changes.** A page may send a "simple" request (a form, a ``no-cors`` fetch with
  a multipart or untyped body) to any server without asking it first. Browsers say where a
  request comes from: ``Sec-Fetch-Site`` (``same-origin``, ``same-site``, ``cross-site``,
  ``none``) and, older ones only, ``Origin``. Every method but GET and HEAD from another site
  is refused (403 ``cross_site_request``); the dashboard, served by the server itself, is
  same-origin. Programs (the client, curl, tritonclient) send neither header and pass.

An ``Authorization`` header that is not ``Bearer <key>`` gets 401 saying the header's form
(a key sent bare would otherwise read as no key at all).

The body read timeout is here too: a body that stops arriving for ``body_timeout_seconds``
gets 408 and the connection is closed (the header timeout lives in the HTTP protocol, see
:mod:`modelport.api.server`).

And what both kinds of route need from a request's headers and body, in one place: the
request id (:func:`request_id`), the key (:func:`api_key`), the Content-Type a route reads
(:func:`check_content_type`), and the body limit counted as bytes arrive (:func:`limited`,
:func:`read_body`). The scoring routes (:mod:`modelport.api.scoring`, ahead of the framework)
and :class:`modelport.api.app.RequestGuard` (every other route) both call them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import sys
from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.types import Message, Receive, Scope

from ..errors import (
    CrossSiteRequest,
    HostNotAllowed,
    ModelportError,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
)
from ..ids import request_id as new_request_id
from ..settings import Settings
from . import payload

#: Names that resolve to this machine without asking DNS, so no attacker can point them.
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})
#: Listen addresses that mean every interface.
WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "::", "[::]", ""})
#: Methods that only read: a browser may send them from anywhere (it keeps the answer from a
#: page of another origin unless the server allows it, which modelport never does).
_READS = frozenset({"GET", "HEAD"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class FrontDoor:
    """The Host and cross-site checks, and the body timeout, of one server's settings."""

    def __init__(self, settings: Settings) -> None:
        listed = set(settings.allowed_hosts)
        wildcard = settings.host.lower() in WILDCARD_ADDRESSES
        self.any_host = "*" in listed or (not listed and wildcard and not settings.no_auth)
        if not listed:
            listed = {settings.host.lower()}
            if wildcard:  # forced no_auth on every interface: this machine's own names
                listed |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        self.names = frozenset(n.strip("[]") for n in listed if not n.startswith("*."))
        self.suffixes = tuple(n[1:] for n in listed if n.startswith("*."))
        self.body_timeout = settings.body_timeout_seconds
        self.no_auth = settings.no_auth

    def check(self, scope: Scope) -> ModelportError | None:
        """Why the request may not go further, or None."""
        host = origin = site = auth = None
        api_key = False
        for key, value in scope["headers"]:
            if key == b"host":
                host = value
            elif key == b"origin":
                origin = value
            elif key == b"sec-fetch-site":
                site = value
            elif key == b"authorization":
                auth = value
            elif key == b"x-api-key":
                api_key = True
        if host is not None and not self.any_host:
            name = hostname(host.decode("latin-1"))
            if not self.allows(name):
                return HostNotAllowed(
                    f"Host {host.decode('latin-1')[:200]!r} is not a name this server answers to; "
                    "if it is one, add it to the allowed_hosts setting (--allowed-hosts)",
                    details=[{"field": "host", "reason": "not in allowed_hosts"}],
                )
        if auth is not None and not api_key and not self.no_auth:
            problem = key_form(auth)
            if problem is not None:
                return problem
        if scope["method"] in _READS:
            return None
        if site is not None:
            if site in (b"same-origin", b"none"):
                return None
            return _cross_site(f"Sec-Fetch-Site: {site.decode('latin-1')}")
        if origin is not None and not same_origin(origin.decode("latin-1"), host):
            return _cross_site(f"Origin: {origin.decode('latin-1')}")
        return None

    def allows(self, name: str) -> bool:
        """Whether the host name ``name`` (no port, lower case) is one this server answers to."""
        if name in LOOPBACK_NAMES or name.endswith(".localhost") or name in self.names:
            return True
        if self.suffixes and name.endswith(self.suffixes):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True  # an address, not a name: nothing to rebind

    def timed(self, receive: Receive) -> Receive:
        """``receive``, failing with :class:`RequestTimeout` when the next part of the body
        takes longer than ``body_timeout_seconds`` (once the body is in, it waits as long as
        the route likes: a streaming answer listens for the disconnect)."""
        seconds = self.body_timeout
        done = False

        async def receive_in_time() -> Message:
            nonlocal done
            if done:
                return await receive()
            try:
                message = await _within(seconds, receive)
            except asyncio.TimeoutError:  # TimeoutError from 3.11, not before
                raise RequestTimeout(
                    f"the request body stopped arriving for {seconds:g} s (body_timeout_seconds)"
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        return receive_in_time


class Disconnected(Exception):
    """The client went away before its body arrived: nobody to answer."""


#: Methods whose requests may carry a body.
WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def request_id(headers: Mapping[bytes, bytes]) -> tuple[bytes, bytes]:
    """The ``X-Request-ID`` header answered: the caller's (cut to 200 characters), or new."""
    given = headers.get(b"x-request-id")
    if given:
        return b"x-request-id", given.decode("latin-1")[:200].encode("latin-1")
    return b"x-request-id", new_request_id().encode("latin-1")


def api_key(headers: Mapping[bytes, bytes]) -> str | None:
    """The key a request carries: ``Authorization: Bearer <key>``, else ``X-API-Key``."""
    auth, key = headers.get(b"authorization"), headers.get(b"x-api-key")
    return key_from(
        None if auth is None else auth.decode("latin-1"),
        None if key is None else key.decode("latin-1"),
    )


def key_from(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key in an ``Authorization: Bearer <key>`` value, else ``X-API-Key``'s (HTTP
    headers and gRPC metadata alike)."""
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return x_api_key


def check_content_type(
    method: str, path: str, headers: Mapping[bytes, bytes], *, tensors: bool = False
) -> None:
    """Refuse (415) a body the route does not read. Every route reads JSON; pushes and
    observation files are multipart forms, the dashboard's sign-in is the form it serves,
    and inference (``tensors``) reads raw tensor bytes too, or JSON without a Content-Type
    (tritonclient sends none)."""
    if method not in WITH_BODY or not payload.has_body(headers):
        return
    content_type = headers.get(b"content-type")
    if tensors:
        payload.check_content_type(content_type, ("application/octet-stream",), required=False)
    elif path.endswith(("/versions", "/observations")):
        payload.check_content_type(content_type, ("multipart/form-data",))
    elif path == "/login":
        forms = ("application/x-www-form-urlencoded", "multipart/form-data")
        payload.check_content_type(content_type, forms)
    else:
        payload.check_content_type(content_type)


def check_length(headers: Mapping[bytes, bytes], limit: int) -> None:
    """Refuse (413) a body whose declared length is over ``limit`` bytes, before reading it."""
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(_too_large(limit))


def limited(receive: Receive, limit: int) -> Receive:
    """``receive``, failing with 413 as soon as the body's bytes so far pass ``limit`` (a
    chunked upload without Content-Length is held to the same limit)."""
    received = 0

    async def receive_limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(_too_large(limit))
        return message

    return receive_limited


async def read_body(receive: Receive, headers: Mapping[bytes, bytes], limit: int) -> bytes:
    """The whole body, refused as soon as it is known to exceed ``limit`` bytes."""
    check_length(headers, limit)
    receive = limited(receive, limit)
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> str:
    return f"the request body exceeds the limit of {limit} bytes"


def _cross_site(said: str) -> CrossSiteRequest:
    return CrossSiteRequest(
        f"refused a change sent by a web page of another site ({said}); call the API from a "
        "program, or from the dashboard on this server",
        details=[{"field": "origin", "reason": "cross-site request"}],
    )


def hostname(host: str) -> str:
    """The name in a Host header value: no port, no IPv6 brackets, lower case, no final dot."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def key_form(auth: bytes) -> Unauthorized | None:
    """Why an Authorization header does not carry a key in the form the server reads, or None
    (a key sent without ``Bearer `` would otherwise read as no key at all)."""
    if auth[:7].lower() == b"bearer ":
        return None
    scheme = auth.split(b" ", 1)[0].decode("latin-1")[:20] if b" " in auth.strip() else None
    got = f"the {scheme!r} scheme" if scheme else "a value without 'Bearer '"
    return Unauthorized(
        f"the Authorization header must read 'Bearer <key>' (or send the key as X-API-Key: "
        f"<key>); it has {got}",
        details=[{"field": "authorization", "reason": "expected 'Bearer <key>'"}],
    )


def same_origin(origin: str, host: bytes | None) -> bool:
    """Whether an ``Origin`` (``scheme://host[:port]``) names the server the request's Host
    names ("null", sent by sandboxed pages and local files, names none)."""
    if host is None:
        return False
    try:
        parts = urlsplit(origin)
        origin_port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return False
    if not parts.hostname:
        return False
    value = host.decode("latin-1").strip().lower()
    port_text = value.rsplit("]", 1)[-1].rpartition(":")[2] if ":" in value else ""
    host_port = int(port_text) if port_text.isdigit() else _DEFAULT_PORTS.get(parts.scheme)
    return hostname(value) == parts.hostname.rstrip(".") and host_port == origin_port


if sys.version_info >= (3, 11):

    async def _within(seconds: float, receive: Receive) -> Message:
        async with asyncio.timeout(seconds):
            return await receive()

else:  # pragma: no cover - Python 3.10

    async def _within(seconds: float, receive: Receive) -> Message:
        return await asyncio.wait_for(receive(), seconds)
