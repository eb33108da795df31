"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright.

A real server gets traffic and feedback (a pushed scikit-learn classifier, and an online
linear regression made from an algorithm); the browser signs in through the form and the test
checks that the charts are drawn with data, the fit view has its points and line, a read-only
session has no controls, and an admin session rolls an alias back from the page. Screenshots
go to ``test-output/screenshots/`` at the repository root.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport import errors
from modelport.settings import Settings
from tests.api.test_segments import PUSH_SCHEMA, _linear
from tests.conftest import IRIS_COLUMNS, RunningServer, needs, start_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"

pytestmark = needs(
    "Debian's chromium (apt-get install chromium; .ci/run installs it)", Path(CHROMIUM).exists()
)


@pytest.fixture
def busy(settings: Settings, iris_pipeline: Any, iris_frame: Any) -> Iterator[RunningServer]:
    """A server with traffic and feedback on a classifier and an online regression."""
    quick = {"learn_poll_seconds": 0.05, "job_poll_seconds": 0.1, "release_check_seconds": 0.2}
    running = start_server(settings.model_copy(update=quick))
    try:
        mp = running.client()
        mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production", commit="abc123")
        mp.push("iris", iris_pipeline, train_data=iris_frame, commit="def456")
        mp.promote("iris", 2, reason="second version")
        sample = iris_frame.sample(80, random_state=0)
        for start in range(0, 80, 4):
            chunk = sample.iloc[start : start + 4]
            out = mp.predict("iris", chunk[IRIS_COLUMNS])
            mp.feedback(
                [
                    {"prediction_id": pid, "label": label}
                    for pid, label in zip(out["prediction_ids"], chunk["species"], strict=True)
                ]
            )
        # A segmented model: one version per store (v2: store 1, v3: store 2), v1 the fallback.
        mp.create_model("demand", task="regression")
        mp.set_segment_key("demand", "store")
        mp.push("demand", _linear(0.0), schema=PUSH_SCHEMA, alias="production")
        for store, slope in ((1, 3.0), (2, -3.0)):
            mp.push(
                "demand", _linear(slope), schema=PUSH_SCHEMA, alias="production", segment=str(store)
            )
        for store, times in ((1, 6), (2, 3)):
            for _ in range(times):
                mp.predict("demand", [{"store": store, "x": 1.0}])
        mp.create_from_algorithm(
            "trend",
            "online_linear_regression",
            schema={"fields": [{"name": "x", "type": "number"}]},
            target="y",
            online={"min_observations": 20, "snapshot_every": 50, "snapshot_seconds": 0.3},
        )
        rng = np.random.default_rng(3)
        xs = rng.uniform(-3, 3, 150)
        ys = 2 * xs + 1 + rng.normal(0, 0.3, 150)
        mp.observe("trend", [{"x": float(x), "y": float(y)} for x, y in zip(xs, ys, strict=True)])
        deadline = time.monotonic() + 60
        while True:
            try:
                mp.predict("trend", [{"x": 0.0}])
                break
            except errors.ModelportError:
                assert time.monotonic() < deadline, "the online model never made a version"
                time.sleep(0.1)
        for x in (-2.0, -1.0, 1.0, 2.5):
            pid = mp.predict("trend", [{"x": x}])["prediction_ids"][0]
            mp.feedback(pid, label=2 * x + 1)
        yield running
    finally:
        running.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


def _shot(page: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def _open(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)


def _sign_in(page: Any, url: str, key: str) -> None:
    page.goto(url + "/")
    page.fill("#key", key)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)


def _inked_pixels(page: Any, chart_id: str) -> int:
    """How many pixels of the chart's plot canvas are painted."""
    return int(
        page.evaluate(
            """(id) => {
                const canvas = document.querySelector('#' + id + ' canvas');
                const ctx = canvas.getContext('2d');
                const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
                let inked = 0;
                for (let i = 3; i < data.length; i += 4) if (data[i] > 0) inked++;
                return inked;
            }""",
            chart_id,
        )
    )


def _chart(page: Any, chart_id: str) -> dict[str, Any]:
    """What the uPlot object of a chart holds: per series, how many values are not null."""
    info: dict[str, Any] = page.evaluate(
        """(id) => {
            const u = window.modelport.charts[id];
            const canvas = document.querySelector('#' + id + ' canvas');
            return {
                x: u.data[0].length,
                counts: u.data.slice(1).map(s => s.filter(v => v !== null && v !== undefined).length),
                width: canvas.width, height: canvas.height,
            };
        }""",
        chart_id,
    )
    return info


