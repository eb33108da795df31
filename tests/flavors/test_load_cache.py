"""The model cache: a restart loads vetted skops models without importing skops."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from modelport.flavors import serialize
from modelport.flavors.load_cache import LoadCache
from modelport.inputs.schema import Field, Schema

SCHEMA = Schema(tuple(Field(f"x{i}", "number") for i in range(3)))


def _artifact(tmp_path: Path) -> tuple[Path, LogisticRegression, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    model = LogisticRegression().fit(X, X[:, 0] > 0)
    path = tmp_path / "model.skops"
    path.write_bytes(serialize(model)[0])
    return path, model, X


def test_a_second_process_loads_from_the_cache_without_skops(tmp_path: Path) -> None:
    path, model, X = _artifact(tmp_path)
    cache = LoadCache(tmp_path / "cache")
    first = cache.load("sklearn", "a" * 64, path)
    cached = cache.path("a" * 64)
    assert cached is not None and cached.exists()
    np.save(tmp_path / "X.npy", X)
    code = f"""
import sys
from pathlib import Path
import numpy as np
from modelport.flavors.load_cache import LoadCache
from modelport.inputs.schema import Field, Schema
loaded = LoadCache(Path({str(tmp_path / "cache")!r})).load("sklearn", "a" * 64, Path("/nonexistent"))
schema = Schema(tuple(Field(f"x{{i}}", "number") for i in range(3)))
X = np.load({str(tmp_path / "X.npy")!r})
preds, proba = loaded.predict_with_proba(schema.table_from_rows(X.tolist()))
np.save({str(tmp_path / "out.npy")!r}, proba)
print("skops" in " ".join(sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # the artifact path does not even exist: cache only
    expected = first.predict_with_proba(SCHEMA.table_from_rows(X.tolist()))[1]
    assert np.array_equal(np.load(tmp_path / "out.npy"), expected)
    assert np.allclose(expected, model.predict_proba(X))


def test_an_unreadable_cache_file_is_replaced(tmp_path: Path, caplog: object) -> None:
    path, model, X = _artifact(tmp_path)
    cache = LoadCache(tmp_path / "cache")
    cached = cache.path("b" * 64)
    assert cached is not None
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a joblib file")
    loaded = cache.load("sklearn", "b" * 64, path)  # falls back to the artifact
    assert loaded.predict_with_proba(SCHEMA.table_from_rows(X[:5].tolist()))[0].tolist() == (
        model.predict(X[:5]).tolist()
    )
    assert cached.read_bytes() != b"not a joblib file"  # written again from the artifact


def test_the_cache_can_be_off_and_skips_formats_that_load_fast(tmp_path: Path) -> None:
    path, _, _ = _artifact(tmp_path)
    LoadCache(None).load("sklearn", "c" * 64, path)
    assert not (tmp_path / "cache").exists()
    cache = LoadCache(tmp_path / "cache")
    pickled = tmp_path / "model.pkl"
    import joblib

    joblib.dump(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), pickled)
    cache.load("pickle", "d" * 64, pickled)
    assert not (tmp_path / "cache").exists()
