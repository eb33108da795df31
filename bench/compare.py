"""modelport side by side with peer model servers: the same models, load and machine, one run.

Servers: modelport (``/v1`` records, ``/v1`` columns, ``/v2`` infer), modelport with two worker
processes, modelport's gRPC (``serve --grpc-port``) and MLServer's gRPC (``ModelInfer``, loaded
by bench/peers/grpc_load.py, an asyncio grpcio client, since Debian has no gRPC load tool), the floor (a bare Starlette app, bench/peers/floor.py), MLServer with adaptive
batching off and on, ``mlflow models serve``, and a BentoML service with batching off and on.
Each server runs from its own virtual environment under bench/.venvs/ (built when missing:
modelport from this checkout with its core dependencies, the peers from PyPI), with
scikit-learn, numpy and joblib pinned to this Python's versions so one joblib file loads
everywhere. Models: a StandardScaler + LogisticRegression pipeline and a RandomForestClassifier
(100 trees, depth 8), 20 features.

Each server serves one model at a time, pinned to CPU 0; ``wrk`` (one thread) loads it from
CPU 1 with 1-row and 100-row requests at 16 and 64 connections, after a warm-up. A peer's
start-up runs from its launch to its first successful predict. modelport loads the models of
its store when it starts, so it is started on an empty store (launch to ``/v1/health``), the
model is pushed, the server is stopped and started again on that store: its start-up is the
second launch to the first successful predict. Everything listens on 127.0.0.1, every run is
bounded in time, and every server process group is stopped at the end (also on Ctrl-C).

    python bench/compare.py                        # everything, 10 s per cell
    python bench/compare.py --seconds 2 --only floor --only mlflow --models lr
    python bench/compare.py --only modelport --serve-arg=--batch-max-rows=256
    python bench/compare.py --json out.json --record
    python bench/compare.py --only modelport-grpc --only mlserver-grpc   # gRPC against gRPC
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import grpc_load, load, procs, venvs
from peers.report import MODELS, ROWS, cpu_model, report, versions
from peers.servers import Context, Model, Peer, Running, Variant, all_peers, log_tail


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- models --------------------------------------------------------------------------------------


def build_models(work: Path, names: list[str]) -> list[Model]:
    """Train the models (fixed seed, on plain arrays) and save each once as a joblib file."""
    import joblib
    import numpy as np
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = make_classification(n_samples=5000, n_features=20, random_state=0)
    rows = np.round(X[:100], 6)
    made = {
        "lr": lambda: make_pipeline(StandardScaler(), LogisticRegression()),
        "rf": lambda: RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0),
    }
    models = []
    for name in names:
        estimator = made[name]().fit(X, y)
        path = work / f"{name}.joblib"
        joblib.dump(estimator, path)
        expected = [float(v) for v in estimator.predict(rows)]
        trusted = ["sklearn.tree._tree.Tree"] if name == "rf" else []
        models.append(Model(name, MODELS[name], estimator, path, rows.tolist(), expected, trusted))
    return models


# -- one server ----------------------------------------------------------------------------------


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _payload(variant: Variant, rows: list[list[float]]) -> bytes:
    """What a variant sends for ``rows``: JSON, or a gRPC variant's serialized message."""
    body = variant.body(rows)
    return body if variant.protocol == "grpc" else _encode(body)


def _post(running: Running, path: str, body: bytes, timeout: float) -> httpx.Response:
    headers = {"Content-Type": "application/json", **running.headers}
    return httpx.post(running.url + path, content=body, headers=headers, timeout=timeout)


def _with_log(reason: str, running: Running) -> RuntimeError:
    tail = log_tail(running.log)
    return RuntimeError(f"{reason}; log: {tail}" if tail else reason)


def wait_ready(peer: Peer, running: Running, model: Model, deadline: float) -> None:
    """Poll until the first variant answers a 1-row predict with 200."""
    variant = peer.variants(model)[0]
    body = _payload(variant, model.rows[:1])
    try:
        if variant.protocol == "grpc":
            grpc_load.wait_ok(running.proc, running.state["grpc"], body, running.headers, deadline)
        else:
            procs.wait_for_200(
                running.proc, lambda: _post(running, variant.path, body, timeout=5), deadline
            )
    except RuntimeError as exc:
        raise _with_log(str(exc), running) from None


