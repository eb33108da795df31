"""Shared fixtures: a fresh store per test (SQLite, or PostgreSQL when configured) and a real
server on a free loopback port.

Set ``MODELPORT_TEST_POSTGRES_URL`` (e.g. ``postgresql://postgres@127.0.0.1:5432/test``) to run
the whole suite against PostgreSQL: each test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from modelport import Client
from modelport.registry.keys import create_key
from modelport.settings import Settings, load_settings
from modelport.store import Store

POSTGRES_URL = os.environ.get("MODELPORT_TEST_POSTGRES_URL")


def pytest_report_header(config: pytest.Config) -> str:
    if POSTGRES_URL:
        return f"modelport store: PostgreSQL ({POSTGRES_URL}), a fresh schema per test"
    return (
        "modelport store: SQLite only -- PostgreSQL NOT tested "
        "(set MODELPORT_TEST_POSTGRES_URL to run the suite against it)"
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not POSTGRES_URL:
        terminalreporter.write_line(
            "NOTE: PostgreSQL was skipped: the suite ran on SQLite only "
            "(set MODELPORT_TEST_POSTGRES_URL to cover it).",
            yellow=True,
        )


def needs(what: str, available: bool) -> pytest.MarkDecorator:
    """Mark a test that needs something pip cannot install (a service on loopback, a Debian
    package). Where it is missing the test is skipped with ``what`` as the reason; under CI
    (``CI`` set, as ``.ci/run`` runs) it fails instead, since CI provides all of them."""
    return pytest.mark.needs(what=what, available=available)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(what, available): see tests.conftest.needs")
    if POSTGRES_URL:
        _name_the_opener_of_open_connections_deleted()


def _name_the_opener_of_open_connections_deleted() -> None:
    """psycopg warns when a connection is deleted while still open (a ``ResourceWarning``, an
    error here), in whichever test runs when the garbage collector gets to it, and the warning
    names no opener. Record, for each connection, the test that opened it and where, and put
    both in that warning. Diagnostics only: psycopg's own checks decide whether it warns."""
    import traceback
    import warnings

    import psycopg

    connect = psycopg.Connection.connect.__func__  # type: ignore[attr-defined]
    deleted = psycopg.Connection.__del__

    def traced_connect(cls: Any, *args: Any, **kwargs: Any) -> Any:
        conn = connect(cls, *args, **kwargs)
        test = os.environ.get("PYTEST_CURRENT_TEST", "outside any test")
        conn._modelport_opened_by = (test, "".join(traceback.format_stack(limit=16)[:-1]))
        return conn

    def traced_del(self: Any) -> None:
        test, stack = getattr(self, "_modelport_opened_by", ("an unknown test", "unknown\n"))

        def warn(message: str, category: type[Warning]) -> None:
            warnings.warn(f"{message}; opened during {test}, at:\n{stack}", category, stacklevel=2)

        deleted(self, warn)  # type: ignore[call-arg]

    psycopg.Connection.connect = classmethod(traced_connect)  # type: ignore[assignment,method-assign]
    psycopg.connect = psycopg.Connection.connect
    psycopg.Connection.__del__ = traced_del  # type: ignore[method-assign]


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        if not mark.kwargs["available"]:
            what = mark.kwargs["what"]
            if os.environ.get("CI"):
                pytest.fail(f"CI must provide {what}", pytrace=False)
            pytest.skip(f"needs {what}")


