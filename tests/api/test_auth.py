"""API keys: scopes per route, consumers on every ledger row, hashing, revocation, no-auth rules."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from modelport import errors
from modelport.api.server import check_exposure, is_loopback
from modelport.flavors import serialize
from modelport.registry.keys import SCOPES, revoke_key
from modelport.settings import Settings
from modelport.store import Store
from modelport.store.tables import api_keys
from tests.conftest import RunningServer, start_server

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
INFER = {
    "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": list(ROW.values())}]
}
SCORE_RUN = {
    "type": "score",
    "version": 1,
    "input": {"path": "/data/in.csv", "sha256": "0" * 64},
    "engine": "pandas",
}


def test_every_route_enforces_its_scope(server: RunningServer, iris_pipeline: Any) -> None:
    admin = server.client()
    admin.push("iris", iris_pipeline, alias="production")
    pid = admin.predict("iris", [ROW])["prediction_ids"][0]
    blob, flavor = serialize(iris_pipeline)
    assert flavor == "sklearn"  # skops: the push scope may push it
    # (method, route template, url, request arguments, scope it needs, status when allowed);
    # a key without the scope gets 403, except where DENIED says otherwise.
    routes: list[tuple[str, str, str, dict[str, Any], str | tuple[str, ...], int]] = [
        ("GET", "/v1/models", "/v1/models", {}, "read", 200),
        ("GET", "/v1/models/{name}", "/v1/models/iris", {}, "read", 200),
        ("GET", "/v1/models/{name}/versions", "/v1/models/iris/versions", {}, "read", 200),
        (
            "GET",
            "/v1/models/{name}/versions/{version}",
            "/v1/models/iris/versions/1",
            {},
            "read",
            200,
        ),
        (
            "GET",
            "/v1/models/{name}/versions/{version}/schema",
            "/v1/models/iris/versions/1/schema",
            {},
            "read",
            200,
        ),
        (
            "GET",
            "/v1/models/{name}/aliases/history",
            "/v1/models/iris/aliases/history",
            {},
            "read",
            200,
        ),
        (
            "GET",
            "/v1/models/{name}/versions/{version}/batching",
            "/v1/models/iris/versions/1/batching",
            {},
            "read",
            200,
        ),
        ("GET", "/v1/models/{name}/serving", "/v1/models/iris/serving", {}, "read", 200),
        (
            "PUT",
            "/v1/models/{name}/serving",
            "/v1/models/iris/serving",
            {"json": {"max_batch_rows": 64}},
            "admin",
            200,
        ),
        # Keys without read see their consumer's own predictions only: the list is theirs, and
        # another consumer's prediction is "not found" (so ids cannot be probed).
        ("GET", "/v1/models/{name}/predictions", "/v1/models/iris/predictions", {}, "read", 200),
        ("GET", "/v1/predictions/{prediction_id}", f"/v1/predictions/{pid}", {}, "read", 200),
        (
            "POST",
            "/v1/models/{name}/predict",
            "/v1/models/iris/predict",
            {"json": {"inputs": [ROW]}},
            "predict",
            200,
        ),
        (
            "POST",
            "/v1/feedback",
            "/v1/feedback",
            {"json": {"feedback": [{"prediction_id": pid, "label": "setosa"}]}},
            "feedback",
            200,
        ),
        (
            "POST",
            "/v1/models/{name}/versions",
            "/v1/models/iris/versions",
            {"files": {"artifact": ("iris.skops", blob)}},
            "push",
            201,
        ),
        (
            "PUT",
            "/v1/models/{name}/aliases/{alias}",
            "/v1/models/iris/aliases/production",
            {"json": {"version": 1}},
            "admin",
            200,
        ),
        (
            "POST",
            "/v1/models/{name}/aliases/{alias}/rollback",
            "/v1/models/iris/aliases/production/rollback",
            {},
            "admin",
            409,  # allowed, but there is nothing to roll back to
        ),
        ("POST", "/v1/models", "/v1/models", {"json": {"name": "iris"}}, "admin", 409),
        (
            "POST",
            "/v1/keys",
            "/v1/keys",
            {"json": {"name": "made", "scopes": ["read"]}},
            "admin",
            201,
        ),
        ("GET", "/v1/keys", "/v1/keys", {}, "admin", 200),
        ("GET", "/v1/models/{name}/traffic", "/v1/models/iris/traffic", {}, "read", 200),
        (
            "PUT",
            "/v1/models/{name}/traffic",
            "/v1/models/iris/traffic",
            {"json": {"policy": "single", "target": {"alias": "production"}}},
            "admin",
            200,
        ),
        ("GET", "/v1/models/{name}/consumers", "/v1/models/iris/consumers", {}, "read", 200),
        (
            "PUT",
            "/v1/models/{name}/consumers/{consumer}",
            "/v1/models/iris/consumers/shop",
            {"json": {"pin": {"version": 1}}},
            "admin",
            200,
        ),
        (
            "GET",
            "/v1/models/{name}/consumers/{consumer}",
            "/v1/models/iris/consumers/nobody",
            {},
            "read",
            404,
        ),
        (
            "DELETE",
            "/v1/models/{name}/consumers/{consumer}",
            "/v1/models/iris/consumers/nobody",
            {},
            "admin",
            404,
        ),
        ("GET", "/v1/models/{name}/adapter", "/v1/models/iris/adapter", {}, "read", 200),
        (
            "PUT",
            "/v1/models/{name}/adapter",
            "/v1/models/iris/adapter",
            {"json": {"adapter": None}},
            "admin",
            200,
        ),
        ("GET", "/v1/models/{name}/events", "/v1/models/iris/events", {}, "read", 200),
        ("GET", "/v1/algorithms", "/v1/algorithms", {}, "read", 200),
        (
            "POST",
            "/v1/models/{name}/observations",
            "/v1/models/iris/observations",
            {"json": {"observations": [ROW]}},
            "feedback",
            409,  # allowed, but iris was pushed, not made from an algorithm
        ),
        ("POST", "/v1/models/{name}/datasets", "/v1/models/iris/datasets", {}, "admin", 409),
        ("GET", "/v1/datasets/{dataset_id}", "/v1/datasets/nope", {}, "read", 404),
        (
            "POST",
            "/v1/models/{name}/jobs",
            "/v1/models/iris/jobs",
            {"json": {"type": "replay", "version": 1}},
            "admin",
            202,
        ),
        (
            "POST",
            "/v1/models/{name}/jobs",
            "/v1/models/iris/jobs",
            {"json": SCORE_RUN},
            "predict+read",  # a batch scoring run: both scopes
            202,
        ),
        ("GET", "/v1/models/{name}/jobs", "/v1/models/iris/jobs", {}, "read", 200),
        (
            "POST",
            "/v1/jobs/{job_id}/progress",
            "/v1/jobs/999999/progress",
            {"json": {"progress": 0.5}},
            "predict",
            404,
        ),
        (
            "POST",
            "/v1/jobs/{job_id}/finish",
            "/v1/jobs/999999/finish",
            {"json": {"status": "succeeded"}},
            "predict",
            404,
        ),
        (
            "GET",
            "/v1/models/{name}/versions/{version}/artifact",
            "/v1/models/iris/versions/1/artifact",
            {},
            "predict+read",
            200,
        ),
        ("GET", "/v1/jobs/{job_id}", "/v1/jobs/999999", {}, "read", 404),
        ("POST", "/v1/jobs/{job_id}/cancel", "/v1/jobs/999999/cancel", {}, "admin", 404),
        ("GET", "/v1/models/{name}/gate", "/v1/models/iris/gate", {}, "read", 200),
        ("GET", "/v1/models/{name}/triggers", "/v1/models/iris/triggers", {}, "read", 200),
        ("GET", "/v1/models/{name}/segments", "/v1/models/iris/segments", {}, "read", 200),
        (
            "PUT",
            "/v1/models/{name}/segments",
            "/v1/models/iris/segments",
            {"json": {"field": None}},
            "admin",
            200,
        ),
        (
            "PUT",
            "/v1/models/{name}/triggers",
            "/v1/models/iris/triggers",
            {"json": {"triggers": {"after_observations": 10}}},
            "admin",
            409,  # allowed, but iris was pushed: nothing to retrain
        ),
        (
            "PUT",
            "/v1/models/{name}/gate",
            "/v1/models/iris/gate",
            {"json": {"gate": None}},
            "admin",
            200,
        ),
        ("GET", "/v1/models/{name}/learning", "/v1/models/iris/learning", {}, "read", 409),
        ("GET", "/v1/models/{name}/health", "/v1/models/iris/health", {}, "read", 200),
        ("GET", "/v1/models/{name}/experiment", "/v1/models/iris/experiment", {}, "read", 200),
        ("GET", "/v1/models/{name}/performance", "/v1/models/iris/performance", {}, "read", 200),
        ("GET", "/v1/models/{name}/drift", "/v1/models/iris/drift", {}, "read", 200),
        ("GET", "/v1/models/{name}/monitoring", "/v1/models/iris/monitoring", {}, "read", 200),
        (
            "PUT",
            "/v1/models/{name}/monitoring",
            "/v1/models/iris/monitoring",
            {"json": {"monitoring": {"thresholds": {"psi": 0.25}}}},
            "admin",
            200,
        ),
        (
            "PUT",
            "/v1/models/{name}/versions/{version}/reference",
            "/v1/models/iris/versions/1/reference",
            {"json": {"since": 0}},
            "admin",
            200,
        ),
        ("GET", "/v1/whoami", "/v1/whoami", {}, "read", 200),
        ("GET", "/v1/models/{name}/timeline", "/v1/models/iris/timeline", {}, "read", 200),
        ("GET", "/v1/models/{name}/recent", "/v1/models/iris/recent", {}, "read", 200),
        ("GET", "/v1/models/{name}/fit", "/v1/models/iris/fit", {}, "read", 409),  # not 1-D
        ("DELETE", "/v1/keys/{key_id}", "/v1/keys/999", {}, "admin", 404),
        ("GET", "/v1/settings", "/v1/settings", {}, "admin", 200),
        # The Open Inference Protocol: metadata and readiness for predict or read keys.
        ("GET", "/v2/models/{name}", "/v2/models/iris", {}, ("predict", "read"), 200),
        ("GET", "/v2/models/{name}/ready", "/v2/models/iris/ready", {}, ("predict", "read"), 200),
        (
            "GET",
            "/v2/models/{name}/versions/{version}",
            "/v2/models/iris/versions/1",
            {},
            ("predict", "read"),
            200,
        ),
        (
            "GET",
            "/v2/models/{name}/versions/{version}/ready",
            "/v2/models/iris/versions/1/ready",
            {},
            ("predict", "read"),
            200,
        ),
        (
            "POST",
            "/v2/models/{name}/infer",
            "/v2/models/iris/infer",
            {"json": INFER},
            "predict",
            200,
        ),
        (
            "POST",
            "/v2/models/{name}/versions/{version}/infer",
            "/v2/models/iris/versions/1/infer",
            {"json": INFER},
            "predict",
            200,
        ),
    ]
    denied = {"/v1/models/{name}/predictions": 200, "/v1/predictions/{prediction_id}": 404}
    # The table covers every /v1 and /v2 route but the open health checks and server metadata.
    doc = server.http("").get("/openapi.json").json()
    documented = {
        (method.upper(), path)
        for path, ops in doc["paths"].items()
        if path.startswith(("/v1/", "/v2"))
        for method in ops
    }
    open_routes = {("GET", "/v1/health"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready")}
    assert documented - {(m, t) for m, t, *_ in routes} == {*open_routes, ("GET", "/v2")}
    for _, path in [*open_routes, ("GET", "/v2")]:
        assert server.http("").get(path).status_code == 200, path

    for scope in SCOPES:
        http = server.http(server.key(f"app-{scope}", scope))
        for method, template, url, kwargs, needs, ok in routes:
            response = http.request(method, url, **kwargs)
            # needs: a scope, "a+b" (both), or a tuple (any one of them)
            any_of = needs if isinstance(needs, tuple) else ()
            all_of = [] if any_of else str(needs).split("+")
            if scope == "admin" or scope in any_of or all_of == [scope]:
                assert response.status_code == ok, (scope, method, url, response.text)
            elif template in denied:
                assert response.status_code == denied[template], (scope, url, response.text)
            else:
                lacking = any_of[0] if any_of else next(n for n in all_of if n != scope)
                assert response.status_code == 403, (scope, method, url, response.text)
                body = response.json()["error"]
                message = body if url.startswith("/v2") else body["message"]
                assert f"lacks the {lacking!r} scope" in message, (scope, url, message)
        # Without a key, every one of them is refused.
        if scope == "read":
            for method, _, url, kwargs, *_ in routes:
                response = server.http("").request(method, url, **kwargs)
                assert response.status_code == 401, (method, url, response.text)

    # Each key's consumer is on the ledger rows and the feedback it made.
    rows = admin.predictions("iris")["predictions"]
    assert [r["consumer"] for r in rows] == ["test-admin", *["app-admin"] * 3, *["app-predict"] * 3]
    history = admin.prediction(pid)["feedback"]
    assert [(f["consumer"], f["superseded"]) for f in history] == [
        ("app-admin", True),
        ("app-feedback", False),
    ]
    versions = admin.versions("iris")
    assert [v["lineage"]["created_by"] for v in versions] == ["test-admin", "app-admin", "app-push"]


def test_consumers_and_both_key_headers(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    server.client().push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    checkout_key = server.key("checkout", "predict", "feedback")
    checkout = server.client(checkout_key)
    pid = checkout.predict("iris", [ROW])["prediction_ids"][0]
    plain = server.http("")
    # X-API-Key works as well as a bearer token, and the scheme is case-insensitive.
    by_header = plain.post(
        "/v1/models/iris/predict", json={"inputs": [ROW]}, headers={"X-API-Key": checkout_key}
    )
    lower = plain.post(
        "/v1/models/iris/predict",
        json={"inputs": [ROW]},
        headers={"Authorization": f"bearer {checkout_key}"},
    )
    search = server.http(server.key("search", "predict"))
    by_bearer = search.post("/v1/models/iris/predict", json={"inputs": [ROW]})
    reader_key = server.key("analyst", "read")
    consumers = [
        plain.get(f"/v1/predictions/{p}", headers={"X-API-Key": reader_key}).json()["consumer"]
        for p in (
            pid,
            by_header.json()["prediction_ids"][0],
            lower.json()["prediction_ids"][0],
            by_bearer.json()["prediction_ids"][0],
        )
    ]
    assert consumers == ["checkout", "checkout", "checkout", "search"]
    checkout.feedback(pid, label="setosa")
    assert server.client().prediction(pid)["feedback"][0]["consumer"] == "checkout"
    with pytest.raises(errors.Forbidden, match="lacks the 'read' scope"):
        checkout.models()


def test_keys_are_stored_hashed_listed_without_secrets_and_revoked(
    server: RunningServer,
) -> None:
    mp = server.client()
    made = mp.create_key("billing", ["read", "predict"])
    secret = made["key"]
    assert secret.startswith("mp_") and len(secret) > 40
    assert made["consumer"] == "billing" and made["scopes"] == ["predict", "read"]
    listed = {k["id"]: k for k in mp.list_keys()}
    assert set(listed) == {1, made["id"]}  # the test admin key and this one
    assert "key" not in listed[made["id"]]
    assert listed[made["id"]]["prefix"] == secret[:10]

    st = Store(server.settings.store_url)
    try:
        with st.read() as conn:
            stored = [r._asdict() for r in conn.execute(sa.select(api_keys))]
    finally:
        st.close()
    assert len(stored) == 2
    for row in stored:
        assert secret not in " ".join(str(v) for v in row.values())
    (row,) = [r for r in stored if r["id"] == made["id"]]
    assert row["key_hash"] == hashlib.sha256(secret.encode()).hexdigest()

    # Revoking through the API takes effect at once, although the key was just cached.
    billing = server.client(secret)
    assert billing.models() == []  # the key works, and the server caches it
    assert mp.revoke_key(made["id"]) == {"id": made["id"], "consumer": "billing", "revoked": True}
    with pytest.raises(errors.Unauthorized, match="unknown or revoked"):
        billing.models()
    assert made["id"] not in {k["id"] for k in mp.list_keys()}
    assert mp.revoke_key(made["id"])["revoked"] is True  # revoking again is harmless
    with pytest.raises(errors.KeyNotFound):
        mp.revoke_key(12345)


def test_revocation_elsewhere_is_seen_after_the_key_cache_expires(settings: Settings) -> None:
    ttl = 1.5
    running = start_server(settings.model_copy(update={"key_cache_seconds": ttl}))
    try:
        secret = running.key("batch", "read")
        http = running.http(secret)
        assert http.get("/v1/models").status_code == 200  # verified and cached
        st = Store(running.settings.store_url)  # e.g. `modelport keys revoke` in another process
        try:
            with st.transaction() as conn:
                key_id = conn.execute(
                    sa.select(api_keys.c.id).where(api_keys.c.consumer == "batch")
                ).scalar_one()
                revoke_key(conn, key_id)
        finally:
            st.close()
        revoked_at = time.monotonic()
        assert http.get("/v1/models").status_code == 200  # still trusted from the cache
        while http.get("/v1/models").status_code != 401:
            assert time.monotonic() - revoked_at < ttl + 5, "the revocation was never seen"
            time.sleep(0.05)
    finally:
        running.stop()


def test_requests_that_miss_the_key_cache_together_share_one_lookup(settings: Settings) -> None:
    # A key's cache entry expiring under load: every request in flight with it misses at
    # once. They must wait for one store lookup, not send one each to a thread of its own.
    import asyncio
    import threading

    import httpx

    from modelport.service.core import Service

    service = Service(settings.model_copy(update={"key_cache_seconds": 3600}))
    running = start_server(settings, service)
    lookups = 0
    lock = threading.Lock()

    @sa.event.listens_for(service.store.read_engine, "before_cursor_execute")
    def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        nonlocal lookups
        if "api_keys" in statement:
            with lock:
                lookups += 1
            # A slow store (in the lookup's thread, not the event loop's): every request of a
            # burst arrives while the first lookup is still out.
            time.sleep(0.3)

    async def burst(secret: str, n: int) -> list[int]:
        headers = {"Authorization": f"Bearer {secret}"}
        async with httpx.AsyncClient(base_url=running.url, headers=headers, timeout=60) as http:
            answers = await asyncio.gather(*(http.get("/v1/models") for _ in range(n)))
        return [a.status_code for a in answers]

    try:
        for consumer in ("first", "second"):  # two keys, each new to the cache
            secret = running.key(consumer, "read")
            before = lookups
            assert asyncio.run(burst(secret, 48)) == [200] * 48
            assert lookups - before == 1, f"{lookups - before} lookups for one key"
        # A key that is not known: every waiter of the shared lookup gets the 401. It is not
        # cached, so a request arriving after the lookup ended would start another.
        before = lookups
        assert asyncio.run(burst("mp_" + "0" * 40, 16)) == [401] * 16
        assert 1 <= lookups - before <= 2, f"{lookups - before} lookups for one unknown key"
    finally:
        running.stop()


def test_the_key_is_checked_before_the_body_is_read(server: RunningServer) -> None:
    # An anonymous 30 MB body must cost nothing: the 401 comes before a byte of it is read.
    import socket

    for path in ("/v1/models/iris/predict", "/v2/models/iris/infer"):
        for key in ("", "Authorization: Bearer mp_forged\r\n"):
            with socket.create_connection(("127.0.0.1", server.settings.port)) as sock:
                sock.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{key}"
                    "Content-Type: application/json\r\nContent-Length: 30000000\r\n\r\n".encode()
                    + b'{"inputs": ['
                )
                sock.settimeout(10)
                try:
                    head = sock.recv(65536)
                except TimeoutError:
                    pytest.fail(f"{path}: no answer until the body is sent")
            assert head.startswith(b"HTTP/1.1 401"), (path, head)


def test_push_scope_may_push_skops_but_not_pickles_or_aliases(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any, tmp_path: Path
) -> None:
    import joblib

    pusher = server.client(server.key("ci", "push"))
    assert pusher.push("iris", iris_pipeline, train_data=iris_frame)["flavor"] == "sklearn"
    path = tmp_path / "model.joblib"
    joblib.dump(iris_pipeline, path)
    with pytest.raises(errors.ArtifactRejected, match="only an admin key may push it") as info:
        pusher.push("iris", path, train_data=iris_frame)
    assert info.value.status_code == 422
    assert info.value.details == [
        {"field": "artifact", "reason": "pickle artifacts need an admin key"}
    ]
    with pytest.raises(errors.Forbidden, match="lacks the 'admin' scope"):
        pusher.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    with pytest.raises(errors.Forbidden, match="lacks the 'admin' scope"):
        pusher.promote("iris", 1)
    admin = server.client()
    assert [v["version"] for v in admin.versions("iris")] == [1]
    assert admin.model("iris")["aliases"] == {}
    assert admin.push("iris", path, train_data=iris_frame)["flavor"] == "pickle"


def test_a_push_key_creates_a_model_with_its_first_version_but_no_empty_model(
    server: RunningServer, iris_pipeline: Any, iris_frame: Any
) -> None:
    # The CI flow: a push key ships the first version of a model nobody created by hand.
    admin, pusher = server.client(), server.client(server.key("ci", "push"))
    with pytest.raises(errors.ModelNotFound):
        admin.model("churn")
    assert pusher.push("churn", iris_pipeline, train_data=iris_frame)["version"] == 1
    made = admin.model("churn")
    assert made["created_by"] == "ci" and made["aliases"] == {}
    assert pusher.push("churn", iris_pipeline, train_data=iris_frame)["version"] == 2
    # Creating a model without a version (and so naming its task and description) is an
    # admin's registry change, as is serving a version under an alias.
    with pytest.raises(errors.Forbidden, match="lacks the 'admin' scope"):
        pusher.create_model("empty")
    with pytest.raises(errors.Forbidden, match="lacks the 'admin' scope"):
        pusher.create_from_algorithm(
            "online",
            "online_linear_regression",
            schema={"fields": [{"name": "x", "type": "number"}]},
            target="y",
        )
    assert [m["name"] for m in admin.models()] == ["churn"]


def test_no_auth_serves_everyone_as_anonymous(
    settings: Settings, iris_pipeline: Any, iris_frame: Any
) -> None:
    open_server = start_server(settings.model_copy(update={"no_auth": True}))
    try:
        anon = open_server.client("")
        anon.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
        pid = anon.predict("iris", [ROW])["prediction_ids"][0]
        record = anon.prediction(pid)
        assert record["consumer"] == "anonymous"
        assert anon.version("iris", 1)["lineage"]["created_by"] == "anonymous"
        assert open_server.http("").get("/v1/settings").json()["no_auth"] is True
    finally:
        open_server.stop()


def test_no_auth_is_refused_beyond_loopback(settings: Settings) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("::")
    check_exposure(settings.model_copy(update={"no_auth": True}))
    check_exposure(settings.model_copy(update={"host": "0.0.0.0"}))  # keys on: fine anywhere
    with pytest.raises(errors.InvalidRequest, match="not a loopback address"):
        check_exposure(settings.model_copy(update={"no_auth": True, "host": "0.0.0.0"}))
    with pytest.raises(errors.InvalidRequest, match="--force-no-auth"):
        check_exposure(settings.model_copy(update={"no_auth": True, "host": "10.1.2.3"}))
    check_exposure(
        settings.model_copy(update={"no_auth": True, "host": "0.0.0.0", "force_no_auth": True})
    )


def test_a_consumer_sees_its_own_predictions_and_not_anyone_elses(
    server: RunningServer, iris_pipeline: Any
) -> None:
    server.client().push("iris", iris_pipeline, alias="production")
    shop, search = server.key("shop", "predict", "feedback"), server.key("search", "predict")
    mine = server.client(shop).predict("iris", [ROW, ROW])["prediction_ids"]
    theirs = server.client(search).predict("iris", [ROW])["prediction_ids"][0]
    http = server.http(shop)

    # Its own: readable (to check what it is about to give feedback on), feedback included.
    assert http.get(f"/v1/predictions/{mine[0]}").json()["consumer"] == "shop"
    server.client(shop).feedback(mine[0], label="setosa")
    assert http.get(f"/v1/predictions/{mine[0]}").json()["feedback"][0]["label"] == "setosa"
    page = http.get("/v1/models/iris/predictions").json()
    assert [p["id"] for p in page["predictions"]] == mine

    # Another consumer's: exactly what an unknown id gets, so ids cannot be probed.
    other, unknown = http.get(f"/v1/predictions/{theirs}"), http.get(f"/v1/predictions/{'0' * 32}")
    assert other.status_code == unknown.status_code == 404
    assert (
        other.json()["error"]["code"] == unknown.json()["error"]["code"] == "prediction_not_found"
    )
    search_page = server.http(search).get("/v1/models/iris/predictions").json()
    assert [p["id"] for p in search_page["predictions"]] == [theirs]

    # read and admin keys see everyone's.
    reader = server.http(server.key("analyst", "read"))
    assert reader.get(f"/v1/predictions/{theirs}").json()["consumer"] == "search"
    assert len(reader.get("/v1/models/iris/predictions").json()["predictions"]) == 3
    assert server.http().get(f"/v1/predictions/{mine[1]}").json()["consumer"] == "shop"


def test_keys_never_reach_the_logs(server: RunningServer, iris_pipeline: Any) -> None:
    import logging

    from tests.api.models import FailsOnNegative

    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.name.startswith(("httpx", "httpcore")):
                return  # this test's own HTTP client, which logs the URLs it calls
            records.append(self.format(record))
            if record.exc_info:
                records.append(logging.Formatter().formatException(record.exc_info))

    handler = Collect(level=logging.DEBUG)
    loggers = [
        logging.getLogger(n) for n in ("", "modelport", "uvicorn", "uvicorn.error", "sqlalchemy")
    ]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        admin = server.client()
        admin.push("iris", iris_pipeline, alias="production")
        admin.push(
            "double",
            FailsOnNegative(),
            schema={"fields": [{"name": "x", "type": "number"}]},
            alias="production",
        )
        made = admin.create_key("app", ["predict", "read"])
        secret = made["key"]
        good, revoked = secret, server.key("gone", "read")
        admin.revoke_key(next(k["id"] for k in admin.list_keys() if k["consumer"] == "gone"))
        forged = "mp_" + "x" * 43
        plain = server.http("")
        for key in (good, revoked, forged, server.admin_key):
            for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
                plain.post("/v1/models/iris/predict", json={"inputs": [ROW]}, headers=headers)
                plain.post("/v2/models/iris/infer", json=INFER, headers=headers)
                plain.post(
                    "/v1/models/double/predict", json={"inputs": [{"x": -1}]}, headers=headers
                )
                plain.get("/v1/models", headers=headers)
                plain.get("/v1/settings", headers=headers)
                plain.post(
                    "/v1/models/iris/predict",
                    content=b"{",
                    headers={**headers, "Content-Type": "application/json"},
                )
            # Keys in the wrong places: a query string, a body, the request id.
            plain.get(f"/v1/models?api_key={key}&key={key}")
            plain.post(f"/v1/models/iris/predict?key={key}", json={"inputs": [ROW], "key": key})
            plain.post(
                "/v1/feedback",
                json={"feedback": [{"prediction_id": key}]},
                headers={"X-API-Key": key},
            )
            plain.get("/v1/models/nope", headers={"X-API-Key": key, "X-Request-ID": "r1"})
    finally:
        for lg, level in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
    logged = "\n".join(records)
    assert "negative input" in logged  # the failing model was logged, with its traceback
    for key in (good, revoked, forged, server.admin_key):
        assert key not in logged
        assert key[10:] not in logged  # beyond the public prefix shown by `keys list`
