"""Time-ordered identifiers for predictions and other ledger rows.

Ids are UUIDv7 strings (RFC 9562): 48 bits of Unix milliseconds, then a counter and random bits.
They sort by creation time, so the ledger pages by id alone, and they are unique across processes
and replicas without coordination.

The ids of one request are made as a block: consecutive integers in the low, random bits, so
the ledger stores a request's rows under its first id and a row count, and finds any
prediction id's row by a range lookup (:func:`offset`).
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from typing import TypeGuard

#: The largest id or version number the store holds (its integer columns are 32-bit on
#: PostgreSQL); larger numbers in paths, queries and bodies are refused as invalid input before
#: they reach the database.
MAX_ID = 2**31 - 1

_lock = threading.Lock()
_last_ms = 0
_seq = 0
# Ids must be unique, not secret (reading a prediction needs a key anyway): a PRNG seeded from
# the OS is enough and avoids a system call per id. Reseeded in a forked child.
_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))


#: Blocks up to this size share every hex digit but the last four.
_SHORT_BLOCK = 0x10000
#: The most ids one block (one request's predictions, one ledger row) may hold.
MAX_BLOCK = 1 << 24
#: Two hex digits per byte value: a block's last four digits are two of these, joined
#: (formatting ``f"{x:04x}"`` per id costs five times as much on a 100-row request).
_HEX2 = [f"{i:02x}" for i in range(256)]


def new_id() -> str:
    """Return a new UUIDv7 string, strictly increasing within this process."""
    return new_ids(1)[0]


def new_ids(n: int) -> list[str]:
    """Return ``n`` new ids in increasing order, consecutive in their low bits."""
    global _last_ms, _seq
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _seq += 1
            if _seq > 0xFFF:  # 4096 blocks in one millisecond: borrow the next one
                ms += 1
                _seq = 0
        else:
            _seq = 0
        _last_ms = ms
        seq = _seq
        rand = _random.getrandbits(62)
    if n <= _SHORT_BLOCK:
        low = min(rand & 0xFFFF, _SHORT_BLOCK - n)
        rand = (rand & ~0xFFFF) | low
    else:
        rand %= (1 << 62) - n
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand
    if n <= _SHORT_BLOCK:
        h = f"{value:032x}"
        return _block(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:28]}", low, n)
    return [str(uuid.UUID(int=value + i)) for i in range(n)]


def _block(prefix: str, low: int, n: int) -> list[str]:
    """``prefix`` followed by the four hex digits of each of ``low`` .. ``low + n - 1``."""
    out: list[str] = []
    x, end = low, low + n
    while x < end:
        high, first = divmod(x, 256)
        stop = min(end, (high + 1) * 256)
        out += map((prefix + _HEX2[high]).__add__, _HEX2[first : first + stop - x])
        x = stop
    return out


def first_id_at(seconds: float) -> str:
    """The smallest id made at or after ``seconds`` (epoch): ids compare as strings in the
    order of their times, so a range of ids is a range of times."""
    ms = max(0, int(seconds * 1000))
    return str(uuid.UUID(int=(ms << 80) | (0x7 << 76) | (0b10 << 62)))


def offset(first: str, prediction_id: str) -> int:
    """How many ids after ``first`` (a block's first id) ``prediction_id`` comes; -1 if not an id."""
    try:
        return uuid.UUID(prediction_id).int - uuid.UUID(first).int
    except ValueError:
        return -1


def lowest_first(prediction_id: str) -> str:
    """The smallest first id a block holding ``prediction_id`` can have (it holds at most
    :data:`MAX_BLOCK` ids): a lookup by id searches ``[lowest_first(id), id]`` and never the
    rows below, live or deleted. ``prediction_id`` must be an id."""
    return str(uuid.UUID(int=max(0, uuid.UUID(prediction_id).int - MAX_BLOCK + 1)))


def request_id() -> str:
    """A random 32-hex-digit id for a request that came without ``X-Request-ID``."""
    return f"{_random.getrandbits(128):032x}"


def is_version_number(value: object) -> TypeGuard[int]:
    """Whether ``value`` (decoded JSON) is a usable version number or id: 1 to :data:`MAX_ID`."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID
