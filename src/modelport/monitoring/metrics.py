"""Prometheus metrics: what a server process did, per model, version, arm and consumer.

``/metrics`` answers in the Prometheus text format. The figures are prometheus_client metrics,
each owned by one :class:`Metrics` per service (so several servers in one process, as in the
tests, keep separate counts). With ``--workers N`` every worker writes its figures to files in a
directory the parent made (prometheus_client's multiprocess mode) and a scrape of any worker
answers for all of them.

Label values come from the registry and the keys, never from the request: a request for an
unknown model is counted under ``model="_unknown"``. Each family keeps at most
``metrics_max_series`` label sets; beyond that, new ones are counted under ``"_other"`` labels
(and ``modelport_metrics_series_dropped_total`` says so), so a flood of online snapshots or
consumers cannot grow a scrape without bound.

The hot path pays for a dictionary lookup and a few increments per request: children of each
family are cached by their label values.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

from .. import __version__

#: Where the workers of one ``--workers N`` server keep their figures.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

CONTENT_TYPE = CONTENT_TYPE_LATEST

UNKNOWN = "_unknown"
OTHER = "_other"

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class _Family:
    """One metric family with a bounded, cached set of children."""

    def __init__(self, metric: MetricWrapperBase, limit: int, dropped: Counter) -> None:
        self.metric = metric
        self.limit = limit
        self.dropped = dropped
        self.children: dict[tuple[str, ...], Any] = {}
        self.width = len(metric._labelnames)

    def child(self, *values: str) -> Any:
        found = self.children.get(values)
        if found is not None:
            return found
        if len(self.children) >= self.limit:
            self.dropped.labels(self.metric._name).inc()
            values = (OTHER,) * self.width
            found = self.children.get(values)
            if found is not None:
                return found
        found = self.children[values] = self.metric.labels(*values)
        return found


class Metrics:
    """The metrics of one service."""

    def __init__(self, *, max_series: int = 1000) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # In multiprocess mode the values live in files and a scrape reads them all; the
        # metric objects still need a registry of their own, or two services in one process
        # would collide in the global one.
        self.registry = CollectorRegistry(auto_describe=True)
        # The children one scored request or one batch touches, by their label values.
        self._max_series = max_series
        self._scored: dict[tuple[str, int, str | None, str], tuple[Any, Any, Any]] = {}
        self._batches: dict[tuple[str, int], tuple[Any, Any, Any]] = {}
        reg = self.registry
        self.dropped = Counter(
            "modelport_metrics_series_dropped",
            "Label sets counted under _other because a family reached metrics_max_series",
            ["metric"],
            registry=reg,
        )

        def family(metric: MetricWrapperBase) -> _Family:
            return _Family(metric, max_series, self.dropped)

        scoring = ["model", "version", "arm", "consumer"]
        self.requests = family(
            Counter(
                "modelport_requests",
                "Scoring requests answered, by HTTP status code",
                [*scoring, "code"],
                registry=reg,
            )
        )
        self.rows = family(
            Counter("modelport_rows", "Rows scored (one prediction each)", scoring, registry=reg)
        )
        self.latency = family(
            Histogram(
                "modelport_request_duration_seconds",
                "Time from routing to the ledger commit of a scored request",
                ["model", "version", "arm"],
                buckets=LATENCY_BUCKETS,
                registry=reg,
            )
        )
        self.batch_rows = family(
            Histogram(
                "modelport_batch_rows",
                "Rows per model call of the adaptive batcher",
                ["model", "version"],
                buckets=ROWS_BUCKETS,
                registry=reg,
            )
        )
        self.queue_wait = family(
            Histogram(
                "modelport_batch_queue_wait_seconds",
                "Time a request's rows waited in the batcher before their model call began",
                ["model", "version"],
                buckets=LATENCY_BUCKETS,
                registry=reg,
            )
        )
        self.predict_time = family(
            Histogram(
                "modelport_batch_predict_seconds",
                "Duration of one model call (a batch)",
                ["model", "version"],
                buckets=LATENCY_BUCKETS,
                registry=reg,
            )
        )
        self.shadow = family(
            Counter(
                "modelport_shadow_requests",
                "Shadow copies scored off the response path, by outcome (ok, failed)",
                ["model", "version", "outcome"],
                registry=reg,
            )
        )
        self.feedback = family(
            Counter(
                "modelport_feedback",
                "Feedback items accepted, by kind (label, reward)",
                ["model", "version", "kind"],
                registry=reg,
            )
        )
        self.observations = family(
            Counter(
                "modelport_observations",
                "Labelled observations stored, by source (api, file)",
                ["model", "source"],
                registry=reg,
            )
        )
        self.cache_hits = family(
            Counter(
                "modelport_cache_hits",
                "Rows answered from a version's prediction cache",
                ["model", "version"],
                registry=reg,
            )
        )
        self.cache_misses = family(
            Counter(
                "modelport_cache_misses",
                "Rows a version with a prediction cache had to score",
                ["model", "version"],
                registry=reg,
            )
        )
        self.segments_live = family(
            Gauge(
                "modelport_segments_live",
                "Segment instances of a segmented model loaded for serving",
                ["model"],
                registry=reg,
                multiprocess_mode="livesum",
            )
        )
        self.segment_evictions = family(
            Counter(
                "modelport_segment_evictions",
                "Segment instances unloaded because a model reached max_live_segments",
                ["model"],
                registry=reg,
            )
        )
        self.http = family(
            Counter(
                "modelport_http_requests",
                "Requests to the other routes (registry, feedback, learning, ...)",
                ["method", "route", "code"],
                registry=reg,
            )
        )
        self.rpc_requests = family(
            Counter(
                "modelport_rpc_requests",
                "Calls to the gRPC server (protocol grpc), by method and status code",
                ["protocol", "method", "code"],
                registry=reg,
            )
        )
        self.rpc_latency = family(
            Histogram(
                "modelport_rpc_duration_seconds",
                "Time from a gRPC call's arrival to its answer",
                ["protocol", "method"],
                buckets=LATENCY_BUCKETS,
                registry=reg,
            )
        )
        self.commit_seconds = Histogram(
            "modelport_ledger_commit_seconds",
            "Duration of one group commit of the store writer",
            buckets=COMMIT_BUCKETS,
            registry=reg,
        )
        self.commit_jobs = Histogram(
            "modelport_ledger_commit_jobs",
            "Writes (ledger inserts and other jobs) per group commit",
            buckets=ROWS_BUCKETS,
            registry=reg,
        )
        self.inline_commits = Counter(
            "modelport_ledger_inline_commits",
            "Group commits made on the event loop's thread for a request that was all the "
            "process served (inline_when_alone); the others are the writer thread's",
            registry=reg,
        )
        self.commit_failures = Counter(
            "modelport_ledger_commit_failures",
            "Writes the store refused (each answered with an error, never acknowledged)",
            registry=reg,
        )
        self.memory_trims = Counter(
            "modelport_memory_trims",
            "Times traffic went quiet and the allocator's free memory went back to the system",
            registry=reg,
        )
        self.memory_returned = Counter(
            "modelport_memory_returned_bytes",
            "Resident bytes those trims gave back to the system",
            registry=reg,
        )
        self.inflight = Gauge(
            "modelport_inflight_requests",
            "Scoring requests being answered",
            registry=reg,
            multiprocess_mode="livesum",
        )
        info = Gauge(
            "modelport_build_info",
            "The modelport release serving (always 1)",
            ["release"],
            registry=reg,
            multiprocess_mode="max",
        )
        info.labels(__version__).set(1)

    # -- the hot path ----------------------------------------------------------------------------

    def scored(
        self,
        model: str,
        version: int,
        arm: str | None,
        consumer: str,
        rows: int,
        seconds: float,
    ) -> None:
        """A scoring request answered with 200."""
        key = (model, version, arm, consumer)
        children = self._scored.get(key)
        if children is None:
            v, a = str(version), arm or ""
            children = (
                self.requests.child(model, v, a, consumer, "200"),
                self.rows.child(model, v, a, consumer),
                self.latency.child(model, v, a),
            )
            if len(self._scored) < self._max_series:
                self._scored[key] = children
        requests, scored_rows, latency = children
        requests.inc()
        scored_rows.inc(rows)
        latency.observe(seconds)

    def refused(self, model: str, version: int | None, consumer: str, code: int) -> None:
        """A scoring request answered with an error status."""
        v = "" if version is None else str(version)
        self.requests.child(model, v, "", consumer, str(code)).inc()

    def rpc(self, method: str, code: str, seconds: float, protocol: str = "grpc") -> None:
        """One call of an RPC server (its method and status code names)."""
        self.rpc_requests.child(protocol, method, code).inc()
        self.rpc_latency.child(protocol, method).observe(seconds)

    def batch(
        self, model: str, version: int, rows: int, waits: list[float], seconds: float
    ) -> None:
        """One model call of a batcher: its rows, each request's queue wait, its duration."""
        key = (model, version)
        children = self._batches.get(key)
        if children is None:
            v = str(version)
            children = (
                self.batch_rows.child(model, v),
                self.queue_wait.child(model, v),
                self.predict_time.child(model, v),
            )
            if len(self._batches) < self._max_series:
                self._batches[key] = children
        batch_rows, queue_wait, predict_time = children
        batch_rows.observe(rows)
        for wait in waits:
            queue_wait.observe(wait)
        predict_time.observe(seconds)

    def cached(self, model: str, version: int, hits: int, misses: int) -> None:
        """One lookup of a version's prediction cache: rows found, rows scored."""
        v = str(version)
        if hits:
            self.cache_hits.child(model, v).inc(hits)
        if misses:
            self.cache_misses.child(model, v).inc(misses)

    def segments_changed(self, model: str, live: int, evicted: int) -> None:
        """A segmented model's live segment instances: how many now, how many just unloaded."""
        self.segments_live.child(model).set(live)
        if evicted:
            self.segment_evictions.child(model).inc(evicted)

    def committed(self, seconds: float | None, jobs: int, inline: bool = False) -> None:
        """A group commit of the store writer (``seconds`` None: the store refused it;
        ``inline``: made on the event loop's thread)."""
        if seconds is None:
            self.commit_failures.inc(jobs)
            return
        self.commit_seconds.observe(seconds)
        self.commit_jobs.observe(jobs)
        if inline:
            self.inline_commits.inc()

    # -- the scrape ------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """Every figure in the Prometheus text format (all workers' in multiprocess mode)."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def close(self) -> None:
        """A worker that stops takes its live gauges with it."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def prepare_multiprocess(run_dir: Path) -> Path:
    """An empty directory for the figures of a ``--workers N`` server, named in the
    environment its workers inherit."""
    path = run_dir / f"metrics-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path
