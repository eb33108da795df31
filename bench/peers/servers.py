"""The servers under comparison: how each is set up, started, called and checked.

A :class:`Peer` starts one server process (and whatever that starts) serving one model. Its
:class:`Variant` s are the request forms measured against that server (modelport has three:
``/v1`` records, ``/v1`` columns and ``/v2``); each builds the JSON body for a list of rows and
reads the predictions out of the answer. Every server listens on 127.0.0.1 only, runs in its own
session (so its whole process group can be stopped) and logs to a file in the run's work folder.
modelport is *seeded*: started once on an empty store to push the model, then started again on
that store, since a modelport server loads the models of its store when it starts.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import grpc_load, modelport_server, procs
from .venvs import Env

HERE = Path(__file__).resolve().parent
#: Adaptive batching "on" for MLServer: requests per batch, and seconds a batch may wait.
MLSERVER_BATCH = {"max_batch_size": 64, "max_batch_time": 0.005}
#: Adaptive batching "on" for BentoML: rows per model call (a larger request is split across
#: calls), and the latency bound past which BentoML answers 503 instead of queueing longer.
BENTOML_BATCH = {"max_batch_size": 64, "max_latency_ms": 1000}
#: Environment of every server: no usage reporting (there is no network here anyway).
QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "BENTOML_DO_NOT_TRACK": "True",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PYTHONUNBUFFERED": "1",
}

Rows = list[list[float]]


@dataclass
class Model:
    """One model of the run: its files and the answers it must give."""

    name: str  # "lr" or "rf"
    title: str
    estimator: Any
    joblib_path: Path
    rows: Rows  # the request rows (the first 100 rows of the training data, rounded)
    expected: list[float]  # model.predict on those rows
    trusted_types: list[str] = field(default_factory=list)  # for skops (MLflow's saving)

    @property
    def n_features(self) -> int:
        return len(self.rows[0])


@dataclass
class Variant:
    """One request form against a running server: one row of the results table.

    An ``http`` variant's ``body`` is a JSON document posted to ``path``; a ``grpc`` variant's
    is the serialized request of the RPC ``path``, sent to the server's gRPC port (``Running``
    ``state["grpc"]``), and its ``predictions`` read the serialized answer.
    """

    name: str
    path: str
    body: Callable[[Rows], Any]
    predictions: Callable[[Any], list[Any]]
    protocol: str = "http"


@dataclass
class Running:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    headers: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    work: Path
    envs: dict[str, Env]
    serve_args: list[str] = field(default_factory=list)  # extra flags of `modelport serve`


class Peer:
    """A server under comparison. Subclasses fill in how to start and call it."""

    name = ""
    env: str | None = None  # the bench/.venvs environment it runs in; None: this Python
    description = ""
    #: Started twice: first on an empty folder, which ``seed`` fills (modelport: the push) and
    #: which is then stopped; then again on the same folder, and that start is the one timed
    #: to the first predict and loaded.
    seeded = False

    def variants(self, model: Model) -> list[Variant]:
        raise NotImplementedError

    def setup(self, ctx: Context, model: Model, folder: Path) -> None:
        """Untimed preparation before the launch (files the server reads)."""

    def command(self, ctx: Context, model: Model, folder: Path, port: int) -> list[str]:
        raise NotImplementedError

    def environ(self, ctx: Context, model: Model) -> dict[str, str]:
        return {}

    def wait_started(self, running: Running, deadline: float) -> None:
        """A seeded peer's first start: wait until it takes the seed."""
        raise NotImplementedError

    def seed(self, running: Running, model: Model) -> None:
        """A seeded peer's first start: put the model where the second start finds it."""
        raise NotImplementedError

    def folder(self, ctx: Context, model: Model) -> Path:
        """The server's working folder (its files and logs) in the run's work folder."""
        return ctx.work / f"{self.name}-{model.name}"

    def launch(self, ctx: Context, model: Model, log_name: str = "server.log") -> Running:
        folder = self.folder(ctx, model)
        folder.mkdir(parents=True, exist_ok=True)
        self.setup(ctx, model, folder)
        port = procs.free_port()
        log = folder / log_name
        env = {**os.environ, **QUIET_ENV, **self.environ(ctx, model)}
        if self.env is not None:
            # As if activated: tools the peer starts by name (mlflow runs `uvicorn`) are its own.
            venv = ctx.envs[self.env]
            env["PATH"] = f"{venv.bin}{os.pathsep}{env.get('PATH', '')}"
            env["VIRTUAL_ENV"] = str(venv.path)
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [*procs.pin(procs.SERVER_CPU), *self.command(ctx, model, folder, port)],
                cwd=folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return Running(f"http://127.0.0.1:{port}", proc, log)

    def bin(self, ctx: Context, name: str) -> str:
        assert self.env is not None
        return str(ctx.envs[self.env].bin / name)


