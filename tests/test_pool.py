"""The predict threads: the timeout counts from the start, waits are bounded, hung calls are
replaced by spares (up to the cap) that retire when they end."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from modelport.serving.pool import NoThread, Overdue, PredictPool


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of the test: every call still hanging on it returns."""
    event = threading.Event()
    yield event
    event.set()


def nap(seconds: float) -> Callable[[], float]:
    def call() -> float:
        time.sleep(seconds)
        return seconds

    return call


def hang(release: threading.Event) -> Callable[[], str]:
    def call() -> str:
        release.wait(20)
        return "ended"

    return call


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


def test_the_timeout_counts_from_when_the_call_gets_a_thread() -> None:
    pool = PredictPool(1, 0)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(pool.run(nap(0.3), 5))
        await asyncio.sleep(0.05)
        # Waits 0.25 s for the thread, then runs 0.2 s: 0.45 s in all, within 0.35 s of running.
        return [await pool.run(nap(0.2), 0.35), await first]

    assert run(main()) == [0.2, 0.3]
    pool.close()


def test_a_call_that_gets_no_thread_in_time_never_runs() -> None:
    pool = PredictPool(1, 0)
    ran = threading.Event()

    async def main() -> float:
        busy = asyncio.ensure_future(pool.run(nap(0.6), 5))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(NoThread, match=r"1 calls running on 1 threads, 0 of them past"):
            await pool.run(ran.set, 0.2)
        waited = time.monotonic() - started
        await busy
        return waited

    assert run(main()) < 0.5  # answered at its timeout, not when the thread came free
    assert not ran.is_set()
    pool.close()


def test_a_hung_call_is_replaced_by_a_spare_that_retires_when_it_ends(
    release: threading.Event,
) -> None:
    pool = PredictPool(1, 1)

    async def main() -> None:
        with pytest.raises(Overdue) as late:
            await pool.run(hang(release), 0.1)
        assert pool.state() == {"threads": 1, "running": 1, "overdue": 1, "waiting": 0}
        assert await pool.run(nap(0), 0.5) == 0  # a spare took it
        assert pool.state()["threads"] == 2
        release.set()
        assert await late.value.finished == "ended"

    run(main())
    deadline = time.monotonic() + 5
    while pool.state()["threads"] > 1:  # the spare retires
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert pool.state() == {"threads": 1, "running": 0, "overdue": 0, "waiting": 0}
    pool.close()


def test_past_the_cap_hung_calls_hold_their_threads(release: threading.Event) -> None:
    pool = PredictPool(1, 1)

    async def main() -> None:
        for _ in range(2):
            with pytest.raises(Overdue):
                await pool.run(hang(release), 0.1)
        # Two hung calls, one spare: no thread is left for a call in time.
        with pytest.raises(NoThread, match="2 of them past their timeout"):
            await pool.run(nap(0), 0.2)

    run(main())
    assert pool.state()["threads"] == 2
    release.set()
    pool.close()


def test_close_waits_for_calls_in_time_but_not_for_hung_ones(release: threading.Event) -> None:
    pool = PredictPool(2, 1)

    async def main() -> float:
        with pytest.raises(Overdue):
            await pool.run(hang(release), 0.1)
        in_time = asyncio.ensure_future(pool.run(nap(0.3), 5))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await asyncio.to_thread(pool.close)
        assert 0.15 < time.monotonic() - started < 3  # the call in time, not the hung one
        return float(await in_time)

    assert run(main()) == 0.3
    with pytest.raises(RuntimeError, match="closed"):
        run(pool.run(nap(0), 1))