def reachable(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def fresh_store_url(folder: Path) -> Iterator[str]:
    """A URL of an empty store of its own: a SQLite file in ``folder``, or a PostgreSQL schema
    (dropped on exit)."""
    if not POSTGRES_URL:
        yield f"sqlite:///{folder / 'modelport.db'}"
        return
    import sqlalchemy as sa

    from modelport.store import normalize_url

    schema = "t_" + uuid.uuid4().hex[:16]
    admin = sa.create_engine(normalize_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield _with_search_path(POSTGRES_URL, schema)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture
def store_url(tmp_path: Path) -> Iterator[str]:
    """A URL of an empty store of its own: a SQLite file, or a PostgreSQL schema."""
    with fresh_store_url(tmp_path) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, store_url: str) -> Settings:
    return load_settings({"home": str(tmp_path / "home"), "store": store_url, "port": 0})


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    st = Store(settings.store_url)
    yield st
    st.close()


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never one this process handed out before: the
    kernel may give the port just closed again to the next ``bind(0)``, so two ports chosen
    one after the other (HTTP and gRPC of one server) could otherwise be the same."""
    with contextlib.ExitStack() as held:
        while True:
            s = held.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port


@dataclass
class RunningServer:
    """A modelport server in a thread of this process, on a loopback port."""

    url: str
    settings: Settings
    admin_key: str
    server: uvicorn.Server
    thread: threading.Thread
    grpc_port: int | None = None  # the port its gRPC server bound, when it serves gRPC
    _open: list[Any] = field(default_factory=list)

    def client(self, key: str | None = None) -> Client:
        """A ``modelport.Client`` (admin key by default), closed when the server stops."""
        c = Client(self.url, key if key is not None else self.admin_key)
        self._open.append(c)
        return c

    def http(self, key: str | None = None) -> httpx.Client:
        """A plain HTTP client (admin key by default; ``""`` for none), closed at stop."""
        key = key if key is not None else self.admin_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        c = httpx.Client(base_url=self.url, headers=headers, timeout=60)
        self._open.append(c)
        return c

    def key(self, consumer: str, *scopes: str) -> str:
        """A new key for ``consumer`` with ``scopes``."""
        return make_key(self.settings, consumer, list(scopes))

    def stop(self) -> None:
        for c in self._open:
            c.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)


def make_key(settings: Settings, consumer: str, scopes: list[str]) -> str:
    """Create an API key straight in the store (as ``modelport keys create`` does)."""
    st = Store(settings.store_url)
    try:
        with st.transaction() as conn:
            secret, _ = create_key(conn, consumer, scopes)
    finally:
        st.close()
    return secret


def wait_until(check: Any, timeout: float = 30.0, what: str = "the condition") -> Any:
    """``check()``'s first true value, polled every 10 ms; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return value


def start_server(settings: Settings, service: Any = None) -> RunningServer:
    """Start a server (with ``service``, a ``modelport.service.core.Service`` built by the test
    with fakes at its outside boundaries, when given)."""
    from modelport.api.app import create_app

    # The socket is bound here and handed to uvicorn, so no other process can take the port
    # between choosing it and listening on it (as a port chosen by free_port() can be lost).
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    settings = settings.model_copy(update={"port": port})
    admin = make_key(settings, "test-admin", ["admin"])
    app = create_app(settings, service)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # generous: a loaded machine, or tracemalloc on
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True  # never leave a half-started server behind
            thread.join(timeout=30)
            sock.close()
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    return RunningServer(url, settings, admin, server, thread, app.state.grpc_port)


@pytest.fixture
def server(settings: Settings) -> Iterator[RunningServer]:
    """A real server on a free loopback port, with an admin key."""
    running = start_server(settings)
    yield running
    running.stop()


@dataclass(frozen=True)
class S3Bucket:
    """An empty bucket on the tests' S3-compatible server (moto's, on loopback)."""

    endpoint: str
    name: str

    def url(self, prefix: str = "artifacts") -> str:
        return f"s3://{self.name}/{prefix}"

    @property
    def options(self) -> dict[str, str]:
        """The ``artifacts_options`` setting that points s3fs at the server."""
        return {"endpoint_url": self.endpoint}

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible server in a thread on a free loopback port, for the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """A new bucket; credentials in the environment (servers started as processes inherit it)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "modelport-test",
        "AWS_SECRET_ACCESS_KEY": "modelport-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    bucket = S3Bucket(s3_endpoint, "modelport-" + uuid.uuid4().hex[:12])
    bucket.client().create_bucket(Bucket=bucket.name)
    return bucket


IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="session")
def iris_frame() -> Any:
    """The iris data with readable columns and the species as strings."""
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    df = iris.data.copy()
    df.columns = IRIS_COLUMNS
    df["species"] = iris.target.map(dict(enumerate(iris.target_names))).astype(str)
    return df


@pytest.fixture(scope="session")
def iris_pipeline(iris_frame: Any) -> Any:
    """A scaled logistic regression fitted on named columns."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return model.fit(iris_frame[IRIS_COLUMNS], iris_frame["species"])


# -- batch scoring -------------------------------------------------------------------------------

#: Input rows made bad on purpose: row number -> (column, value, the reason expected).
BAD = {
    3: ("sepal_length", "abc", "sepal_length: expected a number, got string"),
    5: ("petal_width", "", "petal_width: missing"),
    140: ("sepal_width", "inf", "sepal_width: expected a finite number"),
}


@pytest.fixture
def iris_models(server: RunningServer, iris_pipeline: Any, iris_frame: Any) -> Client:
    """iris v1 (production) and v2 (candidate: a model that always answers 'virginica' less)."""
    from sklearn.tree import DecisionTreeClassifier

    mp = server.client()
    mp.push("iris", iris_pipeline, train_data=iris_frame, alias="production")
    stump = DecisionTreeClassifier(max_depth=1, random_state=0)
    stump.fit(iris_frame[IRIS_COLUMNS], iris_frame["species"])
    mp.push("iris", stump, train_data=iris_frame, alias="candidate")
    return mp


def _input(iris_frame: Any) -> Any:
    frame = iris_frame[IRIS_COLUMNS].astype(object)
    frame.insert(0, "id", [f"c{i}" for i in range(len(frame))])
    for row, (column, value, _) in BAD.items():
        frame.loc[row, column] = value
    return frame


@pytest.fixture
def input_csv(tmp_path: Path, iris_frame: Any) -> Path:
    path = tmp_path / "customers.csv"
    _input(iris_frame).to_csv(path, index=False)
    return path
