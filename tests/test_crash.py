"""SIGKILL mid-load loses nothing that was acknowledged."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from modelport import Client
from tests.conftest import make_key
from tests.procs import ServerProcess

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def test_sigkill_under_load_loses_no_acknowledged_prediction_or_feedback(
    tmp_path: Path, store_url: str, settings: Any, iris_pipeline: Any, iris_frame: Any
) -> None:
    home = tmp_path / "home"
    key = make_key(
        settings.model_copy(update={"home": home, "store": store_url}), "load", ["admin"]
    )
    proc = ServerProcess(home, store_url).start()
    acked: list[str] = []
    feedback_acked: list[tuple[str, int]] = []
    stop = threading.Event()
    try:
        with Client(proc.url, key) as mp:
            mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")

        def load() -> None:
            with httpx.Client(
                base_url=proc.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
            ) as http:
                deadline = time.monotonic() + 20
                while not stop.is_set() and time.monotonic() < deadline:
                    try:
                        r = http.post("/v1/models/iris/predict", json={"inputs": [ROW, ROW]})
                        if r.status_code != 200:
                            continue
                        ids = r.json()["prediction_ids"]
                        acked.extend(ids)
                        f = http.post(
                            "/v1/feedback",
                            json={"feedback": [{"prediction_id": ids[0], "label": "setosa"}]},
                        )
                        if f.status_code == 200:
                            feedback_acked.append((ids[0], f.json()["accepted"][0]["feedback_id"]))
                    except httpx.TransportError:
                        return  # the server is gone

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        proc.proc.wait(timeout=30)  # type: ignore[union-attr]
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        stop.set()
        proc.kill()

    assert len(acked) >= 200 and len(feedback_acked) >= 50, (len(acked), len(feedback_acked))
    restarted = ServerProcess(home, store_url).start()
    try:
        with Client(restarted.url, key) as mp:
            stored: set[str] = set()
            cursor = None
            while True:
                page = mp.predictions("iris", limit=1000, cursor=cursor)
                stored.update(p["id"] for p in page["predictions"])
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert set(acked) <= stored
            for pid, feedback_id in feedback_acked[-20:]:
                assert feedback_id in {f["id"] for f in mp.prediction(pid)["feedback"]}
        import sqlalchemy as sa

        from modelport.store import Store
        from modelport.store.tables import feedback

        st = Store(store_url)
        try:
            with st.read() as conn:
                ids = set(conn.execute(sa.select(feedback.c.id)).scalars())
        finally:
            st.close()
        assert {fid for _, fid in feedback_acked} <= ids
    finally:
        restarted.kill()
