"""API keys: each names a consumer (the calling app) and carries scopes; only hashes are stored.

Keys are 32 random bytes, so a plain sha256 is a sound verifier (no password stretching needed)
and cheap enough to check on every request; verified keys are cached for
``key_cache_seconds`` so the hot path makes no database round trip.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import Forbidden, InvalidRequest, KeyNotFound, Unauthorized
from ..store import Store
from ..store.tables import api_keys

#: admin: registry changes and keys; push: push safe formats (skops); predict; feedback; read.
SCOPES = ("admin", "push", "predict", "feedback", "read")
KEY_PREFIX = "mp_"
_CONSUMER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}\Z")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the consumer a key names, and what it may do."""

    consumer: str
    scopes: frozenset[str]
    key_id: int | None = None

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def require(self, scope: str) -> None:
        if not self.allows(scope):
            raise Forbidden(f"this key (consumer {self.consumer!r}) lacks the {scope!r} scope")


ANONYMOUS = Principal("anonymous", frozenset(SCOPES))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_scopes(scopes: Iterable[str]) -> list[str]:
    scopes = sorted(set(scopes))
    bad = [s for s in scopes if s not in SCOPES]
    if not scopes or bad:
        raise InvalidRequest(
            f"unknown scope(s): {', '.join(bad)}; choose from {', '.join(SCOPES)}"
            if bad
            else f"a key needs at least one scope: {', '.join(SCOPES)}",
            details=[{"field": "scopes", "reason": "unknown or empty"}],
        )
    return scopes


def create_key(
    conn: Connection, consumer: str, scopes: Iterable[str]
) -> tuple[str, dict[str, Any]]:
    """Create a key; return the secret (shown once) and its record."""
    if not _CONSUMER.match(consumer):
        raise InvalidRequest(
            "consumer name must start with a letter or digit and use letters, digits, _ . @ -",
            details=[{"field": "name", "reason": "invalid consumer name"}],
        )
    scope_list = check_scopes(scopes)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    now = time.time()
    key_id = conn.execute(
        api_keys.insert().values(
            key_hash=hash_key(secret),
            prefix=secret[:10],
            consumer=consumer,
            scopes=scope_list,
            created_at=now,
        )
    ).inserted_primary_key[0]  # type: ignore[index]
    return secret, {
        "id": key_id,
        "prefix": secret[:10],
        "consumer": consumer,
        "scopes": scope_list,
        "created_at": now,
        "revoked_at": None,
    }


def list_keys(conn: Connection, *, include_revoked: bool = False) -> list[dict[str, Any]]:
    names = ("id", "prefix", "consumer", "scopes", "created_at", "revoked_at")
    query = sa.select(*(api_keys.c[n] for n in names)).order_by(api_keys.c.id)
    if not include_revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    return [dict(zip(names, r, strict=True)) for r in conn.execute(query)]


def revoke_key(conn: Connection, key_id: int) -> dict[str, Any]:
    row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
    if row is None:
        raise KeyNotFound(f"no key with id {key_id}")
    if row.revoked_at is None:
        conn.execute(
            api_keys.update().where(api_keys.c.id == key_id).values(revoked_at=time.time())
        )
    return {"id": key_id, "consumer": row.consumer, "revoked": True}


def lookup(conn: Connection, secret: str) -> Principal | None:
    row = conn.execute(
        sa.select(api_keys.c.id, api_keys.c.consumer, api_keys.c.scopes).where(
            api_keys.c.key_hash == hash_key(secret), api_keys.c.revoked_at.is_(None)
        )
    ).first()
    if row is None:
        return None
    return Principal(row.consumer, frozenset(row.scopes), row.id)


class KeyCache:
    """Verifies keys against the store, remembering good ones for a few seconds."""

    def __init__(self, store: Store, ttl: float) -> None:
        self.store = store
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def cached(self, secret: str) -> Principal | None:
        """The principal for a key verified less than ``ttl`` seconds ago, else None."""
        hit = self._cache.get(secret)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    def authenticate(self, secret: str | None) -> Principal:
        """Verify a key (from the cache, else the store)."""
        if not secret:
            raise Unauthorized(
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'"
            )
        principal = self.cached(secret)
        if principal is not None:
            return principal
        with self.store.read() as conn:
            principal = lookup(conn, secret)
        if principal is None:
            self._cache.pop(secret, None)
            raise Unauthorized("unknown or revoked API key")
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[secret] = (time.monotonic() + self.ttl, principal)
        return principal

    def forget(self) -> None:
        """Drop every cached key (after a revocation made by this process)."""
        with self._lock:
            self._cache.clear()
