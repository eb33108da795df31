"""Where a model runs: fast ones on the event loop, slow or waiting ones in threads."""

from __future__ import annotations

from modelport.serving.routing import PredictTiming


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


def test_a_one_off_hiccup_does_not_move_a_fast_model() -> None:
    timing = PredictTiming()
    for _ in range(20):
        timing.add(cpu_ms=0.3, wall_ms=0.35)
    timing.add(cpu_ms=0.3, wall_ms=40.0)  # e.g. another thread held the GIL for a while
    assert timing.inline(5.0)


def test_a_model_moved_off_for_waiting_is_tried_again_and_comes_back() -> None:
    timing = PredictTiming()
    timing.add(cpu_ms=0.1, wall_ms=None)
    timing.add(cpu_ms=0.1, wall_ms=500.0)
    assert not timing.inline(5.0)
    decisions = []
    for _ in range(1000):
        inline = timing.inline(5.0)
        decisions.append(inline)
        # still waiting on the first probe, fine on the second
        probes = sum(decisions)
        wall = (500.0 if probes == 1 else 0.2) if inline else None
        timing.add(cpu_ms=0.1, wall_ms=wall)
    first, second = [i for i, d in enumerate(decisions) if d][:2]
    assert 250 <= first <= 260  # tried again after 256 calls
    assert second - first >= 500  # then after twice as long
    assert all(decisions[second:])  # and back on the loop for good
