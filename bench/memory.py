"""Where a serving process's resident memory goes: RSS after each step of starting one.

Each step runs in one fresh interpreter, in order, and the report gives the resident set after
it and what it added:

    python            the interpreter alone
    numpy             numpy (every model needs it)
    scikit-learn      a StandardScaler + LogisticRegression pipeline loaded with joblib and
                      called once (what the floor server holds too), scikit-learn imported
                      the way a serving process imports it (``flavors.import_scikit_learn``:
                      without pandas, which scikit-learn would otherwise import)
    web stack         starlette, uvicorn, fastapi, pydantic
    sql stack         sqlalchemy and the SQLite driver
    modelport server  ``modelport.api.app`` and what it imports (no pandas, SciPy only
                      through scikit-learn, no Alembic)
    service started   a Service restarted on a SQLite home where the model was pushed (by
                      another process), after 500 predictions: the writer thread, the
                      router with the model loaded, the predict threads, caches

    python bench/memory.py            # the table
    python bench/memory.py --record   # and append it to RESULTS.md

Also listed: whether pandas, SciPy, Alembic and pyarrow were imported by the end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

PREPARE = r"""
import asyncio, os, sys
from pathlib import Path
import joblib, numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from modelport.registry.keys import ANONYMOUS
from modelport.service.core import Service
from modelport.settings import Settings
home = sys.argv[1]
rng = np.random.default_rng(0)
X = rng.normal(size=(500, 20)); y = (X[:, 0] > 0).astype(int)
joblib.dump(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y), f"{home}/m.joblib")
async def main():
    svc = Service(Settings(home=f"{home}/mp", no_auth=True, dangerously_allow_code_without_auth=True))
    await svc.start()
    meta = {"schema": {"fields": [{"name": f"x{i}", "type": "number"} for i in range(20)]},
            "alias": "production", "flavor": "pickle"}
    await svc.push(ANONYMOUS, "lr", Path(f"{home}/m.joblib"), meta)
    await svc.stop()
asyncio.run(main())
"""

STEPS = r"""
import asyncio, json, os, sys
home = sys.argv[1]

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
out = [("python", rss())]
import numpy as np
out.append(("numpy", rss()))
import joblib
from modelport.flavors import import_scikit_learn
import_scikit_learn()  # as a serving process does at start: scikit-learn without pandas
loaded = joblib.load(f"{home}/m.joblib")
loaded.predict(np.zeros((1, 20)))
out.append(("scikit-learn", rss()))
import fastapi, pydantic, starlette, uvicorn
out.append(("web stack", rss()))
import sqlalchemy, sqlite3
out.append(("sql stack", rss()))
import modelport.api.app
out.append(("modelport server", rss()))
from modelport.registry.keys import ANONYMOUS
from modelport.service.core import Service
from modelport.settings import Settings
settings = Settings(home=f"{home}/mp", no_auth=True)
async def main():
    svc = Service(settings)
    await svc.start()
    row = {f"x{i}": 0.1 for i in range(20)}
    for _ in range(500):
        await svc.engine.predict(ANONYMOUS, "lr", {"inputs": [row]}, "r")
    out.append(("service started, 500 predictions", rss()))
    await svc.stop()
asyncio.run(main())
heavy = [m for m in ("pandas", "scipy", "alembic", "pyarrow", "skops") if m in sys.modules]
print(json.dumps({"steps": out, "imported": heavy}))
"""


def measure() -> dict[str, object]:
    """Push the model to a fresh store in one process, then measure a restart in another."""
    with tempfile.TemporaryDirectory() as home:
        subprocess.run([sys.executable, "-c", PREPARE, home], check=True, capture_output=True)
        out = subprocess.run(
            [sys.executable, "-c", STEPS, home], capture_output=True, text=True, check=True
        ).stdout
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def table(result: dict[str, object]) -> str:
    steps = result["steps"]
    assert isinstance(steps, list)
    lines = ["| step | RSS MiB | added MiB |", "|---|---:|---:|"]
    before = 0.0
    for name, rss in steps:
        lines.append(f"| {name} | {rss:.0f} | {rss - before:+.0f} |")
        before = rss
    lines.append("")
    lines.append(
        f"Imported by the end, of pandas, SciPy, Alembic, pyarrow, skops: {result['imported']}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="Append the table to RESULTS.md.")
    args = parser.parse_args()
    text = table(measure())
    print(text)
    if args.record:
        head = (
            f"\n## memory.py, {datetime.date.today().isoformat()}\n\n"
            f"Python {platform.python_version()}, {platform.machine()}; "
            "one fresh interpreter, steps in order (see bench/memory.py).\n\n"
        )
        with (Path(__file__).parent / "RESULTS.md").open("a") as fh:
            fh.write(head + text + "\n")


if __name__ == "__main__":
    main()
