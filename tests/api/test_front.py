"""The front door (modelport.api.front) and the protocol's timeouts: a web page open in the
user's browser cannot change a server, with keys or without; the Host must name the server; a
body must say its content type; a server without keys loads no code; slow clients are cut off.

The attacks are sent as a browser sends them: its ``Origin`` and Fetch Metadata headers, a
``no-cors`` multipart body (which a page may send anywhere without asking the server first).
"""

from __future__ import annotations

import pathlib
import pickle
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.api.front import FrontDoor
from modelport.settings import Settings, load_settings
from tests.conftest import IRIS_COLUMNS, RunningServer, make_key, start_server
from tests.procs import ServerProcess

ROW = dict(zip(IRIS_COLUMNS, (5.1, 3.5, 1.4, 0.2), strict=True))
INFER = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [1.0] * 4}]}
#: What a browser sends with a no-cors fetch from a page of another site.
CROSS_SITE = {
    "Origin": "http://evil.example",
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "no-cors",
    "Sec-Fetch-Dest": "empty",
}


class RunsCode:
    """Unpickling it creates the file ``path``: proof that loading a push ran its code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.path,))


@pytest.fixture
def open_server(settings: Settings) -> Iterator[RunningServer]:
    """A server without keys (``--no-auth``) on loopback."""
    running = start_server(settings.model_copy(update={"no_auth": True}))
    yield running
    running.stop()


def code(response: httpx.Response, status: int, error: str) -> str:
    """The message of a refusal, checked: its status and error code."""
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == error, body
    return str(body["message"])


def test_a_page_of_another_site_cannot_push_a_pickle_to_a_server_without_keys(
    open_server: RunningServer, tmp_path: Path
) -> None:
    marker = tmp_path / "code-ran"
    upload = {"artifact": ("model.pkl", pickle.dumps(RunsCode(marker)), "application/octet-stream")}
    http = open_server.http("")
    for headers in (
        CROSS_SITE,
        {"Origin": "http://evil.example"},  # a browser without Fetch Metadata
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:3000"},  # another port
        {"Origin": "null"},  # a sandboxed frame, a local file
        {"Origin": f"http://localhost:{open_server.settings.port}"},  # another origin, same port
    ):
        refused = http.post("/v1/models/evil/versions", files=upload, headers=headers)
        message = code(refused, 403, "cross_site_request")
        assert "another site" in message, message
        assert not marker.exists(), headers
    assert http.get("/v1/models/evil").status_code == 404

    # The other changes a page could try, the scoring routes included (/v2: its own shape).
    for method, path, body in (
        ("POST", "/v1/models", {"name": "made-by-a-page"}),
        ("POST", "/v1/keys", {"name": "page", "scopes": ["admin"]}),
        ("PUT", "/v1/models/evil/aliases/production", {"version": 1}),
        ("DELETE", "/v1/keys/1", None),
        ("POST", "/v1/models/evil/predict", {"inputs": [ROW]}),
    ):
        refused = http.request(method, path, json=body, headers=CROSS_SITE)
        code(refused, 403, "cross_site_request")
    oip = http.post("/v2/models/evil/infer", json=INFER, headers=CROSS_SITE)
    assert oip.status_code == 403 and "another site" in oip.json()["error"]
    assert http.get("/v1/models").json() == []
    # Reading is no change: a browser keeps the answer from the page anyway.
    assert http.get("/v1/models", headers=CROSS_SITE).status_code == 200


def test_a_server_without_keys_refuses_code_even_from_a_program(
    open_server: RunningServer, tmp_path: Path, iris_pipeline: Any
) -> None:
    import joblib

    marker = tmp_path / "code-ran"
    http = open_server.http("")
    upload = {"artifact": ("model.pkl", pickle.dumps(RunsCode(marker)), "application/octet-stream")}
    refused = http.post("/v1/models/evil/versions", files=upload)  # no Origin: not a browser
    message = code(refused, 422, "artifact_rejected")
    assert "--no-auth" in message and "--dangerously-allow-code-without-auth" in message
    assert refused.json()["error"]["details"] == [
        {"field": "artifact", "reason": "pickle artifacts are refused by a server without keys"}
    ]
    assert not marker.exists()
    path = tmp_path / "model.joblib"
    joblib.dump(iris_pipeline, path)
    anonymous = open_server.client("")
    with pytest.raises(Exception, match="--dangerously-allow-code-without-auth"):
        anonymous.push("iris", path)
    # skops files of trusted types run no code: a server without keys takes them.
    assert anonymous.push("iris", iris_pipeline)["flavor"] == "sklearn"


def test_the_dangerous_flag_lets_a_server_without_keys_load_code(
    settings: Settings, tmp_path: Path, iris_pipeline: Any
) -> None:
    import joblib

    path = tmp_path / "model.joblib"
    joblib.dump(iris_pipeline, path)
    running = start_server(
        settings.model_copy(update={"no_auth": True, "dangerously_allow_code_without_auth": True})
    )
    try:
        assert running.client("").push("iris", path)["flavor"] == "pickle"
        # It lets programs push code, not pages: the browser checks still hold.
        with path.open("rb") as fh:
            page = running.http("").post(
                "/v1/models/iris/versions", files={"artifact": fh}, headers=CROSS_SITE
            )
        code(page, 403, "cross_site_request")
    finally:
        running.stop()


def test_a_body_without_a_content_type_is_415(open_server: RunningServer) -> None:
    http = open_server.http("")
    for method, path in (
        ("POST", "/v1/models"),
        ("POST", "/v1/keys"),
        ("POST", "/v1/models/made-by-a-page/predict"),
        ("PUT", "/v1/models/made-by-a-page/monitoring"),
    ):
        bare = http.request(method, path, content=b'{"name": "made-by-a-page"}')
        assert "content-type" not in bare.request.headers
        message = code(bare, 415, "unsupported_media_type")
        assert "no Content-Type" in message and "application/json" in message
    assert http.get("/v1/models/made-by-a-page").status_code == 404
    # Chunked, without a length: a body all the same.
    chunked = http.post("/v1/models", content=iter([b'{"name": ', b'"made-by-a-page"}']))
    code(chunked, 415, "unsupported_media_type")
    # No body, no type needed; and JSON said as JSON works.
    assert http.post("/v1/models", json={"name": "said"}).status_code == 201
    assert http.delete("/v1/models/said/aliases/production").status_code != 415
    # tritonclient sends its JSON without a Content-Type: /v2 inference reads it.
    oip = http.post("/v2/models/said/infer", content=b'{"inputs": []}')
    assert oip.status_code != 415, oip.text


def test_only_names_the_server_answers_to_are_served(server: RunningServer) -> None:
    http = server.http()
    port = server.settings.port
    routes = [
        ("GET", "/v1/models", None),
        ("GET", "/v1/health", None),
        ("GET", "/", None),
        ("POST", "/v1/models", {"name": "rebound"}),
        ("POST", "/v1/models/iris/predict", {"inputs": [ROW]}),
        ("POST", "/v2/models/iris/infer", INFER),
    ]
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "localhost.x"):
        for method, path, body in routes:
            refused = http.request(method, path, json=body, headers={"Host": host})
            assert refused.status_code == 421, (host, path, refused.text)
            said = refused.json()["error"]
            message = said if isinstance(said, str) else said["message"]
            assert repr(host) in message and "allowed_hosts" in message
            if not path.startswith("/v2"):
                assert said["code"] == "host_not_allowed"
    assert server.client().models() == []
    for host in (
        f"127.0.0.1:{port}",
        "127.0.0.1",
        f"localhost:{port}",
        f"LocalHost.:{port}",
        f"[::1]:{port}",
        "[::1]",
        f"dashboard.localhost:{port}",
        f"192.168.1.20:{port}",  # an address cannot be rebound
        "[fe80::1]:8000",
    ):
        assert http.get("/v1/models", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_adds_names(settings: Settings) -> None:
    running = start_server(
        settings.model_copy(update={"allowed_hosts": ["models.example.com", "*.corp.example"]})
    )
    try:
        http = running.http()
        for host in ("models.example.com", "models.example.com:443", "a.corp.example", "localhost"):
            assert http.get("/v1/models", headers={"Host": host}).status_code == 200, host
        for host in ("corp.example", "example.com", "models.example.com.evil.example"):
            assert http.get("/v1/models", headers={"Host": host}).status_code == 421, host
    finally:
        running.stop()
    anything = settings.model_copy(update={"allowed_hosts": ["*"]})
    assert FrontDoor(anything).any_host


def test_which_names_a_server_answers_to_by_default(settings: Settings) -> None:
    loopback = FrontDoor(settings)
    assert not loopback.any_host and loopback.allows("localhost") and loopback.allows("10.0.0.7")
    assert not loopback.allows("evil.example")
    named = FrontDoor(settings.model_copy(update={"host": "models.internal"}))
    assert named.allows("models.internal") and not named.allows("evil.example")
    # Every interface with keys: any name (a balancer's, a container's); keys guard it, and a
    # rebinding page carries none.
    assert FrontDoor(settings.model_copy(update={"host": "0.0.0.0"})).any_host
    assert FrontDoor(settings.model_copy(update={"host": "::"})).any_host
    # Without keys, even there: this machine's names only.
    forced = FrontDoor(settings.model_copy(update={"host": "0.0.0.0", "no_auth": True}))
    assert not forced.any_host and forced.allows(socket.gethostname().lower())
    assert not forced.allows("evil.example")
    listed = settings.model_copy(update={"host": "0.0.0.0", "allowed_hosts": ["models.example"]})
    assert not FrontDoor(listed).any_host


def test_cross_site_changes_are_refused_with_keys_and_same_origin_ones_pass(
    server: RunningServer,
) -> None:
    http = server.http()  # an admin key: a page cannot send one, but the check holds anyway
    code(http.post("/v1/models", json={"name": "x"}, headers=CROSS_SITE), 403, "cross_site_request")
    for n, same in enumerate(
        (
            {"Origin": server.url, "Sec-Fetch-Site": "same-origin"},
            {"Origin": server.url},  # a browser without Fetch Metadata
            {"Sec-Fetch-Site": "none"},  # typed into the address bar
            {},  # a program
        )
    ):
        made = http.post("/v1/models", json={"name": f"m{n}"}, headers=same)
        assert made.status_code == 201, (same, made.text)
    assert len(server.client().models()) == 4


def test_the_dashboard_works_from_its_own_origin_and_not_from_another(
    server: RunningServer,
) -> None:
    own = {"Origin": server.url, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
    browser = httpx.Client(base_url=server.url, headers=own, timeout=30)
    try:
        signed = browser.post("/login", data={"key": server.admin_key})
        assert signed.status_code == 303, signed.text
        browser.cookies.clear()  # the cookie is sent by hand below
        session = {"Cookie": f"modelport_key={server.admin_key}"}
        dashboard = {**session, "X-Modelport-Dashboard": "1"}
        assert browser.get("/v1/whoami", headers=session).json()["admin"] is True
        made = browser.post("/v1/models", json={"name": "from-dashboard"}, headers=dashboard)
        assert made.status_code == 201, made.text
        # A page of another site can neither sign the browser in nor use its session.
        login = browser.post("/login", data={"key": server.admin_key}, headers=CROSS_SITE)
        code(login, 403, "cross_site_request")
        forged = browser.post(
            "/v1/models", json={"name": "forged"}, headers={**dashboard, **CROSS_SITE}
        )
        code(forged, 403, "cross_site_request")
    finally:
        browser.close()
    assert [m["name"] for m in server.client().models()] == ["from-dashboard"]


# -- timeouts -------------------------------------------------------------------------------------


@pytest.fixture
def slow_limits(tmp_path: Path, store_url: str) -> Iterator[tuple[ServerProcess, str]]:
    """``modelport serve`` with 1-second header and body timeouts, and an admin key."""
    home = tmp_path / "home"
    key = make_key(load_settings({"home": str(home), "store": store_url}), "ops", ["admin"])
    args = ["--header-timeout-seconds", "1", "--body-timeout-seconds", "1"]
    proc = ServerProcess(home, store_url, args=args).start()
    yield proc, key
    proc.kill()


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (it reads as the end of the stream)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(65536) == b""
    except ConnectionError:
        return True


def test_headers_sent_a_byte_at_a_time_are_cut_off(
    slow_limits: tuple[ServerProcess, str],
) -> None:
    proc, _ = slow_limits
    request = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
    dribblers = [socket.create_connection(("127.0.0.1", proc.port)) for _ in range(50)]
    silent = socket.create_connection(("127.0.0.1", proc.port))  # connects, sends nothing
    started = time.monotonic()
    closed_at: dict[int, float] = {}
    try:
        sent = 0
        while len(closed_at) < len(dribblers) + 1 and time.monotonic() - started < 15:
            for n, sock in enumerate([*dribblers, silent]):
                if n in closed_at:
                    continue
                try:
                    if sock is not silent:
                        sock.sendall(request[sent : sent + 1])
                except OSError:
                    closed_at[n] = time.monotonic() - started
                    continue
                if _closed(sock):
                    closed_at[n] = time.monotonic() - started
            sent += 1
            time.sleep(0.1)
        assert len(closed_at) == len(dribblers) + 1, f"still open: {51 - len(closed_at)}"
        # Each was cut off after the header timeout (1 s), none before.
        assert min(closed_at.values()) >= 0.9 and max(closed_at.values()) < 5, closed_at
        assert sent < len(request)  # they never got to finish their headers
    finally:
        for sock in [*dribblers, silent]:
            sock.close()
    # Meanwhile and afterwards, the server serves.
    assert httpx.get(f"{proc.url}/v1/health", timeout=5).status_code == 200


def test_a_body_that_stops_arriving_gets_408_and_the_connection_closes(
    slow_limits: tuple[ServerProcess, str],
) -> None:
    proc, key = slow_limits
    for path in ("/v1/models", "/v1/models/iris/predict", "/v2/models/iris/infer"):
        with socket.create_connection(("127.0.0.1", proc.port)) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n".encode()
                + b'{"name": '
            )
            started = time.monotonic()
            sock.settimeout(10)
            answer = b""
            while chunk := sock.recv(65536):  # until the server closes the connection
                answer += chunk
            waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), (path, answer)
        assert b"body_timeout_seconds" in answer and 0.9 <= waited < 5, (path, waited)
    assert httpx.get(f"{proc.url}/v1/health", timeout=5).status_code == 200