def _error_line(text: str) -> str:
    """The last line of a traceback that names an exception, else the last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    named = [line for line in lines if "Error" in line or "Exception" in line]
    return ((named or lines or ["no output"])[-1])[:300]


def log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " / ".join(line.strip() for line in text[-lines:])[:300]


# -- modelport ---------------------------------------------------------------------------------


def _v2_body(rows: Rows) -> dict[str, Any]:
    shape = [len(rows), len(rows[0])]
    return {"inputs": [{"name": "input-0", "shape": shape, "datatype": "FP64", "data": rows}]}


def _v2_predictions(answer: Any) -> list[Any]:
    out = next(o for o in answer["outputs"] if o["name"] == "predict")
    return list(out["data"])


def _grpc_variant(name: str, model: Model) -> Variant:
    """ModelInfer with one FP64 ``[n, k]`` input in typed contents (the protocol's own form)."""
    return Variant(
        name,
        grpc_load.MODEL_INFER,
        lambda rows: grpc_load.request(model.name, rows),
        grpc_load.predictions,
        protocol="grpc",
    )


class Modelport(Peer):
    env = "modelport"
    seeded = True

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self.name = "modelport" if workers == 1 else f"modelport-{workers}w"
        self.description = (
            "`modelport serve` from bench/.venvs/modelport (this checkout, core dependencies), "
            "SQLite store, ledger on; the model pushed with `Client.push(..., alias='production')`"
            ", then the server restarted on that store"
            if workers == 1
            else f"the same with `--workers {workers}` (every process on CPU 0), /v1 records only"
        )
        self._keys: dict[Path, str] = {}

    def variants(self, model: Model) -> list[Variant]:
        # Models fitted on bare arrays get the schema x0..x{k-1} (service._schema_for).
        names = [f"x{i}" for i in range(model.n_features)]
        path = f"/v1/models/{model.name}/predict"
        variants = [
            Variant(
                f"{self.name} /v1 records",
                path,
                lambda rows: {"inputs": [dict(zip(names, r, strict=True)) for r in rows]},
                lambda answer: list(answer["predictions"]),
            ),
            Variant(
                f"{self.name} /v1 columns",
                path,
                lambda rows: {"columns": names, "data": rows},
                lambda answer: list(answer["predictions"]),
            ),
            Variant(
                f"{self.name} /v2 infer",
                f"/v2/models/{model.name}/infer",
                _v2_body,
                _v2_predictions,
            ),
        ]
        return variants if self.workers == 1 else variants[:1]

    def setup(self, ctx: Context, model: Model, folder: Path) -> None:
        importlib.import_module("modelport.client")  # imported now, not in the timed push
        if folder not in self._keys:  # the restart finds the store (and key) it left
            self._keys[folder] = modelport_server.admin_key(folder, self.bin(ctx, "python"))

    def command(self, ctx: Context, model: Model, folder: Path, port: int) -> list[str]:
        workers = ["--workers", str(self.workers)] if self.workers > 1 else []
        python = self.bin(ctx, "python")
        return modelport_server.command(python, folder, port, [*workers, *ctx.serve_args])

    def launch(self, ctx: Context, model: Model, log_name: str = "server.log") -> Running:
        running = super().launch(ctx, model, log_name)
        key = self._keys[self.folder(ctx, model)]
        running.headers["Authorization"] = f"Bearer {key}"
        running.state["key"] = key
        return running

    def wait_started(self, running: Running, deadline: float) -> None:
        modelport_server.wait_healthy(running.url, running.proc, deadline)

    def seed(self, running: Running, model: Model) -> None:
        from modelport import Client

        with Client(running.url, running.state["key"]) as mp:
            mp.push(model.name, model.estimator, alias="production")


class ModelportGrpc(Modelport):
    """modelport's Open Inference Protocol over gRPC (``serve --grpc-port``)."""

    env = "modelport-grpc"

    def __init__(self) -> None:
        super().__init__()
        self.name = "modelport-grpc"
        self.description = (
            "`modelport serve --grpc-port` from bench/.venvs/modelport-grpc (this checkout with "
            "the grpc extra), SQLite store, ledger on, seeded like modelport; ModelInfer"
        )
        self._grpc_port = 0

    def variants(self, model: Model) -> list[Variant]:
        return [_grpc_variant(f"{self.name} ModelInfer", model)]

    def command(self, ctx: Context, model: Model, folder: Path, port: int) -> list[str]:
        self._grpc_port = procs.free_port()
        return [*super().command(ctx, model, folder, port), "--grpc-port", str(self._grpc_port)]

    def launch(self, ctx: Context, model: Model, log_name: str = "server.log") -> Running:
        running = super().launch(ctx, model, log_name)
        running.state["grpc"] = f"127.0.0.1:{self._grpc_port}"
        return running


# -- the floor ---------------------------------------------------------------------------------


class Floor(Peer):
    name = "floor"
    env = "floor"
    description = (
        "Starlette + uvicorn, one process: `json.loads`, `np.asarray`, `model.predict` "
        "(bench/peers/floor.py)"
    )

    def variants(self, model: Model) -> list[Variant]:
        return [
            Variant(
                "floor",
                "/predict",
                lambda rows: {"inputs": rows},
                lambda answer: list(answer["predictions"]),
            )
        ]

    def environ(self, ctx: Context, model: Model) -> dict[str, str]:
        return {"FLOOR_MODEL": str(model.joblib_path)}

    def command(self, ctx: Context, model: Model, folder: Path, port: int) -> list[str]:
        return [
            self.bin(ctx, "python"),
            "-m",
            "uvicorn",
            "floor:app",
            "--app-dir",
            str(HERE),
            *procs.loopback_flags(port),
            "--no-access-log",
        ]


class FloorInModelportEnv(Floor):
    """The floor's app with modelport's libraries installed: the memory comparison on equal
    terms (scikit-learn imports pandas whenever it is installed, and modelport needs it)."""

    name = "floor-env"
    env = "modelport"
    description = (
        "the floor's app run in modelport's virtual environment (same libraries installed, so "
        "scikit-learn also imports pandas)"
    )

    def variants(self, model: Model) -> list[Variant]:
        return [replace(v, name="floor-env") for v in super().variants(model)]


# -- MLServer ----------------------------------------------------------------------------------


class MLServer(Peer):
    env = "mlserver"

    def __init__(self, batching: bool) -> None:
        self.batching = batching
        self.name = "mlserver-batch" if batching else "mlserver"
        on = MLSERVER_BATCH
        self.description = "`mlserver start` with `mlserver_sklearn.SKLearnModel`, " + (
            f"adaptive batching on (max_batch_size {on['max_batch_size']}, "
            f"max_batch_time {on['max_batch_time']} s)"
            if batching
            else "adaptive batching off"
        )

    def variants(self, model: Model) -> list[Variant]:
        return [
            Variant(
                self.name + " /v2 infer",
                f"/v2/models/{model.name}/infer",
                _v2_body,
                _v2_predictions,
            )
        ]

    def setup(self, ctx: Context, model: Model, folder: Path) -> None:
        grpc_port, metrics_port = procs.free_port(), procs.free_port()
        repo = folder / "models"
        (repo / model.name).mkdir(parents=True, exist_ok=True)
        # Server settings: loopback only, no debug (request) logging; the rest left at defaults
        # (one parallel inference worker, metrics on their own port).
        settings = {
            "debug": False,
            "host": "127.0.0.1",
            "grpc_port": grpc_port,
            "metrics_port": metrics_port,
            "metrics_dir": str(folder / "metrics"),
            "environments_dir": str(folder / "envs"),
        }
        model_settings: dict[str, Any] = {
            "name": model.name,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": str(model.joblib_path), "version": "v1"},
        }
        if self.batching:
            model_settings.update(MLSERVER_BATCH)
        self._settings = settings  # settings.json is written with the HTTP port, at launch
        (repo / model.name / "model-settings.json").write_text(json.dumps(model_settings))

    def command(self, ctx: Context, model: Model, folder: Path, port: int) -> list[str]:
        settings = {**self._settings, "http_port": port}
        (folder / "models" / "settings.json").write_text(json.dumps(settings))
        return [self.bin(ctx, "mlserver"), "start", str(folder / "models")]


class MLServerGrpc(MLServer):
    """MLServer's gRPC server (the same process, its ``grpc_port``)."""

    def __init__(self, batching: bool) -> None:
        super().__init__(batching)
        self.name += "-grpc"
        self.description += "; its gRPC port, ModelInfer"

    def variants(self, model: Model) -> list[Variant]:
        return [_grpc_variant(f"{self.name} ModelInfer", model)]

    def launch(self, ctx: Context, model: Model, log_name: str = "server.log") -> Running:
        running = super().launch(ctx, model, log_name)
        running.state["grpc"] = f"127.0.0.1:{self._settings['grpc_port']}"
        return running


# -- MLflow ------------------------------------------------------------------------------------


class MLflow(Peer):
    name = "mlflow"
    env = "mlflow"
    description = (
        "`mlflow models serve --env-manager local -w 1` on an `mlflow.sklearn.save_model` "
        'directory, `{"inputs": [[...], ...]}`'
    )

    def variants(self, model: Model) -> list[Variant]:
        return [
            Variant(
                "mlflow",
                "/invocations",
                lambda rows: {"inputs": rows},
                lambda answer: list(answer["predictions"]),
            )
        ]

    def setup(self, ctx: Context, model: Model, folder: Path) -> None:
        self._model_dir = folder / "mlflow-model"
        if self._model_dir.exists():
            return
        # MLflow 3 stores scikit-learn models with skops and refuses types skops does not trust
        # unless they are named: the forest's tree nodes, which this run built itself.
        code = (
            "import json, sys, joblib, mlflow.sklearn\n"
            "trusted = json.loads(sys.argv[3])\n"
            "kwargs = {'skops_trusted_types': trusted} if trusted else {}\n"
            "mlflow.sklearn.save_model(joblib.load(sys.argv[1]), sys.argv[2], **kwargs)\n"
        )
        args = [str(model.joblib_path), str(self._model_dir), json.dumps(model.trusted_types)]
        done = subprocess.run(
            [self.bin(ctx, "python"), "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=folder,
            env={**os.environ, **QUIET_ENV},
        )
        if done.returncode != 0:
            raise RuntimeError(f"mlflow.sklearn.save_model failed: {_error_line(done.stderr)}")

    def environ(self, ctx: Context, model: Model) -> dict[str, str]:
        # mlflow starts its scoring server with the uvicorn CLI, which reads UVICORN_* options:
        # access log off and warnings only, as for every server here.
        return {"UVICORN_ACCESS_LOG": "false", "UVICORN_LOG_LEVEL": "warning"}

    def command(self, ctx: Context, model: Model, folder: Path, port: int) -> list[str]:
        return [
            self.bin(ctx, "mlflow"),
            "models",
            "serve",
            "-m",
            str(self._model_dir),
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "1",
        ]


# -- BentoML -----------------------------------------------------------------------------------


class BentoML(Peer):
    env = "bentoml"

    def __init__(self, batching: bool) -> None:
        self.batching = batching
        self.name = "bentoml-batch" if batching else "bentoml"
        on = BENTOML_BATCH
        self.description = "`bentoml serve` of bench/peers/bento_service.py, 1 worker, " + (
            f"batchable (max_batch_size {on['max_batch_size']} rows, "
            f"max_latency_ms {on['max_latency_ms']})"
            if batching
            else "not batchable"
        )

    def variants(self, model: Model) -> list[Variant]:
        return [
            Variant(
                self.name,
                "/predict",
                lambda rows: {"inputs": rows},
                lambda answer: list(answer),
            )
        ]

    def environ(self, ctx: Context, model: Model) -> dict[str, str]:
        env = {"BENCH_MODEL": str(model.joblib_path)}
        if self.batching:
            env["BENCH_BENTO_BATCH"] = "1"
            env["BENCH_BENTO_MAX_BATCH_SIZE"] = str(BENTOML_BATCH["max_batch_size"])
            env["BENCH_BENTO_MAX_LATENCY_MS"] = str(BENTOML_BATCH["max_latency_ms"])
        env["BENTOML_HOME"] = str(ctx.work / "bentoml-home")
        return env

    def command(self, ctx: Context, model: Model, folder: Path, port: int) -> list[str]:
        return [
            self.bin(ctx, "bentoml"),
            "serve",
            "bento_service:BenchModel",
            "--working-dir",
            str(HERE),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]


def all_peers() -> list[Peer]:
    return [
        Modelport(),
        Modelport(workers=2),
        ModelportGrpc(),
        Floor(),
        FloorInModelportEnv(),
        MLServer(batching=False),
        MLServer(batching=True),
        MLServerGrpc(batching=False),
        MLServerGrpc(batching=True),
        MLflow(),
        BentoML(batching=False),
        BentoML(batching=True),
    ]