def seed(peer: Peer, ctx: Context, model: Model, timeout: float, server: dict[str, Any]) -> None:
    """A seeded peer's first start, on an empty folder: time the launch to healthy and the seed
    (modelport: launch to ``GET /v1/health`` 200 on an empty store, then the push), then stop it."""
    started = time.monotonic()
    first = peer.launch(ctx, model, "server-seed.log")
    try:
        try:
            peer.wait_started(first, started + timeout)
        except RuntimeError as exc:
            raise _with_log(f"empty start: {exc}", first) from None
        server["empty_health_s"] = time.monotonic() - started
        pushed = time.monotonic()
        peer.seed(first, model)
        server["push_s"] = time.monotonic() - pushed
    finally:
        left = procs.stop(first.proc)
    if left:
        raise RuntimeError(f"empty start: processes {left} still alive after the stop")


def verify(running: Running, variant: Variant, model: Model) -> None:
    """A 1-row and a 100-row request: 200, and the model's own predictions."""
    for n in ROWS:
        body = _payload(variant, model.rows[:n])
        if variant.protocol == "grpc":
            import grpc

            try:
                raw = grpc_load.call(running.state["grpc"], body, running.headers)
            except grpc.RpcError as exc:
                raise RuntimeError(
                    f"verify ({n} rows): {exc.code().name}: {exc.details()}"
                ) from None
            text, read = repr(raw[:200]), lambda raw=raw: variant.predictions(raw)
        else:
            answer = _post(running, variant.path, body, timeout=30)
            if answer.status_code != 200:
                raise RuntimeError(
                    f"verify ({n} rows): HTTP {answer.status_code}: {answer.text[:200]}"
                )
            text, read = answer.text[:200], lambda answer=answer: variant.predictions(answer.json())
        try:
            got = [float(v) for v in read()]
        except (ValueError, KeyError, TypeError, StopIteration) as exc:
            raise RuntimeError(f"verify ({n} rows): unexpected answer ({exc!r}): {text}") from exc
        if got != model.expected[:n]:
            raise RuntimeError(
                f"verify ({n} rows): predictions {got[:5]} differ from the model's "
                f"{model.expected[:5]}"
            )


