"""Adaptive batching: shared model calls, rows counted, oversize split, failures isolated."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modelport.errors import ModelportError
from modelport.serving.batching import Batcher, Rows


class Model:
    """A stand-in model call that records what it was given (injected, not patched)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[int] = []
        self.delay = delay
        self.running = 0
        self.most_running = 0

    async def __call__(self, rows: Rows) -> tuple[list[Any], None]:
        self.calls.append(len(rows))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delay)
            if any(r[0] == "bad" for r in rows):
                raise ValueError("bad row")
            return [r[0] * 10 for r in rows], None
        finally:
            self.running -= 1


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


def test_concurrent_requests_share_calls_and_get_their_own_rows_back() -> None:
    model = Model()
    batcher = Batcher(model, max_rows=1000, max_wait_ms=0, max_concurrent=1)

    async def main() -> list[Any]:
        return await asyncio.gather(*(batcher.submit([[i], [i + 100]]) for i in range(20)))

    results = run(main())
    assert [r[0] for r in results] == [[i * 10, (i + 100) * 10] for i in range(20)]
    assert model.calls == [40]  # every request that was ready joined one call
    stats = batcher.stats.as_dict()
    assert stats["batches"] == 1 and stats["requests"] == 20 and stats["rows"] == 40
    assert stats["batch_rows"]["buckets"]["64"] == 1


def test_rows_are_counted_and_oversize_requests_split() -> None:
    model = Model()
    batcher = Batcher(model, max_rows=8, max_wait_ms=0, max_concurrent=1)

    async def main() -> list[Any]:
        big = batcher.submit([[i] for i in range(20)])
        small = [batcher.submit([[i]]) for i in range(5)]
        return await asyncio.gather(big, *small)

    big, *small = run(main())
    assert big[0] == [i * 10 for i in range(20)]
    assert [s[0] for s in small] == [[i * 10] for i in range(5)]
    assert max(model.calls) <= 8 and sum(model.calls) == 25


def test_a_failing_request_fails_alone() -> None:
    model = Model()
    batcher = Batcher(model, max_rows=100, max_wait_ms=0, max_concurrent=1)

    async def main() -> list[Any]:
        return await asyncio.gather(
            batcher.submit([[1]]),
            batcher.submit([["bad"]]),
            batcher.submit([[3]]),
            return_exceptions=True,
        )

    first, bad, third = run(main())
    assert first[0] == [10] and third[0] == [30]
    assert isinstance(bad, ValueError)
    assert batcher.stats.failed_batches == 1


class Refused(Exception):
    """An error the batcher must not retry row by row (as a timeout or an unhealthy version)."""

    retry_alone = False


class Abort(BaseException):
    """An ending nobody planned for (not an Exception)."""


class Stops:
    """A model call that ends the way ``ending`` says, once a first call (in time) is done."""

    def __init__(self, ending: BaseException) -> None:
        self.ending = ending
        self.calls: list[int] = []

    async def __call__(self, rows: Rows) -> tuple[list[Any], None]:
        self.calls.append(len(rows))
        await asyncio.sleep(0.05)
        if len(self.calls) > 1:
            raise self.ending
        return [r[0] for r in rows], None


@pytest.mark.parametrize(
    "ending",
    [Refused("timed out"), asyncio.CancelledError(), Abort()],
    ids=["not-retried-alone", "cancelled", "base-exception"],
)
def test_every_request_of_a_failed_batch_gets_an_answer(ending: BaseException) -> None:
    model = Stops(ending)
    batcher = Batcher(model, max_rows=100, max_wait_ms=0, max_concurrent=1)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(batcher.submit([[0]]))
        await asyncio.sleep(0)  # the first goes alone; the next five queue behind it
        rest = [asyncio.ensure_future(batcher.submit([[i]])) for i in range(1, 6)]
        return await asyncio.wait_for(
            asyncio.gather(first, *rest, return_exceptions=True), timeout=2
        )

    first, *rest = asyncio.run(main())
    assert first[0] == [0]
    assert model.calls == [1, 5]  # the five shared one call, which ended badly
    if isinstance(ending, Refused):
        assert all(answer is ending for answer in rest), rest
    else:
        assert all(isinstance(answer, ModelportError) for answer in rest), rest
        assert "without an answer" in str(rest[0])


def test_a_refused_request_never_queues() -> None:
    model = Model()
    batcher = Batcher(model, max_rows=100, max_wait_ms=0, max_concurrent=1)

    def refuse() -> None:
        raise Refused("unhealthy")

    batcher.admit = refuse
    with pytest.raises(Refused):
        run(batcher.submit([[1]]))
    assert model.calls == [] and batcher.stats.requests == 0


def test_batches_in_flight_are_bounded_and_load_grows_batches() -> None:
    model = Model(delay=0.02)
    batcher = Batcher(model, max_rows=1000, max_wait_ms=0, max_concurrent=2)

    async def main() -> None:
        async def client(n: int) -> None:
            for i in range(10):
                assert (await batcher.submit([[n * 100 + i]]))[0] == [(n * 100 + i) * 10]

        await asyncio.gather(*(client(n) for n in range(16)))

    run(main())
    assert model.most_running <= 2
    assert sum(model.calls) == 160 and len(model.calls) < 160


