"""Time-ordered identifiers for predictions and other ledger rows.

Ids are UUIDv7 strings (RFC 9562): 48 bits of Unix milliseconds, then a counter and random bits.
They sort by creation time, so the ledger pages by id alone, and they are unique across processes
and replicas without coordination.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_seq = 0
# Ids must be unique, not secret (reading a prediction needs a key anyway): a PRNG seeded from
# the OS is enough and avoids a system call per id. Reseeded in a forked child.
_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))


def new_id() -> str:
    """Return a new UUIDv7 string, strictly increasing within this process."""
    global _last_ms, _seq
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _seq += 1
            if _seq > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
                ms += 1
                _seq = 0
        else:
            _seq = 0
        _last_ms = ms
        seq = _seq
        rand = _random.getrandbits(62)
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand
    return str(uuid.UUID(int=value))


def new_ids(n: int) -> list[str]:
    """Return ``n`` new ids in increasing order."""
    return [new_id() for _ in range(n)]
