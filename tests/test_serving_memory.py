"""A serving process keeps pandas and pyarrow out of memory until a model needs a DataFrame.

scikit-learn imports pandas whenever it is installed (``flavors.import_scikit_learn``); a real
``modelport serve`` process is asked, through the files it has mapped, what it loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np

from modelport import Client
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