def test_a_lone_request_does_not_wait_out_the_window() -> None:
    model = Model()
    batcher = Batcher(model, max_rows=1000, max_wait_ms=60_000, max_concurrent=2)
    assert run(batcher.submit([[7]]))[0] == [70]  # a minute-long window would time out here


class TaskModel(Model):
    """A model that also records which task called it."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(delay)
        self.tasks: list[asyncio.Task[Any] | None] = []

    async def __call__(self, rows: Rows) -> tuple[list[Any], None]:
        self.tasks.append(asyncio.current_task())
        return await super().__call__(rows)


def test_a_request_alone_runs_on_its_own_task_and_is_counted_and_answered_as_a_batch() -> None:
    """``alone`` with nothing running or queued: the model is called from the request's own
    task (no batch task), the batch is counted as any other, and a failure is its answer."""
    model = TaskModel()
    batcher = Batcher(model, max_rows=10, max_wait_ms=0, max_concurrent=1)

    async def main() -> None:
        me = asyncio.current_task()
        assert (await batcher.submit([[1], [2]], alone=True))[0] == [10, 20]
        assert model.tasks == [me]
        with pytest.raises(ValueError, match="bad row"):
            await batcher.submit([["bad"]], alone=True)
        assert model.tasks == [me, me]
        assert (await batcher.submit([[3]]))[0] == [30]  # not alone: the batch's own task
        assert model.tasks[2] is not me
        # more rows than one batch takes: split and queued as usual
        assert (await batcher.submit([[i] for i in range(12)], alone=True))[0] == [
            i * 10 for i in range(12)
        ]
        assert me not in model.tasks[3:]

    run(main())
    stats = batcher.stats.as_dict()
    assert stats["requests"] == 4 and stats["batches"] == 5 and stats["failed_batches"] == 1
    assert stats["rows"] == 2 + 1 + 1 + 12
    assert model.calls == [2, 1, 1, 10, 2]


def test_a_request_alone_joins_the_queue_while_a_batch_runs() -> None:
    """``alone`` is the caller's word; with a batch running the rows still queue behind it
    and go in the next batch, with the others that came meanwhile."""
    model = TaskModel(delay=0.05)
    batcher = Batcher(model, max_rows=100, max_wait_ms=0, max_concurrent=1)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(batcher.submit([[1]]))
        await asyncio.sleep(0.01)  # the first batch is running
        return await asyncio.gather(
            first, batcher.submit([[2]], alone=True), batcher.submit([[3]], alone=True)
        )

    results = run(main())
    assert [r[0] for r in results] == [[10], [20], [30]]
    assert model.calls == [1, 2]  # the two later requests shared the second batch


@pytest.mark.parametrize("max_concurrent", [1, 3])
def test_probabilities_follow_their_rows(max_concurrent: int) -> None:
    async def predict(rows: Rows) -> tuple[list[Any], list[dict[str, float]]]:
        return [r[0] for r in rows], [{"p": float(r[0])} for r in rows]

    batcher = Batcher(predict, max_rows=3, max_wait_ms=1, max_concurrent=max_concurrent)

    async def main() -> list[Any]:
        return await asyncio.gather(*(batcher.submit([[i], [i + 0.5]]) for i in range(6)))

    for i, (preds, probas) in enumerate(run(main())):
        assert preds == [i, i + 0.5] and probas == [{"p": float(i)}, {"p": i + 0.5}]


def test_per_model_settings_reach_the_batcher(
    server: Any, iris_pipeline: Any, iris_frame: Any
) -> None:
    from tests.conftest import IRIS_COLUMNS

    mp = server.client()
    mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    http = server.http()
    assert http.get("/v1/models/iris/serving").json() == {"model": "iris", "serving": {}}
    r = http.put("/v1/models/iris/serving", json={"max_batch_rows": 2, "max_wait_ms": 0})
    assert r.json() == {"model": "iris", "serving": {"max_batch_rows": 2, "max_wait_ms": 0.0}}
    rows = iris_frame[IRIS_COLUMNS].head(5).to_dict("records")
    out = mp.predict("iris", rows)
    assert out["predictions"] == list(iris_pipeline.predict(iris_frame[IRIS_COLUMNS].head(5)))
    stats = http.get("/v1/models/iris/versions/1/batching").json()
    assert stats["batches"] == 3 and stats["rows"] == 5  # 5 rows in calls of at most 2
    assert stats["batch_rows"]["buckets"]["2"] == 3 - stats["batch_rows"]["buckets"]["1"]
    for bad, field in (
        ({"max_batch_rows": 0}, "max_batch_rows"),
        ({"colour": 1}, "colour"),
        ({"max_wait_ms": "x"}, "max_wait_ms"),
    ):
        r = http.put("/v1/models/iris/serving", json=bad)
        assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == field
    http.put("/v1/models/iris/serving", json={}).raise_for_status()  # back to the defaults
    mp.predict("iris", rows)
    assert http.get("/v1/models/iris/versions/1/batching").json()["batches"] == 1
