"""``serve --workers N``: processes over one store behave as one service."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from modelport import Client
from tests.conftest import free_port, make_key

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def _fresh(url: str, key: str) -> httpx.Client:
    # One connection per client: the kernel hands new connections to any worker.
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


@contextlib.contextmanager
def two_workers(home: Path, store_url: str) -> Iterator[str]:
    """``modelport serve --workers 2`` on a free port, until SIGTERM (which must exit 0);
    yields its URL once both workers answer."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "modelport.cli", "serve", "--workers", "2"]
    command += ["--port", str(port), "--home", str(home), "--store", store_url]
    proc = subprocess.Popen(
        [*command, "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:
            try:
                with httpx.Client(base_url=url, timeout=30) as http:
                    pids.add(http.get("/v1/health").json()["pid"])
            except httpx.TransportError:
                time.sleep(0.1)
        assert len(pids) == 2, "two workers should answer"
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_workers_share_the_store_and_see_alias_moves_within_a_second(
    tmp_path: Path, store_url: str, settings: Any, iris_pipeline: Any, iris_frame: Any
) -> None:
    home = tmp_path / "home"
    key = make_key(settings.model_copy(update={"home": home, "store": store_url}), "ops", ["admin"])
    with two_workers(home, store_url) as url:
        with Client(url, key) as mp:
            mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
            mp.push("iris", iris_pipeline, train_data=iris_frame)
            time.sleep(1.0)
            assert _versions_seen(url, key) == {1}
            mp.promote("iris", 2, reason="through one worker")
        time.sleep(1.0)
        assert _versions_seen(url, key) == {2}
        with Client(url, key) as mp:
            page = mp.predictions("iris", limit=1000)["predictions"]
        assert len(page) == 60 and {p["version"] for p in page} == {1, 2}


def _versions_seen(url: str, key: str) -> set[int]:
    seen, pids = set(), set()
    for _ in range(30):
        with _fresh(url, key) as http:
            r = http.post("/v1/models/iris/predict", json={"inputs": [ROW]})
            assert r.status_code == 200, r.text
            seen.add(r.json()["version"])
            pids.add(http.get("/v1/health").json()["pid"])
    assert len(pids) == 2, "both workers should have answered"
    return seen
