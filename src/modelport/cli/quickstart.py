"""``modelport quickstart``: a served, versioned demo model in one command.

It trains a small classifier on the iris data scikit-learn ships (no download), pushes it as
``iris`` through the same service a client would use, aliases it ``production``, prints an admin
key with example calls, and serves until Ctrl-C. Running it again reuses the model and the key.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import click

from ..errors import ModelNotFound
from ..registry import keys
from ..registry import models as registry
from ..service.core import Service
from ..settings import Settings
from ..store import Store

DEMO_MODEL = "iris"
KEY_FILE = "quickstart-admin-key"
_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def admin_key(settings: Settings) -> str:
    """The quickstart admin key, kept (mode 0600) in the home folder and reused while valid."""
    path = settings.home / KEY_FILE
    store = Store(settings.store_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        if path.exists():
            secret = path.read_text().strip()
            with store.read() as conn:
                if keys.lookup(conn, secret) is not None:
                    return secret
        with store.transaction() as conn:
            secret, _ = keys.create_key(conn, "quickstart", ["admin"])
    finally:
        store.close()
    settings.home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    return secret


def train_demo() -> tuple[Any, Any]:
    """A scaled logistic regression on iris, with readable column and class names."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    iris = load_iris(as_frame=True)
    X = iris.data.copy()
    X.columns = _COLUMNS
    y = iris.target.map(dict(enumerate(iris.target_names))).astype(str)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(X, y)
    data = X.copy()
    data["species"] = y
    return model, data


async def ensure_demo(settings: Settings) -> int:
    """Push the demo model unless ``iris`` already has a production version; return it."""
    from ..client import train_data_meta
    from ..flavors import libraries_for, serialize
    from ..registry.keys import Principal

    service = Service(settings)
    await service.start()
    try:
        principal = Principal("quickstart", frozenset({"admin"}))
        try:
            current = (await service.get_model(principal, DEMO_MODEL))["aliases"].get(
                registry.DEFAULT_ALIAS
            )
        except ModelNotFound:
            current = None
        if current is not None:
            return int(current)
        model, data = await asyncio.to_thread(train_demo)
        blob, flavor = serialize(model)
        libs = libraries_for(flavor, model)
        meta = train_data_meta(data, "species", model, explicit_schema=False)
        meta.update(
            alias=registry.DEFAULT_ALIAS,
            description="Demo: iris species from flower measurements (modelport quickstart).",
            environment={"python": libs.pop("python"), "libraries": libs},
            metrics={"train_accuracy": float(model.score(data[_COLUMNS], data["species"]))},
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "iris.skops"
            path.write_bytes(blob)
            out = await service.push(principal, DEMO_MODEL, path, meta)
        return int(out["version"])
    finally:
        await service.stop()


def banner(settings: Settings, key: str, version: int) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{settings.port}"
    return f"""
modelport is serving the demo model '{DEMO_MODEL}' (version {version}, alias production) at {url}

Admin key: {key}

Try it:
  curl -s {url}/v1/models/iris/predict \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"inputs": [{{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}}]}}'

  python -c "from modelport import Client; \\
print(Client('{url}', '{key}').predict('iris', [dict(sepal_length=6.3, sepal_width=2.9, petal_length=5.6, petal_width=1.8)]))"

  export MODELPORT_URL={url} MODELPORT_KEY={key}
  modelport models

Dashboard: {url}/   API docs: {url}/docs   Data: {settings.home}
Press Ctrl-C to stop.
"""


def run_quickstart(settings: Settings) -> None:
    from ..api.server import check_exposure, serve

    check_exposure(settings)
    key = admin_key(settings)
    version = asyncio.run(ensure_demo(settings))
    serve(settings, on_ready=lambda bound: click.echo(banner(bound, key, version)))
