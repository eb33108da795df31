"""The floor: the least a Python model server can do per request, as a Starlette app.

Parse the JSON body with ``json.loads``, make a float array of ``body["inputs"]`` (a list of rows
of numbers), call ``model.predict``, answer ``{"predictions": [...]}``. No validation, no
logging, no ledger. ``bench/compare.py`` runs it in its own virtual environment:

    FLOOR_MODEL=/path/model.joblib python -m uvicorn floor:app --app-dir bench/peers \
        --host 127.0.0.1 --port 8000 --log-level warning --no-access-log
"""

from __future__ import annotations

import json
import os

import joblib
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

model = joblib.load(os.environ["FLOOR_MODEL"])


async def predict(request: Request) -> JSONResponse:
    body = json.loads(await request.body())
    preds = model.predict(np.asarray(body["inputs"], dtype=float))
    return JSONResponse({"predictions": preds.tolist()})


app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