def measure(
    peer: Peer, ctx: Context, model: Model, args: argparse.Namespace
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start ``peer`` with ``model``, load every variant, stop it: (server info, cells)."""
    server: dict[str, Any] = {"server": peer.name, "model": model.name}
    cells: list[dict[str, Any]] = []

    def fail_all(reason: str, variants: list[str]) -> None:
        for v in variants:
            for rows in args.rows:
                for conns in args.connections:
                    cells.append(
                        {
                            "server": v,
                            "peer": peer.name,
                            "model": model.name,
                            "rows": rows,
                            "connections": conns,
                            "error": reason,
                        }
                    )

    variants = peer.variants(model)
    names = [v.name for v in variants]
    if peer.env is not None and ctx.envs[peer.env].error:
        reason = ctx.envs[peer.env].error or ""
        server["error"] = reason
        fail_all(reason, names)
        return server, cells
    running: Running | None = None
    try:
        if peer.seeded:
            seed(peer, ctx, model, args.startup_timeout, server)
        started = time.monotonic()
        running = peer.launch(ctx, model)
        wait_ready(peer, running, model, started + args.startup_timeout)
        server["startup_s"] = time.monotonic() - started
        server["repinned"] = len(procs.pin_tree(running.proc.pid, procs.SERVER_CPU))
        log(f"{peer.name}/{model.name}: ready in {server['startup_s']:.1f} s")
        for i, variant in enumerate(variants):
            try:
                verify(running, variant, model)
            except Exception as exc:
                fail_all(str(exc) or type(exc).__name__, [variant.name])
                continue
            for rows in args.rows:
                body = _payload(variant, model.rows[:rows])
                tag = f"{peer.name}-{model.name}-{i}-{rows}"
                # generate(connections, seconds): one bounded run of the load generator.
                generate: Callable[[int, int], dict[str, Any]]
                if variant.protocol == "grpc":
                    body_file = ctx.work / f"{tag}.bin"
                    body_file.write_bytes(body)
                    generate = functools.partial(
                        grpc_load.run, running.state["grpc"], body_file, running.headers
                    )
                else:
                    lua = load.script(ctx.work, tag, body, running.headers)
                    generate = functools.partial(load.run, running.url + variant.path, lua)
                for conns in args.connections:
                    cell: dict[str, Any] = {
                        "server": variant.name,
                        "peer": peer.name,
                        "model": model.name,
                        "rows": rows,
                        "connections": conns,
                    }
                    if running.proc.poll() is not None:
                        cell["error"] = f"server exited: {log_tail(running.log)}"
                    else:
                        try:
                            if args.warmup > 0:
                                generate(conns, args.warmup)
                            cell.update(repeated(generate, conns, args.seconds, args.repeat))
                            cell["rows_per_s"] = cell["rps"] * rows
                        except Exception as exc:  # a failed cell is reported, not fatal
                            cell["error"] = str(exc) or type(exc).__name__
                    cells.append(cell)
                    log(json.dumps(cell))
        server["memory"] = procs.memory(running.proc.pid)
        server["rss_bytes"] = sum(m["rss_bytes"] for m in server["memory"])
        server["processes"] = len(server["memory"])
        if args.rest_seconds > 0:  # and once the server has been left alone for a while
            time.sleep(args.rest_seconds)
            server["rss_rest_bytes"] = procs.rss_bytes(running.proc.pid)
    except Exception as exc:  # a server that cannot start or be pushed to is a failed row
        reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, RuntimeError) else str(exc)
        server["error"] = reason
        done = {c["server"] for c in cells}
        fail_all(reason, [n for n in names if n not in done])
    finally:
        if running is not None:
            left = procs.stop(running.proc)
            if left:  # reported; a process that survives SIGKILL is beyond this script
                server["left_running"] = left
                log(f"{peer.name}/{model.name}: processes {left} still alive after the stop")
    return server, cells


def repeated(
    generate: Callable[[int, int], dict[str, Any]], conns: int, seconds: int, times: int
) -> dict[str, Any]:
    """``times`` runs of one cell back to back: the medians of requests/s and of each latency
    percentile (each its own median), the slowest request of them all, the errors summed, and
    every run's requests/s and p99 in ``rps_runs`` and ``p99_runs``."""
    runs = [generate(conns, seconds) for _ in range(times)]
    if times == 1:
        return runs[0]
    out = dict(runs[0])
    for key in ("rps", "p50_us", "p99_us", "p999_us"):
        if all(key in r for r in runs):
            out[key] = statistics.median(r[key] for r in runs)
    if all("max_us" in r for r in runs):
        out["max_us"] = max(r["max_us"] for r in runs)
    out["errors"] = sum(r.get("errors", 0) for r in runs)
    out["rps_runs"] = [r.get("rps") for r in runs]
    out["p99_runs"] = [r.get("p99_us") for r in runs]
    return out


# -- main ----------------------------------------------------------------------------------------


def main() -> None:
    names = [p.name for p in all_peers()]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="Length of each measured cell.")
    parser.add_argument(
        "--warmup", type=int, default=None, help="Warm-up before each cell (default: seconds/5)."
    )
    parser.add_argument(
        "--only", action="append", choices=names, help="Run only this server (repeatable)."
    )
    parser.add_argument("--models", default="lr,rf", help="Comma-separated: lr, rf.")
    parser.add_argument(
        "--rows", default="1,100", help="Comma-separated rows per request (default 1,100)."
    )
    parser.add_argument(
        "--connections",
        default="16,64",
        help="Comma-separated connections (calls in flight for gRPC; default 16,64).",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="Runs of each cell after its warm-up; the table shows their medians.",
    )
    parser.add_argument(
        "--checkout",
        type=Path,
        default=venvs.REPO,
        help="Serve modelport from this checkout (e.g. a `git worktree` of an older commit) "
        "in an environment of its own; default: this one.",
    )
    parser.add_argument(
        "--install", action="store_true", help="Rebuild the peers' virtual environments."
    )
    parser.add_argument(
        "--startup-timeout", type=float, default=180.0, help="Seconds a server may take to start."
    )
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="Extra flag for `modelport serve`, e.g. --serve-arg=--batch-max-rows=256 "
        "(repeatable; both modelport servers).",
    )
    parser.add_argument(
        "--rest-seconds",
        type=float,
        default=0.0,
        help="Also read each server's RSS this long after its last load (memory at rest after "
        "load; modelport returns free heap once quiet for --memory-trim-seconds).",
    )
    parser.add_argument(
        "--keep", action="store_true", help="Keep the work folder (models, server logs)."
    )
    parser.add_argument("--json", type=Path, help="Write the raw results to this file.")
    parser.add_argument(
        "--record", action="store_true", help="Append the results to bench/RESULTS.md."
    )
    args = parser.parse_args()
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.models or any(m not in MODELS for m in args.models):
        parser.error(f"--models takes a comma-separated list of {', '.join(MODELS)}")
    try:
        args.rows = [int(n) for n in args.rows.split(",")]
        args.connections = [int(n) for n in args.connections.split(",")]
    except ValueError:
        parser.error("--rows and --connections take comma-separated whole numbers")
    if not args.rows or any(n < 1 or n > 100 for n in args.rows):
        parser.error("--rows takes numbers from 1 to 100 (the models' 100 rows)")
    if not args.connections or any(n < 1 for n in args.connections):
        parser.error("--connections takes numbers of 1 or more")
    if args.repeat < 1:
        parser.error("--repeat takes 1 or more")
    args.checkout = args.checkout.resolve()
    if not (args.checkout / "pyproject.toml").exists():
        parser.error(f"--checkout {args.checkout}: no pyproject.toml there")
    args.checkout_commit = None if args.checkout == venvs.REPO else venvs.commit_of(args.checkout)
    if args.warmup is None:
        args.warmup = max(1, args.seconds // 5)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    peers = [p for p in all_peers() if not args.only or p.name in args.only]

    procs.interrupt_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="modelport-compare-"))
    try:
        env_names = sorted({p.env for p in peers if p.env is not None})
        envs = venvs.ensure(env_names, force=args.install, log=log, repo=args.checkout)
        for env in envs.values():
            if env.error:
                log(f"{env.name}: {env.error}")
        ctx = Context(work, envs, args.serve_arg)
        models = build_models(work, args.models)
        per_model = sum(len(p.variants(models[0])) for p in peers)
        estimate = per_model * len(models) * len(args.rows) * len(args.connections)
        estimate *= args.seconds * args.repeat + args.warmup
        log(f"about {estimate / 60:.0f} min of load plus start-ups; work folder {work}")
        servers: list[dict[str, Any]] = []
        cells: list[dict[str, Any]] = []
        for peer in peers:
            for model in models:
                server, new = measure(peer, ctx, model, args)
                servers.append(server)
                cells.extend(new)
                if "error" in server:
                    log(f"{peer.name}/{model.name}: failed: {server['error']}")
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        raise SystemExit(130) from None
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = report(args, peers, envs, servers, cells)
    print(text)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": dt.datetime.now(dt.timezone.utc).isoformat(),
                    "cpu": cpu_model(),
                    "cores": os.cpu_count(),
                    "python": platform.python_version(),
                    "command": sys.argv,
                    "seconds": args.seconds,
                    "repeat": args.repeat,
                    "checkout": str(args.checkout),
                    "checkout_commit": args.checkout_commit,
                    "warmup": args.warmup,
                    "serve_args": args.serve_arg,
                    "versions": versions(envs),
                    "peers": {p.name: p.description for p in peers},
                    "models": {k: MODELS[k] for k in args.models},
                    "servers": servers,
                    "cells": cells,
                },
                indent=1,
            )
        )
    if args.record:
        with Path(__file__).with_name("RESULTS.md").open("a") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    main()
