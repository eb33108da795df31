"""Faults: a model that raises, hangs or leaks fails its own requests only; shutdown drains;
a database restart under load loses nothing acknowledged and the service recovers by itself."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport import Client
from modelport.settings import Settings
from tests.api.models import Constant, FailsOnNegative, Leaker, Napper, Sleeper
from tests.conftest import RunningServer, free_port, make_key, needs, start_server, wait_until
from tests.procs import ServerProcess

X_SCHEMA = {"fields": [{"name": "x", "type": "number"}]}


@pytest.fixture
def touchy(settings: Settings) -> Iterator[RunningServer]:
    """A server that judges versions quickly."""
    quick = {
        "unhealthy_after_failures": 3,
        # Long enough that no request of a slow, loaded machine turns into a probe by surprise.
        "unhealthy_cooldown_seconds": 3,
        "model_memory_growth_mb": 100,
        "predict_threads": 2,
    }
    running = start_server(settings.model_copy(update=quick))
    yield running
    running.stop()


def _predict(http: httpx.Client, name: str, x: float) -> httpx.Response:
    return http.post(f"/v1/models/{name}/predict", json={"inputs": [{"x": x}]})


def _events(http: httpx.Client, name: str, kind: str) -> list[dict[str, Any]]:
    events = http.get(f"/v1/models/{name}/events").json()
    return [e for e in events if e["kind"] == kind]


def _wait(check: Any, timeout: float = 10.0) -> Any:
    return wait_until(check, timeout)


def test_a_version_failing_repeatedly_is_marked_unhealthy_and_recovers(
    touchy: RunningServer,
) -> None:
    mp = touchy.client()
    mp.push("bad", FailsOnNegative(), schema=X_SCHEMA, alias="production")
    mp.push("good", Constant("ok"), schema=X_SCHEMA, alias="production")
    http = touchy.http()
    assert _predict(http, "bad", 1).status_code == 200
    for _ in range(2):  # failures below the streak limit leave it healthy
        assert _predict(http, "bad", -1).status_code == 500
    assert _predict(http, "bad", 1).status_code == 200  # a success ends the streak
    for _ in range(3):
        r = _predict(http, "bad", -1)
        assert r.status_code == 500 and r.json()["error"]["code"] == "model_failed"
    r = _predict(http, "bad", 1)  # a good row, but the version is not called now
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "version_unhealthy"
    assert "3 failed calls in a row" in r.json()["error"]["message"]
    assert _predict(http, "good", 1).json()["predictions"] == ["ok"]  # others keep serving
    health = http.get("/v1/models/bad/health").json()["versions"]
    assert health[0]["healthy"] is False and health[0]["failures_in_a_row"] == 3
    events = _wait(lambda: _events(http, "bad", "version_unhealthy"))
    assert events[0]["detail"]["version"] == 1

    time.sleep(3.1)  # the cooldown passes: the next request is a probe, and it succeeds
    assert _predict(http, "bad", 1).status_code == 200
    assert http.get("/v1/models/bad/health").json()["versions"][0]["healthy"] is True
    _wait(lambda: _events(http, "bad", "version_recovered"))


def test_a_hanging_model_times_out_alone_and_holds_no_more_threads(touchy: RunningServer) -> None:
    mp = touchy.client()
    mp.push("slow", Sleeper(3.0), schema=X_SCHEMA, alias="production")
    mp.push("good", Constant("ok"), schema=X_SCHEMA, alias="production")
    touchy.http().put(
        "/v1/models/slow/serving", json={"predict_timeout_seconds": 0.3}
    ).raise_for_status()
    http = touchy.http()
    assert _predict(http, "slow", 1).json()["predictions"] == [2.0]
    started = time.monotonic()
    r = _predict(http, "slow", 1000)
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "model_timeout"
    assert time.monotonic() - started < 2.5  # answered at the timeout, not when the call ends
    # While its call still runs, the version takes no new call (it would hold another thread)...
    refused = [_predict(http, "slow", 1) for _ in range(3)]
    assert {x.status_code for x in refused} == {503}
    assert "still running past the timeout" in refused[0].json()["error"]["message"]
    # ...and the other models keep the predict threads (two here) and answer at once.
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _predict(http, "good", 1), range(8)))
    assert {a.status_code for a in answers} == {200}
    events = _wait(lambda: _events(http, "slow", "version_unhealthy"))
    assert "timeout of 0.3 s" in events[0]["detail"]["reason"]

    # Once the hung call has ended and the cooldown passed, a probe brings it back.
    def recovered() -> bool:
        return _predict(http, "slow", 1).status_code == 200

    _wait(recovered, timeout=15)


def _race(
    http: httpx.Client, name: str, xs: list[float], wait: float
) -> list[tuple[int | None, float, str]]:
    """Send one request per ``x`` at once: each one's status (None: no answer within ``wait``
    seconds), seconds to the answer and body."""

    def one(x: float) -> tuple[int | None, float, str]:
        started = time.monotonic()
        try:
            r = http.post(f"/v1/models/{name}/predict", json={"inputs": [{"x": x}]}, timeout=wait)
        except httpx.TimeoutException:
            return None, time.monotonic() - started, ""
        return r.status_code, time.monotonic() - started, r.text[:200]

    with ThreadPoolExecutor(len(xs)) as pool:
        return list(pool.map(one, xs))


def _batches(http: httpx.Client, name: str) -> int:
    return int(http.get(f"/v1/models/{name}/versions/1/batching").json()["batches"])


def test_every_request_of_a_batch_that_times_out_gets_its_answer(touchy: RunningServer) -> None:
    mp = touchy.client()
    mp.push("nap", Napper(), schema=X_SCHEMA, alias="production")
    http = touchy.http()
    http.put("/v1/models/nap/serving", json={"predict_timeout_seconds": 1.5}).raise_for_status()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(_race, http, "nap", [1.0], 10)  # one batch of its own, in time
        _wait(lambda: _batches(http, "nap") == 1)
        # These arrive while it runs, so they go together in the next call, which hangs.
        hung = _race(http, "nap", [5.0] * 6, 10)
        assert first.result()[0][0] == 200
    codes = [code for code, _, _ in hung]
    assert None not in codes and set(codes) <= {503, 504}, hung
    assert codes.count(504) >= 2, hung  # several requests shared the call that timed out
    assert _batches(http, "nap") < 7
    # The version is unhealthy, its call still running: every request is refused at once.
    after = _race(http, "nap", [0.0] * 10, 10)
    assert [code for code, _, _ in after] == [503] * 10, after
    assert all("still running past the timeout" in body for _, _, body in after), after


def test_requests_to_an_unhealthy_version_are_all_refused_at_once(touchy: RunningServer) -> None:
    mp = touchy.client()
    mp.push("nap", Napper(), schema=X_SCHEMA, alias="production")
    http = touchy.http()
    timeout = 1.5
    http.put("/v1/models/nap/serving", json={"predict_timeout_seconds": timeout}).raise_for_status()
    assert _predict(http, "nap", 2.0).status_code == 504  # unhealthy; its call ends at 2 s

    def probe_due() -> bool:
        health = http.get("/v1/models/nap/health").json()["versions"][0]
        cooldown = touchy.settings.unhealthy_cooldown_seconds
        due = time.time() > health["since"] + cooldown + 0.1
        return due and health["calls_running_past_timeout"] == 0

    _wait(probe_due)
    with ThreadPoolExecutor(1) as pool:
        probe = pool.submit(_race, http, "nap", [4.0], 10)  # the probe, and it hangs
        _wait(lambda: _batches(http, "nap") == 2)
        refused = _race(http, "nap", [0.0] * 6, 5)  # while the probe runs
        assert probe.result()[0][0] == 504
    assert [code for code, _, _ in refused] == [503] * 6, refused
    assert all("a probe is running" in body for _, _, body in refused), refused
    assert max(seconds for _, seconds, _ in refused) < timeout, refused  # not queued behind it


@pytest.fixture
def four_threads(settings: Settings) -> Iterator[RunningServer]:
    """A server with four predict threads (the default) and a long cooldown."""
    running = start_server(
        settings.model_copy(update={"predict_threads": 4, "unhealthy_cooldown_seconds": 600})
    )
    yield running
    running.stop()


def test_hung_calls_do_not_starve_a_healthy_model(four_threads: RunningServer) -> None:
    mp = four_threads.client()
    http = four_threads.http()
    hang, hang_timeout = 8.0, 3.0
    hangers = [f"hang{i}" for i in range(4)]
    for name in hangers:
        mp.push(name, Napper(), schema=X_SCHEMA, alias="production")
        http.put(
            f"/v1/models/{name}/serving", json={"predict_timeout_seconds": hang_timeout}
        ).raise_for_status()
    mp.push("good", Constant("ok"), schema=X_SCHEMA, alias="production")
    http.put("/v1/models/good/serving", json={"predict_timeout_seconds": 1}).raise_for_status()
    assert _predict(http, "good", 1).status_code == 200

    with ThreadPoolExecutor(4) as pool:
        hung = [pool.submit(_race, http, name, [hang], 20) for name in hangers]
        _wait(lambda: sum(_batches(http, name) for name in hangers) == 4)
        # The four calls hold every predict thread, within their time: "good" waits for one
        # longer than its own timeout. The server is saturated; "good" did nothing wrong.
        [(code, _, body)] = _race(http, "good", [1], 20)
        assert code == 503 and "server_saturated" in body, body
        # Once they run past their timeout, they are replaced: "good" answers at once.
        assert [h.result()[0][0] for h in hung] == [504] * 4
        [(code, seconds, body)] = _race(http, "good", [1], 20)
        assert code == 200, body
        assert seconds < (hang - hang_timeout) / 4  # long before the hung calls end
    health = http.get("/v1/models/good/health").json()["versions"][0]
    assert health["healthy"] is True and health["failures_in_a_row"] == 0, health
    assert not _events(http, "good", "version_unhealthy")


@pytest.fixture
def watchful(settings: Settings) -> Iterator[RunningServer]:
    """A server with a 100 MB memory allowance per version and a long cooldown (a probe let
    through after a short one would leak again, and on a slow machine come between the calls)."""
    quick = {"unhealthy_cooldown_seconds": 600, "model_memory_growth_mb": 100, "predict_threads": 2}
    running = start_server(settings.model_copy(update=quick))
    yield running
    running.stop()


def test_a_leaking_model_is_stopped_before_it_takes_the_server_down(
    watchful: RunningServer,
) -> None:
    mp = watchful.client()
    mp.push("leak", Leaker(40), schema=X_SCHEMA, alias="production")
    mp.push("good", Constant("ok"), schema=X_SCHEMA, alias="production")
    http = watchful.http()
    answers = [_predict(http, "leak", 1) for _ in range(8)]
    codes = [a.status_code for a in answers]
    seen = [(a.status_code, a.text[:300]) for a in answers]
    # 40 MB a call against a 100 MB allowance: the third or fourth call crosses it, and from
    # then on the version is not called (so it stops growing).
    assert codes[:2] == [200, 200], seen
    assert 503 in codes and codes[codes.index(503) :] == [503] * (8 - codes.index(503)), seen
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 503} == {
        "version_unhealthy"
    }, seen
    health = http.get("/v1/models/leak/health").json()["versions"][0]
    assert health["healthy"] is False and health["memory_growth_mb"] > 100
    assert "resident memory grew" in health["reason"]
    assert _predict(http, "good", 1).json()["predictions"] == ["ok"]
    _wait(lambda: _events(http, "leak", "version_unhealthy"))


def test_graceful_shutdown_answers_in_flight_requests_and_commits_them(
    tmp_path: Path, store_url: str, settings: Settings
) -> None:
    home = tmp_path / "home"
    key = make_key(settings.model_copy(update={"home": home, "store": store_url}), "ops", ["admin"])
    server = ServerProcess(home, store_url).start()
    try:
        with Client(server.url, key) as mp:
            mp.push("slow", Constant("done", sleep_ms=1500), schema=X_SCHEMA, alias="production")

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(_call_url, server.url, key) for _ in range(4)]
            time.sleep(0.5)  # the requests are in the model now
            assert server.proc is not None
            assert server.signal(signal.SIGTERM) == 0  # sends it and waits for the exit
            answers = [f.result(timeout=30) for f in futures]
        assert [a.status_code for a in answers] == [200] * 4
        ids = [i for a in answers for i in a.json()["prediction_ids"]]
    finally:
        server.kill()
    restarted = ServerProcess(home, store_url).start()
    try:
        with Client(restarted.url, key) as mp:
            for pid in ids:
                assert mp.prediction(pid)["outputs"]["prediction"] == "done"
    finally:
        restarted.kill()


def _call_url(url: str, key: str) -> httpx.Response:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as h:
        return _predict(h, "slow", 1)


# -- the database goes away under load ----------------------------------------------------------


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


class PrivatePostgres:
    """A PostgreSQL server of the test's own (so it can be stopped), on a loopback port."""

    def __init__(self, bindir: Path) -> None:
        # Outside pytest's private temporary folder: the server may run as another user.
        self.root = Path(tempfile.mkdtemp(prefix="modelport-pg-"))
        self.dir = self.root / "pgdata"
        self.bindir = bindir
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run it as the postgres user
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{args[0]} failed: {done.stderr or done.stdout}"

    def init(self) -> PrivatePostgres:
        self._run(str(self.bindir / "initdb"), "-D", str(self.dir), "-A", "trust", "-U", "postgres")
        return self.start()

    def start(self) -> PrivatePostgres:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"
        log = str(self.root / "postgres.log")  # not a pipe: the server outlives pg_ctl
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.dir),
            "-o",
            options,
            "-l",
            log,
            "-w",
            "start",
        )
        return self

    def crash(self) -> None:
        """Stop at once, as a crash would (no shutdown checkpoint)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.dir), "-m", "immediate", "stop")

    def stop(self) -> None:
        subprocess.run(
            [*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.dir), "-m", "fast", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


@needs(
    "PostgreSQL's server binaries (pg_ctl, initdb) and runuser, to run a private server",
    _pg_bin() is not None and shutil.which("runuser") is not None,
)
def test_a_database_restart_under_load_loses_nothing_and_the_service_recovers(
    tmp_path: Path,
) -> None:
    bindir = _pg_bin()
    assert bindir is not None
    pg = PrivatePostgres(bindir).init()
    home = tmp_path / "home"
    try:
        settings = Settings(home=home, store=pg.url)
        key = make_key(settings, "load", ["admin"])
        server = ServerProcess(home, pg.url).start()
        acked: list[str] = []
        statuses: list[tuple[float, int]] = []
        odd: list[str] = []
        stop = threading.Event()
        try:
            with Client(server.url, key) as mp:
                mp.push("m", Constant("a"), schema=X_SCHEMA, alias="production")

            def load() -> None:
                headers = {"Authorization": f"Bearer {key}"}
                with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
                    while not stop.is_set():
                        r = _predict(http, "m", 1)
                        statuses.append((time.monotonic(), r.status_code))
                        if r.status_code == 200:
                            acked.extend(r.json()["prediction_ids"])
                        else:
                            odd.append(r.text) if r.status_code != 503 else None
                            time.sleep(0.05)

            threads = [threading.Thread(target=load) for _ in range(3)]
            for t in threads:
                t.start()
            time.sleep(1.5)
            pg.crash()
            down_at = time.monotonic()
            time.sleep(2.0)
            pg.start()
            up_at = time.monotonic()
            # the service recovers by itself: requests succeed again within a bounded time
            _wait(
                lambda: any(s == 200 and t > up_at for t, s in statuses[-20:]),
                timeout=30,
            )
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(timeout=30)
            codes = {s for _, s in statuses}
            assert codes <= {200, 503}, (codes, odd[:3])  # clean failures only, never a 500
            assert any(s == 503 for t, s in statuses if down_at <= t <= up_at)
            assert acked
        finally:
            stop.set()
            server.kill()
        # every acknowledged prediction is in the ledger
        restarted = ServerProcess(home, pg.url).start()
        try:
            with Client(restarted.url, key) as mp:
                stored = set(_all_ids(mp, "m"))
            missing = set(acked) - stored
            assert not missing, f"{len(missing)} acknowledged predictions lost"
        finally:
            restarted.kill()
    finally:
        pg.stop()


def _all_ids(mp: Client, name: str) -> Iterator[str]:
    """Every prediction id of a model, page by page."""
    cursor = None
    while True:
        page = mp.predictions(name, limit=1000, cursor=cursor)
        yield from (p["id"] for p in page["predictions"])
        cursor = page["next_cursor"]
        if cursor is None:
            return
