"""Where a model runs: fast ones on the event loop, slow or waiting ones in threads."""

from __future__ import annotations

from modelport.routing import PredictTiming


def test_first_call_runs_in_a_thread_then_fast_models_go_inline() -> None:
    timing = PredictTiming()
    assert not timing.inline(5.0)
    timing.add(cpu_ms=0.8, wall_ms=None)
    assert timing.inline(5.0)


def test_cpu_heavy_models_stay_in_threads() -> None:
    timing = PredictTiming()
    for _ in range(10):
        timing.add(cpu_ms=40.0, wall_ms=None)
    assert not timing.inline(5.0)


def test_a_model_that_waits_on_the_loop_is_moved_off_it() -> None:
    timing = PredictTiming()
    timing.add(cpu_ms=0.1, wall_ms=None)
    assert timing.inline(5.0)
    timing.add(cpu_ms=0.1, wall_ms=300.0)  # slept on the loop
    for _ in range(50):
        timing.add(cpu_ms=0.1, wall_ms=None)
    assert not timing.inline(5.0)
