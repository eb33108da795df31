"""Prediction ids: UUIDv7, unique, increasing within a process, time-ordered."""

from __future__ import annotations

import threading
import time
import uuid

from modelport.ids import new_id, new_ids


def test_ids_are_uuid7_and_carry_the_time() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid.UUID(new_id())
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after + 1


def test_ids_increase_and_never_repeat_across_threads() -> None:
    batches: list[list[str]] = []

    def work() -> None:
        batches.append(new_ids(5000))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for batch in batches:
        assert batch == sorted(batch)
    every = [i for b in batches for i in b]
    assert len(set(every)) == len(every) == 20000


def test_a_block_is_consecutive_canonical_uuids_whatever_its_size() -> None:
    # Sizes that end inside the first 256, cross one or many 256 boundaries, fill the short
    # block's range exactly, and pass it (the long form).
    for n in (1, 2, 255, 256, 300, 5000, 65_536, 70_000):
        for _ in range(20 if n <= 5000 else 2):  # the start is random: try several
            ids = new_ids(n)
            values = [uuid.UUID(i).int for i in ids]
            assert values == list(range(values[0], values[0] + n)), n
            assert ids == [str(uuid.UUID(int=v)) for v in values], n
