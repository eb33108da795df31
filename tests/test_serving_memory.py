"""A serving process's memory: pandas and pyarrow stay out until a model needs a DataFrame, and
the heap a burst of traffic left free goes back to the system once traffic is quiet.

scikit-learn imports pandas whenever it is installed (``flavors.import_scikit_learn``); a real
``modelport serve`` process is asked, through the files it has mapped, what it loaded.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport import Client
from modelport.serving import memory
from tests.conftest import make_key
from tests.procs import ServerProcess


def _mapped(pid: int, package: str) -> bool:
    """Whether the process has a file of ``package`` mapped (its compiled modules)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return f"/{package}/" in maps


def test_an_array_model_is_served_without_pandas_and_a_frame_model_still_gets_its_frame(
    tmp_path: Path, store_url: str, settings: Any, iris_pipeline: Any, iris_frame: Any
) -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    on_arrays = LogisticRegression().fit(X, y)
    home = tmp_path / "home"
    key = make_key(settings.model_copy(update={"home": home, "store": store_url}), "ops", ["admin"])
    server = ServerProcess(home, store_url).start()
    try:
        assert server.proc is not None
        pid = server.proc.pid
        with Client(server.url, key) as mp:
            mp.push("arrays", on_arrays, alias="production")
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as http:
            rows = [dict(zip(["x0", "x1", "x2", "x3"], map(float, r), strict=True)) for r in X[:5]]
            native = http.post("/v1/models/arrays/predict", json={"inputs": rows})
            assert native.status_code == 200, native.text
            assert native.json()["predictions"] == on_arrays.predict(X[:5]).tolist()
            tensor = {"name": "input-0", "shape": [5, 4], "datatype": "FP64"}
            v2 = http.post(
                "/v2/models/arrays/infer",
                json={"inputs": [{**tensor, "data": X[:5].ravel().tolist()}]},
            )
            assert v2.status_code == 200, v2.text
            # The model was loaded and called: scikit-learn is in, pandas and pyarrow are not.
            assert _mapped(pid, "sklearn")
            assert not _mapped(pid, "pandas"), "serving an array model loaded pandas"
            assert not _mapped(pid, "pyarrow"), "serving an array model loaded pyarrow"

            # A model fitted on named columns gets a DataFrame: pandas comes in when it loads.
            with Client(server.url, key) as mp:
                mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
            features = iris_frame.drop(columns=["species"]).head(3)
            framed = http.post(
                "/v1/models/iris/predict", json={"inputs": features.to_dict(orient="records")}
            )
            assert framed.status_code == 200, framed.text
            assert framed.json()["predictions"] == iris_pipeline.predict(features).tolist()
            assert _mapped(pid, "pandas")
    finally:
        server.kill()


_HOLES = """
import sys
from modelport.serving import memory
from modelport.serving.health import rss_bytes

# 3,000 blocks of 48 KiB (below malloc's mmap threshold: they come from the heap), then every
# block but one in 50 freed: the heap is full of holes that free() alone does not give back.
blocks = [bytearray(48 * 1024) for _ in range(3000)]
kept = blocks[::50]
del blocks
held = rss_bytes()
released = memory.trim()
print(held, released, rss_bytes(), len(kept))
"""


@pytest.mark.skipif(not memory.supported(), reason="the C library has no malloc_trim (not glibc)")
def test_trim_gives_a_heap_full_of_holes_back_to_the_system() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _HOLES], capture_output=True, text=True, timeout=60, check=True
    )
    held, released, after, _ = map(int, done.stdout.split())
    mib = 2**20
    assert released > 100 * mib, (held / mib, released / mib)  # of ~140 MiB freed
    assert after < held - 100 * mib


def test_a_quiet_trim_waits_for_traffic_to_stop_and_trims_once_per_burst() -> None:
    import asyncio

    count = [0]
    trims: list[int] = []
    quiet = memory.QuietTrim(lambda: count[0], trims.append)

    def tick() -> None:
        asyncio.run(quiet.tick())

    tick()  # idle from the start: nothing to give back
    assert trims == []
    count[0] += 5
    tick()  # traffic since the last look: busy, left alone
    count[0] += 5
    tick()
    assert trims == []
    tick()  # quiet for a whole interval after traffic: one trim
    assert len(trims) == (1 if memory.supported() else 0)
    tick()
    tick()  # still quiet: not again
    assert len(trims) == (1 if memory.supported() else 0)
    count[0] += 1
    tick()
    tick()  # the next burst, then quiet: the next trim
    assert len(trims) == (2 if memory.supported() else 0)


def _settled(http: httpx.Client) -> float:
    """The trim count once it has stood still for two seconds (at most 20 s)."""
    seen, since, deadline = _trims(http), time.monotonic(), time.monotonic() + 20
    while time.monotonic() - since < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        now = _trims(http)
        if now != seen:
            seen, since = now, time.monotonic()
    return seen


def _trims(http: httpx.Client) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("modelport_memory_trims_total "):
            return float(line.split()[1])
    raise AssertionError("no modelport_memory_trims_total in /metrics")


@pytest.mark.skipif(not memory.supported(), reason="the C library has no malloc_trim (not glibc)")
def test_a_server_gives_memory_back_after_traffic_and_not_while_idle(
    tmp_path: Path, store_url: str, settings: Any, iris_pipeline: Any, iris_frame: Any
) -> None:
    home = tmp_path / "home"
    key = make_key(settings.model_copy(update={"home": home, "store": store_url}), "ops", ["admin"])
    server = ServerProcess(home, store_url, args=["--memory-trim-seconds", "0.3"]).start()
    try:
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as http:
            with Client(server.url, key) as mp:
                mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
            before = _settled(http)  # whatever the push's own requests led to is done
            time.sleep(1.5)  # five looks at an idle server: nothing more
            assert _trims(http) == before
            rows = iris_frame.drop(columns=["species"]).head(100).to_dict(orient="records")
            for _ in range(20):
                answer = http.post("/v1/models/iris/predict", json={"inputs": rows})
                assert answer.status_code == 200, answer.text
            deadline = time.monotonic() + 10
            while _trims(http) == before and time.monotonic() < deadline:
                time.sleep(0.2)
            after = _trims(http)
            # One trim, or a few when a slow machine paused longer than an interval mid-burst.
            assert before < after <= before + 3
            time.sleep(1.5)
            assert _trims(http) == after  # quiet since: not again
    finally:
        server.kill()
