"""API keys: scopes, consumers on every ledger row, hashing, revocation, no-auth rules."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from modelport import errors
from modelport.server import check_exposure, is_loopback
from modelport.store import Store
from modelport.store.tables import api_keys
from tests.conftest import RunningServer, start_server

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def test_each_key_names_the_consumer_on_its_predictions(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    server.client().push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    checkout = server.client(server.key("checkout", "predict", "feedback"))
    search = server.http(server.key("search", "predict"))
    pid = checkout.predict("iris", [ROW])["prediction_ids"][0]
    pid2 = search.post("/v1/models/iris/predict", json={"inputs": [ROW]}).json()["prediction_ids"][
        0
    ]
    # X-API-Key works as well as a bearer token.
    reader_key = server.key("analyst", "read")
    with server.http("") as plain:
        got = plain.get(f"/v1/predictions/{pid}", headers={"X-API-Key": reader_key}).json()
    assert got["consumer"] == "checkout"
    assert server.client().prediction(pid2)["consumer"] == "search"
    checkout.feedback(pid, label="setosa")
    assert server.client().prediction(pid)["feedback"][0]["consumer"] == "checkout"
    with pytest.raises(errors.Forbidden):
        checkout.models()


def test_keys_are_stored_hashed_and_listed_without_secrets(server: RunningServer) -> None:
    mp = server.client()
    made = mp.create_key("billing", ["predict", "read"])
    assert made["key"].startswith("mp_") and made["scopes"] == ["predict", "read"]
    listed = {k["id"]: k for k in mp.list_keys()}
    assert "key" not in listed[made["id"]] and listed[made["id"]]["consumer"] == "billing"
    st = Store(server.settings.store_url)
    try:
        with st.read() as conn:
            stored = [r._asdict() for r in conn.execute(sa.select(api_keys))]
    finally:
        st.close()
    assert all(made["key"] not in str(row.values()) for row in stored)
    assert mp.revoke_key(made["id"])["revoked"] is True
    assert made["id"] not in {k["id"] for k in mp.list_keys()}
    with pytest.raises(errors.Unauthorized):
        server.client(made["key"]).prediction("x")


def test_push_scope_may_push_skops_but_not_pickles_or_aliases(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any, tmp_path: Any
) -> None:
    import joblib

    pusher = server.client(server.key("ci", "push"))
    assert pusher.push("iris", iris_pipeline, train_data=iris_frame)["version"] == 1
    path = tmp_path / "model.joblib"
    joblib.dump(iris_pipeline, path)
    with pytest.raises(errors.ArtifactRejected, match="admin key"):
        pusher.push("iris", path, train_data=iris_frame)
    with pytest.raises(errors.Forbidden):
        pusher.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    with pytest.raises(errors.Forbidden):
        pusher.promote("iris", 1)
    assert [v["version"] for v in server.client().versions("iris")] == [1]
    assert server.client().push("iris", path, train_data=iris_frame)["flavor"] == "pickle"


def test_no_auth_serves_everyone_as_anonymous(
    settings: Any, iris_pipeline: Any, iris_frame: Any
) -> None:
    open_server = start_server(settings.model_copy(update={"no_auth": True}))
    try:
        anon = open_server.client("")
        anon.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
        pid = anon.predict("iris", [ROW])["prediction_ids"][0]
        assert anon.prediction(pid)["consumer"] == "anonymous"
    finally:
        open_server.stop()


def test_no_auth_is_refused_beyond_loopback(settings: Any) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    check_exposure(settings.model_copy(update={"no_auth": True}))
    with pytest.raises(errors.InvalidRequest, match="not a loopback address"):
        check_exposure(settings.model_copy(update={"no_auth": True, "host": "0.0.0.0"}))
    check_exposure(
        settings.model_copy(update={"no_auth": True, "host": "0.0.0.0", "force_no_auth": True})
    )
