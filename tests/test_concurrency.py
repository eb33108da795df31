"""32 concurrent clients: no errors, one ledger row per predicted row, distinct ids."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from modelport.ledger import count_predictions
from modelport.store import Store
from tests.conftest import IRIS_COLUMNS, RunningServer

CLIENTS = 32
REQUESTS_EACH = 20


def test_32_concurrent_clients(server: RunningServer, iris_pipeline: Any, iris_frame: Any) -> None:
    server.client().push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    rows = iris_frame[IRIS_COLUMNS].to_dict("records")
    headers = {"Authorization": f"Bearer {server.key('load', 'predict')}"}

    async def client(n: int) -> tuple[int, list[str]]:
        errors, ids = 0, []
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as http:
            for i in range(REQUESTS_EACH):
                size = 10 if (n + i) % 3 == 0 else 1
                batch = rows[(n * 7 + i) % 140 :][:size]
                r = await http.post("/v1/models/iris/predict", json={"inputs": batch})
                if r.status_code != 200:
                    errors += 1
                    continue
                ids += r.json()["prediction_ids"]
                assert len(r.json()["prediction_ids"]) == size
        return errors, ids

    async def main() -> list[tuple[int, list[str]]]:
        return await asyncio.gather(*(client(n) for n in range(CLIENTS)))

    results = asyncio.run(main())
    assert sum(e for e, _ in results) == 0
    ids = [i for _, batch in results for i in batch]
    expected_rows = sum(
        10 if (n + i) % 3 == 0 else 1 for n in range(CLIENTS) for i in range(REQUESTS_EACH)
    )
    assert len(ids) == len(set(ids)) == expected_rows
    st = Store(server.settings.store_url)
    try:
        with st.read() as conn:
            stored = count_predictions(conn)
    finally:
        st.close()
    assert stored == expected_rows
