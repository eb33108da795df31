"""The BentoML peer: one scikit-learn model behind a new-style ``@bentoml.service``.

``bench/compare.py`` serves it from its own virtual environment with
``bentoml serve bento_service:BenchModel --working-dir bench/peers``. The environment picks the
model file (``BENCH_MODEL``) and whether the API is batchable (``BENCH_BENTO_BATCH=1``, with
``BENCH_BENTO_MAX_BATCH_SIZE`` rows and ``BENCH_BENTO_MAX_LATENCY_MS``). Requests are
``{"inputs": [[...20 numbers...], ...]}``; the answer is the JSON list of predictions. One
worker, access log off (as for every server in the comparison).
"""

from __future__ import annotations

import os

import bentoml
import joblib
import numpy as np

BATCH = os.environ.get("BENCH_BENTO_BATCH") == "1"
MAX_BATCH_SIZE = int(os.environ.get("BENCH_BENTO_MAX_BATCH_SIZE", "6400"))
MAX_LATENCY_MS = int(os.environ.get("BENCH_BENTO_MAX_LATENCY_MS", "10000"))


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class BenchModel:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL"])

    if BATCH:

        @bentoml.api(
            batchable=True,
            batch_dim=0,
            max_batch_size=MAX_BATCH_SIZE,
            max_latency_ms=MAX_LATENCY_MS,
        )
        def predict(self, inputs: np.ndarray) -> np.ndarray:
            return self.model.predict(inputs)

    else:

        @bentoml.api
        def predict(self, inputs: np.ndarray) -> np.ndarray:
            return self.model.predict(inputs)