def test_the_dashboard_draws_its_charts_with_data_and_guards_changes(
    busy: RunningServer, browser: Any
) -> None:
    url = busy.url
    reader_key = busy.key("viewer", "read")
    admin_key = busy.key("ops", "admin")
    requested: list[str] = []

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.on("request", lambda r: requested.append(r.url))

    # Without a session, / is the sign-in form; a wrong key gets an error message.
    page.goto(url + "/")
    assert page.is_visible("#login-form")
    page.fill("#key", "mp_not-a-key")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error")
    assert "unknown or revoked" in page.inner_text("#login-error")
    _shot(page, "01-login-error")

    _sign_in(page, url, reader_key)
    assert page.locator("#models .model-row").count() == 3
    _shot(page, "02-models")
    cookies = {c["name"]: c for c in context.cookies()}
    session = cookies["modelport_key"]
    assert session["httpOnly"] is True and session["sameSite"] == "Strict"
    assert session["path"] == "/" and session["secure"] is False  # plain http here

    _open(page, url + "/#/models/iris")
    assert page.inner_text("#model-name") == "iris"
    for chart_id in ("chart-requests", "chart-latency", "chart-metric"):
        info = _chart(page, chart_id)
        assert info["width"] > 200 and info["height"] > 100, (chart_id, info)
        assert sum(info["counts"]) > 0, (chart_id, info)
        assert _inked_pixels(page, chart_id) > 500, chart_id
    requests_chart = _chart(page, "chart-requests")
    assert requests_chart["x"] == 60  # one value per bucket
    assert len(requests_chart["counts"]) == 1  # one version served traffic (v2)
    latency = _chart(page, "chart-latency")
    assert len(latency["counts"]) == 2  # its p50 and p95
    assert page.locator("#versions tbody tr").count() == 2
    assert "def456" in page.inner_text("#versions")
    assert page.locator("#alias-history tbody tr").count() == 2
    assert page.locator("#arms tbody tr").count() >= 1
    assert page.locator("#recent tbody tr").count() == 25
    assert "✓" in page.inner_text("#recent")  # labelled predictions show their feedback
    # A read-only session shows no controls that change things ...
    assert page.locator(".admin-only").count() == 0
    assert page.get_attribute("body", "data-admin") == "0"
    _shot(page, "03-iris-read-only")
    # ... and the API refuses the change even with the dashboard's header.
    refused = page.evaluate(
        """async () => (await fetch('/v1/models/iris/aliases/production/rollback', {
            method: 'POST', headers: {'X-Modelport-Dashboard': '1'}})).status"""
    )
    assert refused == 403

    # A segmented model's figures, for all segments or for one.
    _open(page, url + "/#/models/demand")
    options = page.eval_on_selector_all("#segment option", "els => els.map(e => e.value)")
    assert options == ["", "1", "2"]
    totals = page.inner_text("#timeline-section p.muted")
    assert "v2: 6 requests" in totals and "v3: 3 requests" in totals, totals
    page.select_option("#segment", "2")
    page.wait_for_function(
        """() => document.body.dataset.ready === '1'
            && !document.querySelector('#timeline-section').innerText.includes('v2:')"""
    )
    totals = page.inner_text("#timeline-section p.muted")
    assert "v3: 3 requests" in totals and "v2:" not in totals, totals
    assert page.eval_on_selector("#segment", "e => e.value") == "2"  # kept across the re-render

    _open(page, url + "/#/models/trend")
    fit = page.evaluate(
        """() => {
            const u = window.modelport.charts['chart-fit'];
            return {points: u.data[1].filter(v => v !== null).length,
                    line: u.data[2].filter(v => v !== null).length};
        }"""
    )
    assert fit == {"points": 100, "line": 60}
    holder = page.locator("#chart-fit")
    assert holder.get_attribute("data-fit-points") == "100"
    assert _inked_pixels(page, "chart-fit") > 500
    _shot(page, "04-trend-fit")

    # Everything the pages loaded came from this server; the HTML names no other host.
    assert requested and all(r.startswith(url + "/") for r in requested), requested
    html = context.request.get(url + "/").text()
    assert "http:" not in html and "https:" not in html and "//" not in html
    for src in page.eval_on_selector_all(
        "script[src], link[href]",
        "els => els.map(e => e.getAttribute('src') || e.getAttribute('href'))",
    ):
        assert src.startswith("/static/"), src
    context.close()

    # An admin session: the cookie alone cannot change anything (no dashboard header) ...
    admin = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = admin.new_page()
    _sign_in(page, url, admin_key)
    forged = admin.request.post(url + "/v1/models/iris/aliases/production/rollback")
    assert forged.status == 401
    assert busy.client().model("iris")["aliases"] == {"production": 2}
    # ... while the page's own button rolls production back to v1.
    _open(page, url + "/#/models/iris")
    assert page.get_attribute("body", "data-admin") == "1"
    assert page.locator("#aliases .rollback").count() == 1
    page.click("#aliases button.rollback[data-alias='production']")
    page.wait_for_selector("#status.ok", timeout=30_000)
    assert "production now points at v1" in page.inner_text("#status")
    assert page.inner_text("#aliases [data-alias='production'] .alias-version") == "v1"
    assert busy.client().model("iris")["aliases"] == {"production": 1}
    history = busy.client().alias_history("iris")
    assert history[0]["kind"] == "rollback" and history[0]["actor"] == "ops"
    _shot(page, "05-iris-admin-after-rollback")
    admin.close()
