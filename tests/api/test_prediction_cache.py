"""The prediction cache against a real server: repeated rows answered from a version's cache
(each still its own prediction, marked cached), other rows scored, a moved alias reaching
another version's cache, and no cache for custom code, undeclared models or online models."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from modelport.settings import Settings
from tests.api.models import FailsOnNegative
from tests.api.test_metrics import scrape, value
from tests.conftest import RunningServer, start_server

X_SCHEMA = {"fields": [{"name": "x", "type": "number"}]}


def _linear(slope: float) -> LinearRegression:
    X = pd.DataFrame({"x": [0.0, 1.0, 2.0]})
    return LinearRegression().fit(X, slope * X["x"])


def test_a_repeated_row_is_answered_from_the_cache_and_logged_as_cached(
    server: RunningServer,
) -> None:
    mp = server.client()
    http = server.http()
    mp.push("price", _linear(2.0), schema=X_SCHEMA, alias="production")
    assert http.put("/v1/models/price/serving", json={"cache_max_entries": 2}).status_code == 200

    first = mp.predict("price", [{"x": 1.0}])
    again = mp.predict("price", [{"x": 1.0}])
    assert again["predictions"] == first["predictions"] == pytest.approx([2.0])
    assert again["prediction_ids"] != first["prediction_ids"]
    assert mp.prediction(first["prediction_ids"][0])["cached"] is False
    assert mp.prediction(again["prediction_ids"][0])["cached"] is True

    # A request mixing a known row and a new one: each row marked as it was answered.
    mixed = mp.predict("price", [{"x": 3.0}, {"x": 1.0}])
    assert mixed["predictions"] == pytest.approx([6.0, 2.0])
    assert [mp.prediction(i)["cached"] for i in mixed["prediction_ids"]] == [False, True]

    stats = http.get("/v1/models/price/versions/1/batching").json()["cache"]
    assert stats["hits"] == 2 and stats["misses"] == 2 and stats["entries"] == 2
    # Bounded: a third distinct row pushes out the least recently used (x=1: the mixed
    # request looked it up before it stored x=3).
    mp.predict("price", [{"x": 4.0}])
    stats = http.get("/v1/models/price/versions/1/batching").json()["cache"]
    assert stats["entries"] == 2 and stats["evictions"] == 1
    assert mp.prediction(mp.predict("price", [{"x": 3.0}])["prediction_ids"][0])["cached"]
    assert not mp.prediction(mp.predict("price", [{"x": 1.0}])["prediction_ids"][0])["cached"]

    figures = scrape(http)
    assert value(figures, "modelport_cache_hits_total", model="price", version="1") == 3
    assert value(figures, "modelport_cache_misses_total", model="price", version="1") == 4

    # Moving the alias reaches the new version, whose cache knows nothing yet.
    mp.push("price", _linear(-1.0), schema=X_SCHEMA, alias="production")
    moved = mp.predict("price", [{"x": 1.0}])
    assert moved["version"] == 2 and moved["predictions"] == pytest.approx([-1.0])
    assert mp.prediction(moved["prediction_ids"][0])["cached"] is False
    back = mp.predict("price", [{"x": 1.0}])
    assert mp.prediction(back["prediction_ids"][0])["cached"] is True


def test_custom_code_and_models_declared_nondeterministic_are_not_cached(
    server: RunningServer,
) -> None:
    mp = server.client()
    http = server.http()
    mp.push("custom", FailsOnNegative(), schema=X_SCHEMA, alias="production")
    mp.push("noisy", _linear(1.0), schema=X_SCHEMA, alias="production", deterministic=False)
    mp.push("declared", FailsOnNegative(), schema=X_SCHEMA, alias="production", deterministic=True)
    for name in ("custom", "noisy", "declared"):
        assert http.put(f"/v1/models/{name}/serving", json={"cache_max_entries": 10}).is_success
        ids = [mp.predict(name, [{"x": 1.0}])["prediction_ids"][0] for _ in range(2)]
        cached = mp.prediction(ids[1])["cached"]
        stats = http.get(f"/v1/models/{name}/versions/1/batching").json()["cache"]
        if name == "declared":
            assert cached is True and stats["hits"] == 1
        else:
            assert cached is False and stats is None


def test_the_server_default_caches_pushed_models_but_not_online_ones(settings: Settings) -> None:
    running = start_server(
        settings.model_copy(update={"cache_max_entries": 100, "learn_poll_seconds": 0.05})
    )
    try:
        mp = running.client()
        http = running.http()
        mp.push("price", _linear(2.0), schema=X_SCHEMA, alias="production")
        mp.predict("price", [{"x": 1.0}])
        assert (
            http.get("/v1/models/price/versions/1/batching").json()["cache"]["max_entries"] == 100
        )

        mp.create_from_algorithm(
            "trend",
            "online_linear_regression",
            schema=X_SCHEMA,
            target="y",
            online={"min_observations": 5, "snapshot_every": 10, "snapshot_seconds": 0.1},
        )
        mp.observe("trend", [{"x": float(i), "y": 2.0 * i} for i in range(20)])
        import time

        deadline = time.monotonic() + 30
        while "production" not in mp.model("trend")["aliases"]:
            assert time.monotonic() < deadline, "no snapshot"
            time.sleep(0.05)
        version = mp.model("trend")["aliases"]["production"]
        stats = http.get(f"/v1/models/trend/versions/{version}/batching").json()
        assert stats["cache"] is None
        # Asked for explicitly, an online model's snapshots are cached (each is immutable).
        assert http.put("/v1/models/trend/serving", json={"cache_max_entries": 5}).is_success
        stats = http.get(f"/v1/models/trend/versions/{version}/batching").json()
        assert stats["cache"]["max_entries"] == 5
    finally:
        running.stop()
