"""The dashboard's endpoints over HTTP: timeline and fit figures against hand computations,
recent predictions, bad parameters, the session cookie and its CSRF rule, the sign-in form."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.linear_model import LinearRegression

from modelport.settings import Settings
from modelport.store import Store, rollups
from modelport.store.tables import failures, predictions
from modelport.timefmt import parse_window
from tests.conftest import RunningServer, start_server

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture(scope="module")
def line_model() -> LinearRegression:
    """y = 3x - 1, fitted exactly on named data."""
    x = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    return LinearRegression().fit(x, 3 * x["x"] - 1)


def _ledger(server: RunningServer) -> list[Any]:
    st = Store(server.settings.store_url)
    try:
        with st.read() as conn:
            return list(
                conn.execute(
                    sa.select(
                        predictions.c.id, predictions.c.rows, predictions.c.latency_ms
                    ).order_by(predictions.c.id)
                )
            )
    finally:
        st.close()


def _change(server: RunningServer, *statements: Any) -> None:
    st = Store(server.settings.store_url)
    try:
        with st.transaction() as conn:
            for statement in statements:
                conn.execute(statement)
            rollups.rebuild(conn)  # the roll-ups follow rows moved back in time
    finally:
        st.close()


def test_timeline_counts_and_latencies_per_bucket_match_a_hand_computation(
    server: RunningServer, line_model: Any
) -> None:
    mp = server.client()
    mp.push("line", line_model, alias="production")
    for i in range(5):
        mp.predict("line", [{"x": float(i)}] * (1 + i % 3))  # 1, 2, 3, 1, 2 rows
    mp.predict("line", [{"x": 9.0}])  # becomes a shadow copy: left out
    rows = _ledger(server)
    assert len(rows) == 6
    now = time.time()
    # Two requests 90 s ago (bucket 58 of 60 one-minute buckets), one 30.5 minutes ago
    # (bucket 29), two stay in the newest bucket; two failures 90 s ago.
    _change(
        server,
        predictions.update()
        .where(predictions.c.id.in_([rows[0].id, rows[1].id]))
        .values(ts=now - 90),
        predictions.update().where(predictions.c.id == rows[2].id).values(ts=now - 1830),
        predictions.update().where(predictions.c.id == rows[5].id).values(shadow=True),
        failures.insert().values(
            [
                {"ts": now - 90, "model": "line", "version": 1, "consumer": "c", "request_id": r}
                | {"error": "boom"}
                for r in ("r1", "r2")
            ]
        ),
    )
    out = server.http().get("/v1/models/line/timeline", params={"window": "1h", "buckets": 60})
    assert out.status_code == 200, out.text
    body = out.json()
    assert body["bucket_seconds"] == 60 and body["window"]["seconds"] == 3600
    (v1,) = body["versions"]
    series = v1["series"]
    assert len(series) == 60
    busy = {i: p for i, p in enumerate(series) if p["requests"] or p["errors"]}
    assert set(busy) == {29, 58, 59}

    def expect(point: dict[str, Any], chosen: list[Any]) -> None:
        lat = np.array([r.latency_ms for r in chosen])
        assert point["requests"] == len(chosen)
        assert point["rows"] == sum(r.rows for r in chosen)
        figures = point["latency_ms"]
        assert figures["mean"] == pytest.approx(lat.mean())
        assert figures["p50"] == pytest.approx(np.percentile(lat, 50))
        assert figures["p95"] == pytest.approx(np.percentile(lat, 95))
        assert figures["max"] == pytest.approx(lat.max())
        assert figures["sampled"] == len(chosen)

    expect(busy[58], [rows[0], rows[1]])
    expect(busy[29], [rows[2]])
    expect(busy[59], [rows[3], rows[4]])
    assert busy[58]["errors"] == 2 and busy[59]["errors"] == 0
    assert (v1["requests"], v1["rows"], v1["errors"]) == (5, 1 + 2 + 3 + 1 + 2, 2)
    assert body["latency_percentiles"]["complete"] is True
    assert body["latency_percentiles"]["sampled"] == 5
    # A window of 15 minutes in 3 buckets sees only the newest two and the failures.
    short = server.http().get("/v1/models/line/timeline?window=15m&buckets=3").json()
    assert [p["requests"] for p in short["versions"][0]["series"]] == [0, 0, 4]
    assert [p["errors"] for p in short["versions"][0]["series"]] == [0, 0, 2]


def test_timeline_and_fit_reject_bad_parameters_naming_the_field(
    server: RunningServer, iris_pipeline: Any
) -> None:
    server.client().push("iris", iris_pipeline, alias="production")
    http = server.http()
    for url, field in [
        ("/v1/models/iris/timeline?window=soon", "window"),
        ("/v1/models/iris/timeline?window=-2h", "window"),
        ("/v1/models/iris/timeline?buckets=0", "buckets"),
        ("/v1/models/iris/timeline?buckets=5000", "buckets"),
        ("/v1/models/iris/fit?points=0", "points"),
        ("/v1/models/iris/fit?points=many", "points"),
        ("/v1/models/iris/recent?limit=0", "limit"),
    ]:
        response = http.get(url)
        assert response.status_code == 422, (url, response.text)
        assert response.json()["error"]["details"][0]["field"] == field, url
    assert http.get("/v1/models/nope/timeline").status_code == 404
    assert http.get("/v1/models/nope/fit").status_code == 404
    shape = http.get("/v1/models/iris/fit")
    assert shape.status_code == 409
    message = shape.json()["error"]["message"]
    assert "not regression" in message and "4 input fields" in message
    assert (
        parse_window("2h") == 7200 and parse_window("15m") == 900 and parse_window("7d") == 604800
    )
    assert parse_window("90") == 90


def test_fit_view_points_and_line_match_a_hand_computation(
    server: RunningServer, line_model: Any
) -> None:
    mp = server.client()
    mp.push("line", line_model, alias="production")
    ids = [mp.predict("line", [{"x": x}])["prediction_ids"][0] for x in (0.5, 1.5, 4.0, -2.0)]
    mp.feedback(ids[0], label=1.0)
    mp.feedback(ids[1], label=2.0)
    mp.feedback(ids[2], label=11.0)
    mp.feedback(ids[1], label=5.0)  # supersedes 2.0
    ledger_rows = len(_ledger(server))

    body = server.http().get("/v1/models/line/fit").json()
    assert (body["version"], body["alias"], body["field"]) == (1, "production", "x")
    # Newest label per prediction, oldest first by the feedback's order; ids[3] has none.
    assert [(p["x"], p["y"]) for p in body["points"]] == [(0.5, 1.0), (4.0, 11.0), (1.5, 5.0)]
    grid = np.linspace(0.5, 4.0, 60)
    assert [p["x"] for p in body["line"]] == pytest.approx(grid)
    assert [p["y"] for p in body["line"]] == pytest.approx(3 * grid - 1)
    # The newest two points only.
    two = server.http().get("/v1/models/line/fit?points=2").json()
    assert [(p["x"], p["y"]) for p in two["points"]] == [(4.0, 11.0), (1.5, 5.0)]
    assert [p["x"] for p in two["line"]] == pytest.approx(np.linspace(1.5, 4.0, 60))
    # Scoring the line wrote nothing to the ledger.
    assert len(_ledger(server)) == ledger_rows

    recent = server.http().get("/v1/models/line/recent?limit=3").json()["predictions"]
    assert [r["id"] for r in recent] == [ids[3], ids[2], ids[1]]  # newest first
    assert recent[2]["feedback"]["label"] == 5.0 and recent[2]["feedback"]["items"] == 2
    assert recent[2]["feedback"]["error"] == pytest.approx(5.0 - 3.5)
    assert recent[0]["feedback"]["items"] == 0 and recent[0]["feedback"]["label"] is None


def test_fit_view_of_an_online_model_reads_its_observations(settings: Settings) -> None:
    quick = {"learn_poll_seconds": 0.05}
    running = start_server(settings.model_copy(update=quick))
    try:
        mp = running.client()
        mp.create_from_algorithm(
            "trend",
            "online_linear_regression",
            schema={"fields": [{"name": "x", "type": "number"}]},
            target="y",
            online={"min_observations": 5, "snapshot_every": 10, "snapshot_seconds": 0.2},
        )
        mp.observe("trend", [{"x": float(x), "y": float(2 * x)} for x in range(30)])
        deadline = time.monotonic() + 30
        while (fit := running.http().get("/v1/models/trend/fit?points=10")).status_code != 200:
            assert time.monotonic() < deadline, fit.text
            time.sleep(0.1)
        body = fit.json()
        assert [(p["x"], p["y"]) for p in body["points"]] == [
            (float(x), float(2 * x)) for x in range(20, 30)
        ]
        assert {p["source"] for p in body["points"]} == {"api"}
        assert len(body["line"]) == 60 and body["line"][0]["x"] == 20.0
    finally:
        running.stop()


def test_session_cookie_reads_but_changes_only_with_the_dashboard_header(
    server: RunningServer, line_model: Any
) -> None:
    mp = server.client()
    mp.push("line", line_model, alias="production")
    mp.push("line", line_model)
    mp.promote("line", 2)
    reader, admin = server.key("viewer", "read"), server.key("ops", "admin")
    plain = server.http("")

    wrong = plain.post("/login", data={"key": "mp_wrong"})
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.text
    assert 'id="login-form"' in wrong.text
    no_read = plain.post("/login", data={"key": server.key("app", "predict")})
    assert no_read.status_code == 403 and "lacks the read scope" in no_read.text

    signed = plain.post("/login", data={"key": reader})
    assert signed.status_code == 303 and signed.headers["location"] == "/"
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith("modelport_key=") and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Path=/" in cookie and "Secure" not in cookie
    plain.cookies.clear()  # the cookies below are sent by hand
    jar = {"Cookie": f"modelport_key={reader}"}
    assert plain.get("/v1/models", headers=jar).status_code == 200
    me = plain.get("/v1/whoami", headers=jar).json()
    assert me == {"consumer": "viewer", "scopes": ["read"], "admin": False, "no_auth": False}
    assert plain.get("/", headers=jar).text.count("/static/dashboard.js") == 1
    dashboard = {"X-Modelport-Dashboard": "1"}
    rollback = "/v1/models/line/aliases/production/rollback"
    assert plain.post(rollback, headers={**jar, **dashboard}).status_code == 403

    admin_jar = {"Cookie": f"modelport_key={admin}"}
    assert plain.get("/v1/whoami", headers=admin_jar).json()["admin"] is True
    # A cross-site form sends the cookie but cannot add the header: refused.
    assert plain.post(rollback, headers=admin_jar).status_code == 401
    assert (
        plain.put(
            "/v1/models/line/aliases/production", headers=admin_jar, json={"version": 1}
        ).status_code
        == 401
    )
    assert mp.model("line")["aliases"] == {"production": 2}
    moved = plain.post(rollback, headers={**admin_jar, **dashboard})
    assert moved.status_code == 200 and moved.json()["version"] == 1

    out = plain.get("/logout", headers=jar)
    assert out.status_code == 303 and 'modelport_key=""' in out.headers["set-cookie"]
    assert "Max-Age=0" in out.headers["set-cookie"]


def test_the_page_and_its_assets_come_from_the_server(server: RunningServer) -> None:
    plain = server.http("")
    login = plain.get("/")
    assert login.status_code == 200 and 'id="login-form"' in login.text
    assert "default-src 'self'" in login.headers["content-security-policy"]
    page = plain.get("/", headers={"Cookie": f"modelport_key={server.admin_key}"}).text
    assert "http:" not in page and "https:" not in page and "//" not in page
    for name, media in [
        ("uPlot.iife.min.js", "text/javascript"),
        ("uPlot.min.css", "text/css"),
        ("dashboard.js", "text/javascript"),
        ("dashboard.css", "text/css"),
        ("uPlot.LICENSE", None),
        ("ASSETS.md", None),
    ]:
        asset = plain.get(f"/static/{name}")
        assert asset.status_code == 200, name
        if media:
            assert asset.headers["content-type"].startswith(media), name
    assert "uPlot" in plain.get("/static/uPlot.iife.min.js").text
    assert plain.get("/static/nope.js").status_code == 404
    assert plain.get("/static/..%2Fdashboard.py").status_code == 404


def test_no_auth_shows_the_dashboard_without_signing_in(settings: Settings) -> None:
    running = start_server(settings.model_copy(update={"no_auth": True}))
    try:
        page = running.http("").get("/")
        assert page.status_code == 200
        assert 'id="login-form"' not in page.text and "/static/dashboard.js" in page.text
        me = running.http("").get("/v1/whoami").json()
        assert me["admin"] is True and me["no_auth"] is True
    finally:
        running.stop()
