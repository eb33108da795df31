"""The ledger at scale: what reads, writes and disk cost on ledgers of millions of rows.

For each store (SQLite, PostgreSQL) and size, the script builds a ledger by bulk insert (the
quickstart iris model, one prediction per ledger row, spread evenly over ``--days`` days, with
the writer's per-minute roll-ups and ``--labels`` feedback labels on the newest day), starts a
real ``modelport serve`` process on it (loopback only, pinned to the server CPU when it can be)
and measures, each bounded in count and time:

- predict throughput: 1-row requests from ``--connections`` concurrent connections for
  ``--seconds`` seconds (httpx, on the load CPU);
- lookup by id (``GET /v1/predictions/{id}``) p50/p99 over ``--lookups`` random ids (after
  ``--warmup-lookups`` others, not counted), and the block-device reads they caused (from
  ``/sys/block/*/stat``: a ledger larger than memory is read from disk, one smaller is not);
- timeline (24 h, 96 buckets), drift (24 h) and performance (24 h) latency, the median of 5;
- disk bytes per ledger row in the table (SQLite: the table and its indexes from ``dbstat``;
  PostgreSQL: ``pg_total_relation_size``) and per archived row (Parquet bytes / rows);
- archive throughput: the server's own archive loop moving the rows past a retention of
  ``--days - 1`` days while a load of half the measured throughput runs, for at most
  ``--archive-seconds``; then, with the archive loop stopped, lookups of archived ids.

Before anything is measured the build's writes are made durable (PostgreSQL ``CHECKPOINT``,
then ``sync``), so the figures are those of a server on a settled ledger, not of a disk still
writing out the build. ``--keep`` leaves the built ledger in place (its URL printed) for study.

Beside the figures, each size records the state of the machine while they were taken: the
same fixed pure-Python work timed before and after them (a figure that does not depend on the
ledger: if it moves between sizes, the machine did), and the share of CPU time that was steal
(taken by the host) and iowait between the predict load and the performance reads.

    python bench/ledger_scale.py --sizes 1000000 --stores sqlite            # print
    python bench/ledger_scale.py --sizes 1000000,10000000 --record          # append to RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modelport import Client
from modelport.cli.quickstart import train_demo
from modelport.ledger import PREDICTION_COLUMNS, insert_statement
from modelport.registry.keys import create_key
from modelport.store import Store, rollups
from modelport.store.tables import feedback, ledger_archive, predictions
from peers import procs
from peers.modelport_server import IRIS_ROW, command, wait_healthy
from peers.report import cpu_model, installed, versions_text

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
FIELDS = orjson.dumps(list(IRIS_ROW)).decode()
CLASSES = ["setosa", "versicolor", "virginica"]
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
CHUNK = 50_000


def _uuid7(ms: int, rng: random.Random) -> str:
    value = (ms << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64) | (0b10 << 62)
    return str(uuid.UUID(int=value | rng.getrandbits(62)))


#: Distinct inputs and outputs the rows draw from: more than a Parquet row group holds, so
#: repeats inside one group are rare (about 3 %) and the archive's compression is not flattered.
POOL = 65_536


def _pool(seed: int) -> tuple[list[bytes], list[str]]:
    gen = np.random.default_rng(seed)
    inputs = gen.normal([5.8, 3.0, 3.7, 1.2], 0.5, size=(POOL, 4)).astype("<f8")
    probas = gen.dirichlet([1, 1, 1], size=POOL).round(4)
    probas[:, 2] = (1 - probas[:, 0] - probas[:, 1]).round(4)
    outputs = [
        orjson.dumps(
            {
                "predictions": [CLASSES[int(p.argmax())]],
                "classes": CLASSES,
                "probabilities": [p.tolist()],
            }
        ).decode()
        for p in probas
    ]
    return [b"F8" + row.tobytes() for row in inputs], outputs


def _rows(n: int, start: float, end: float, seed: int) -> Iterator[list[tuple[Any, ...]]]:
    """``n`` ledger rows in chunks, times spread evenly over [start, end), ids in time order."""
    rng = random.Random(seed)
    inputs, outputs = _pool(seed)
    step = (end - start) / n
    for first in range(0, n, CHUNK):
        chunk = []
        for i in range(first, min(n, first + CHUNK)):
            ts = start + i * step
            k = rng.getrandbits(16)
            chunk.append(
                (
                    _uuid7(int(ts * 1000), rng),
                    1,
                    FIELDS,
                    ts,
                    "iris",
                    1,
                    "production",
                    "bench",
                    f"{rng.getrandbits(128):032x}",
                    inputs[k],
                    outputs[k],
                    1.0 + rng.random(),
                    "single",
                    None,
                    0,
                    False,
                    None,
                    None,
                    None,
                    None,
                )
            )
        yield chunk


def build(store: Store, n: int, days: int, labels: int) -> float:
    """Bulk-insert ``n`` rows and their roll-ups, then ``labels`` labels; rows per second."""
    now = time.time()
    began = time.perf_counter()
    sql = insert_statement(store.write_engine.dialect.paramstyle)
    upsert = rollups.upsert_statement(store.dialect, store.write_engine.dialect.paramstyle)
    for chunk in _rows(n, now - days * 86400, now - 60, seed=n):
        with store.transaction() as conn:
            if store.dialect == "postgresql":
                raw = conn.connection.driver_connection
                with (
                    raw.cursor() as cur,
                    cur.copy(  # type: ignore[union-attr]
                        f"COPY predictions ({', '.join(PREDICTION_COLUMNS)}) FROM STDIN"
                    ) as copy,
                ):
                    for row in chunk:
                        copy.write_row(row)
            else:
                conn.exec_driver_sql(sql, chunk)
            rollups.add(conn, upsert, chunk)
    rate = n / (time.perf_counter() - began)
    with store.transaction() as conn:
        newest = conn.execute(
            sa.select(predictions.c.id, predictions.c.outputs)
            .where(predictions.c.ts >= now - 86400)
            .order_by(predictions.c.ts.desc())
            .limit(labels)
        ).all()
        conn.execute(
            feedback.insert(),
            [
                {
                    "prediction_id": r.id,
                    "ledger_id": r.id,
                    "ledger_row": 0,
                    "label": r.outputs["predictions"][0] if i % 4 else "setosa",
                    "correct": None,
                    "consumer": "bench",
                    "ts": now,
                }
                for i, r in enumerate(newest)
            ],
        )
    if store.dialect == "postgresql":
        with store.read_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("VACUUM ANALYZE predictions")
            c.exec_driver_sql("CHECKPOINT")
    os.sync()
    return rate


def disk_reads() -> int:
    """Reads completed by every block device since boot (0 where /sys/block is not there)."""
    total = 0
    for stat in Path("/sys/block").glob("*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(stat.read_text().split()[0])
    return total


def cpu_times() -> list[int]:
    """The machine's CPU time so far, in ticks: user, nice, system, idle, iowait, irq, softirq,
    steal (``/proc/stat``; zeros where it is not there)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu "):
                return [int(v) for v in line.split()[1:9]]
    return [0] * 8


def cpu_shares(before: list[int], after: list[int]) -> dict[str, float]:
    """Between two :func:`cpu_times`: the percent of all CPU time that was steal (taken by the
    host for others) and iowait."""
    spent = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(spent) or 1
    return {"steal_pct": 100 * spent[7] / total, "iowait_pct": 100 * spent[4] / total}


def cpu_probe(repeat: int = 5) -> float:
    """The same fixed pure-Python work, timed (ms, the median of ``repeat``): how fast the
    machine runs at the time, beside figures that should not depend on it."""
    took = []
    for _ in range(repeat):
        began = time.perf_counter()
        sum(i * i for i in range(300_000))
        took.append((time.perf_counter() - began) * 1000)
    return statistics.median(took)


def lookups(http: httpx.Client, ids: list[str], warmup: int) -> dict[str, float]:
    """Look each id up, the first ``warmup`` uncounted: p50 and p99 ms, device reads per lookup."""
    for pid in ids[:warmup]:
        assert http.get(f"/v1/predictions/{pid}").status_code == 200
    counted = ids[warmup:]
    lat = []
    reads = disk_reads()
    for pid in counted:
        began = time.perf_counter()
        assert http.get(f"/v1/predictions/{pid}").status_code == 200
        lat.append((time.perf_counter() - began) * 1000)
    return {
        "p50_ms": _pct(lat, 50),
        "p99_ms": _pct(lat, 99),
        "disk_reads": (disk_reads() - reads) / len(counted),
    }


def hot_bytes(store: Store) -> int:
    with store.read() as conn:
        if store.dialect == "postgresql":
            return int(
                conn.exec_driver_sql("SELECT pg_total_relation_size('predictions')").scalar_one()
            )
        return int(
            conn.exec_driver_sql(
                "SELECT sum(pgsize) FROM dbstat WHERE name = 'predictions' OR name IN "
                "(SELECT name FROM sqlite_master WHERE tbl_name = 'predictions')"
            ).scalar_one()
        )


async def _load(url: str, key: str, seconds: float, connections: int, rate: float | None) -> int:
    """1-row predicts for ``seconds``; at most ``rate`` per second in all when given."""
    body = orjson.dumps({"inputs": [IRIS_ROW]})
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    done = 0
    end = time.monotonic() + seconds
    gap = connections / rate if rate else 0.0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal done
        while time.monotonic() < end:
            began = time.monotonic()
            r = await client.post("/v1/models/iris/predict", content=body, headers=headers)
            if r.status_code == 200:
                done += 1
            if gap:
                await asyncio.sleep(max(0.0, gap - (time.monotonic() - began)))

    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(connections)))
    return done


def _times(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        began = time.perf_counter()
        fn()
        out.append((time.perf_counter() - began) * 1000)
    return out


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def _sample_ids(store: Store, n: int, since: float, until: float, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = []
    with store.read() as conn:
        for _ in range(n):
            t = rng.uniform(since, until)
            found = conn.execute(
                sa.select(predictions.c.id)
                .where(predictions.c.model == "iris", predictions.c.ts >= t)
                .order_by(predictions.c.ts)
                .limit(1)
            ).scalar()
            if found:
                out.append(found)
    return out


def measure(url: str, n: int, days: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One store and size: build, serve, measure. The figures."""
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    store = Store(url)
    with store.transaction() as conn:
        key, _ = create_key(conn, "bench", ["admin"])
    out: dict[str, Any] = {"rows": n}
    port = procs.free_port()
    extra = ["--store", url, "--ledger-archive-seconds", "0", "--drift-check-seconds", "0"]
    proc = _serve(home, port, extra)
    base = f"http://127.0.0.1:{port}"
    try:
        model, data = train_demo()
        with Client(base, key) as mp:
            mp.push("iris", model, train_data=data, target="species", alias="production")
    finally:
        procs.stop(proc)
    out["build_rows_per_s"] = build(store, n, days, args.labels)
    out["hot_bytes_per_row"] = hot_bytes(store) / n
    now = time.time()
    ids = _sample_ids(store, args.warmup_lookups + args.lookups, now - days * 86400, now - 120)
    # The pass moves the oldest rows first, and at 100 M rows does not move a whole day in
    # --archive-seconds: archived lookups draw from the ledger's first half hour.
    archived_ids = _sample_ids(
        store,
        args.warmup_lookups + args.archived_lookups,
        now - days * 86400,
        now - days * 86400 + 1800,
    )
    out["cpu_probe_ms"] = cpu_probe()
    ticks = cpu_times()
    proc = _serve(home, port, extra)
    try:
        out["predict_rps"] = (
            asyncio.run(_load(base, key, args.seconds, args.connections, None)) / args.seconds
        )
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        found = lookups(http, ids, args.warmup_lookups)
        out["lookup_p50_ms"], out["lookup_p99_ms"] = found["p50_ms"], found["p99_ms"]
        out["lookup_disk_reads"] = found["disk_reads"]
        for name, path, params in (
            ("timeline", "/v1/models/iris/timeline", {"window": "24h", "buckets": 96}),
            ("drift", "/v1/models/iris/drift", {"window": "24h"}),
            ("performance", "/v1/models/iris/performance", {"window": "24h"}),
        ):
            took = _times(lambda p=path, q=params: http.get(p, params=q).raise_for_status(), 5)
            out[f"{name}_ms"] = statistics.median(took)
        http.close()
    finally:
        procs.stop(proc)
    out.update(cpu_shares(ticks, cpu_times()))
    out["cpu_probe_after_ms"] = cpu_probe()
    # The archive, at half the measured load: the server's own loop.
    with store.read() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one()
    archive_flags = [
        "--store",
        url,
        "--ledger-retention-days",
        str(days - 1),
        "--ledger-archive-seconds",
        "1",
        "--drift-check-seconds",
        "0",
    ]
    cutoff = time.time() - (days - 1) * 86400
    with store.read() as conn:
        due = conn.execute(
            sa.select(sa.func.count()).select_from(predictions).where(predictions.c.ts < cutoff)
        ).scalar_one()
    proc = _serve(home, port, archive_flags)
    try:
        load = threading.Thread(
            target=lambda: asyncio.run(
                _load(base, key, args.archive_seconds, args.connections, out["predict_rps"] / 2)
            )
        )
        began = time.monotonic()
        load.start()
        moved = size = 0
        while load.is_alive():
            with store.read() as conn:
                moved, size = conn.execute(
                    sa.select(
                        sa.func.coalesce(sa.func.sum(ledger_archive.c.predictions), 0),
                        sa.func.coalesce(sa.func.sum(ledger_archive.c.size_bytes), 0),
                    )
                ).one()
            elapsed = time.monotonic() - began
            if moved >= due:
                break
            time.sleep(0.5)
        load.join()
        out["archive_due"] = due
        out["archived_rows"] = int(moved)
        out["archive_rows_per_s"] = int(moved) / elapsed
        out["archived_bytes_per_row"] = int(size) / int(moved) if moved else None
    finally:
        procs.stop(proc)
    # Archived lookups on a server whose archive loop is off: the cost of reading the archive,
    # not of sharing one CPU with a pass still moving rows.
    with store.read() as conn:
        gone = [
            i
            for i in archived_ids
            if conn.execute(sa.select(predictions.c.id).where(predictions.c.id == i)).first()
            is None
        ]
    if len(gone) > args.warmup_lookups:
        proc = _serve(home, port, extra)
        try:
            http = httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
            )
            found = lookups(http, gone, args.warmup_lookups)
            http.close()
        finally:
            procs.stop(proc)
        out["archived_lookups"] = len(gone) - args.warmup_lookups
        out["archived_lookup_p50_ms"] = found["p50_ms"]
        out["archived_lookup_p99_ms"] = found["p99_ms"]
        out["archived_disk_reads"] = found["disk_reads"]
    out["hot_rows_before_archive"] = before
    store.close()
    return out


def _sample_archived_ids(store: Store, home: Path, n: int, seed: int) -> list[str]:
    """``n`` ids drawn from the archive's files (in the server home's local artifact folder)."""
    from modelport.store.archive import Archive
    from modelport.store.artifacts import LocalArtifactStore

    archive = Archive(LocalArtifactStore(home / "artifacts"))
    with store.read() as conn:
        files = list(conn.execute(sa.select(ledger_archive.c.sha256)).scalars())
    rng = random.Random(seed)
    return [rng.choice(archive.read(sha, columns=["id"])).id for sha in rng.choices(files, k=n)]


def lookups_on(url: str, home: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Only the lookups, on a ledger an earlier ``--keep`` run left (``home`` its server's
    home): the ids ``--seed`` draws, so two checkouts compare on the same data (a new seed
    per run keeps an earlier run's pages from flattering the next)."""
    store = Store(url)
    with store.transaction() as conn:
        key, _ = create_key(conn, "bench", ["admin"])
    wanted = args.warmup_lookups + args.lookups
    if args.archived:
        ids = _sample_archived_ids(store, home, wanted, args.seed)
    else:
        with store.read() as conn:
            oldest, newest = conn.execute(
                sa.select(sa.func.min(predictions.c.ts), sa.func.max(predictions.c.ts))
            ).one()
        ids = _sample_ids(store, wanted, oldest, newest, args.seed)
    store.close()
    port = procs.free_port()
    extra = ["--store", url, "--ledger-archive-seconds", "0", "--drift-check-seconds", "0"]
    proc = _serve(home, port, extra)
    base = f"http://127.0.0.1:{port}"
    try:
        if args.load_seconds:  # as in a whole run, where lookups follow the predict load
            asyncio.run(_load(base, key, args.load_seconds, args.connections, None))
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http:
            return lookups(http, ids, args.warmup_lookups)
    finally:
        procs.stop(proc)


def _serve(home: Path, port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [*procs.pin(procs.SERVER_CPU), *command(sys.executable, home, port, extra)],
        stdin=subprocess.DEVNULL,
        stdout=(home / "server.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_healthy(f"http://127.0.0.1:{port}", proc, time.monotonic() + 120)
    return proc


def _fresh_pg(admin_url: str) -> tuple[str, Any]:
    from modelport.store import normalize_url

    schema = "bench_" + uuid.uuid4().hex[:10]
    engine = sa.create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()

    sep = "&" if "?" in admin_url else "?"
    return f"{admin_url}{sep}options=-csearch_path%3D{schema}", drop


FIGURES = [
    ("rows", "ledger rows", "{:,}"),
    ("predict_rps", "predict req/s", "{:.0f}"),
    ("lookup_p50_ms", "lookup p50 ms", "{:.1f}"),
    ("lookup_p99_ms", "lookup p99 ms", "{:.1f}"),
    ("lookup_disk_reads", "device reads per lookup", "{:.2f}"),
    ("timeline_ms", "timeline 24h ms", "{:.0f}"),
    ("drift_ms", "drift 24h ms", "{:.0f}"),
    ("performance_ms", "performance 24h ms", "{:.0f}"),
    ("hot_bytes_per_row", "hot B/row", "{:.0f}"),
    ("archived_bytes_per_row", "archived B/row", "{:.0f}"),
    ("archived_rows", "rows archived (of due)", "{:,}"),
    ("archive_rows_per_s", "archive rows/s at 50% load", "{:,.0f}"),
    ("archived_lookup_p50_ms", "archived lookup p50 ms", "{:.1f}"),
    ("archived_lookup_p99_ms", "archived lookup p99 ms", "{:.1f}"),
    ("archived_lookups", "archived lookups counted", "{:,}"),
    ("archived_disk_reads", "device reads per archived lookup", "{:.2f}"),
    ("build_rows_per_s", "bulk build rows/s", "{:,.0f}"),
    ("cpu_probe_ms", "CPU probe ms, before the figures (fixed work)", "{:.1f}"),
    ("cpu_probe_after_ms", "CPU probe ms, after them", "{:.1f}"),
    ("steal_pct", "CPU steal % while measuring (predict to performance)", "{:.1f}"),
    ("iowait_pct", "CPU iowait % while measuring", "{:.1f}"),
]


def table(results: list[tuple[str, dict[str, Any]]]) -> str:
    head = "| figure | " + " | ".join(f"{s} {r['rows'] / 1e6:g} M" for s, r in results) + " |"
    lines = [head, "|---|" + "---:|" * len(results)]
    for key, label, fmt in FIGURES[1:]:
        cells = [fmt.format(r[key]) if r.get(key) is not None else "-" for _, r in results]
        if key == "archived_rows":
            cells = [f"{r['archived_rows']:,} of {r['archive_due']:,}" for _, r in results]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def writer_cost(url: str, groups: int = 2000, size: int = 16) -> dict[str, float]:
    """Microseconds per group commit of ``size`` ledger rows, with and without the roll-up
    upsert the writer adds (the hot path's share of this feature)."""
    store = Store(url)
    sql = insert_statement(store.write_engine.dialect.paramstyle)
    upsert = rollups.upsert_statement(store.dialect, store.write_engine.dialect.paramstyle)
    chunks = [
        c[i : i + size]
        for c in _rows(groups * size, time.time() - 600, time.time(), 3)
        for i in range(0, len(c), size)
    ]
    out = {}
    for label, with_rollups in (("without", False), ("with", True), ("without again", False)):
        began = time.perf_counter()
        for chunk in chunks:
            with store.transaction() as conn:
                conn.exec_driver_sql(sql, [(str(uuid.uuid4()), *row[1:]) for row in chunk])
                if with_rollups:
                    rollups.add(conn, upsert, chunk)
        out[label] = (time.perf_counter() - began) / len(chunks) * 1e6
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000", help="Ledger rows, comma-separated.")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=os.environ.get("MODELPORT_BENCH_PG", PG_DEFAULT))
    parser.add_argument("--days", type=int, default=10, help="Days the rows are spread over.")
    parser.add_argument("--labels", type=int, default=5000)
    parser.add_argument("--lookups", type=int, default=1000, help="Lookups counted.")
    parser.add_argument(
        "--archived-lookups", type=int, default=300, help="Lookups of archived ids counted."
    )
    parser.add_argument(
        "--warmup-lookups", type=int, default=50, help="Lookups made first and not counted."
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--archive-seconds", type=float, default=60.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workdir", help="Where SQLite files go [a temporary folder].")
    parser.add_argument("--record", action="store_true", help="Append to bench/RESULTS.md.")
    parser.add_argument(
        "--keep", action="store_true", help="Leave each built ledger in place, its URL printed."
    )
    parser.add_argument(
        "--lookups-on",
        nargs=2,
        metavar=("URL", "HOME"),
        help="Only lookups, on a ledger a --keep run left (its store URL and server home).",
    )
    parser.add_argument(
        "--archived", action="store_true", help="With --lookups-on: look up archived ids."
    )
    parser.add_argument(
        "--load-seconds",
        type=float,
        default=0.0,
        help="With --lookups-on: a predict load this long first, as a whole run has.",
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="Which ids --lookups-on draws (another seed: others)."
    )
    parser.add_argument(
        "--writer-cost", action="store_true", help="Only the roll-ups' cost per group commit."
    )
    args = parser.parse_args()
    procs.interrupt_on_sigterm()
    if args.lookups_on:
        print(lookups_on(args.lookups_on[0], Path(args.lookups_on[1]), args))
        return
    if args.writer_cost:
        for kind in args.stores.split(","):
            with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
                url, drop = (
                    _fresh_pg(args.pg_url)
                    if kind == "postgresql"
                    else (f"sqlite:///{tmp}/w.db", None)
                )
                try:
                    print(kind, "µs per group commit of 16 rows:", writer_cost(url))
                finally:
                    if drop is not None:
                        drop()
        return
    results: list[tuple[str, dict[str, Any]]] = []
    for store_kind in args.stores.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            folder = (
                contextlib.nullcontext(tempfile.mkdtemp(dir=args.workdir, prefix="ledger-scale-"))
                if args.keep
                else tempfile.TemporaryDirectory(dir=args.workdir, prefix="ledger-scale-")
            )
            with folder as tmp:
                work = Path(tmp)
                drop = None
                if store_kind == "postgresql":
                    url, drop = _fresh_pg(args.pg_url)
                else:
                    url = f"sqlite:///{work / 'ledger.db'}"
                try:
                    found = measure(url, n, args.days, args, work)
                finally:
                    if args.keep:
                        print("kept:", url, work / "home", flush=True)
                    elif drop is not None:
                        drop()
                print(store_kind, found, flush=True)
                results.append((store_kind, found))
    text = table(results)
    print(text)
    if args.record:
        vers = installed(["modelport", "SQLAlchemy", "pyarrow", "psycopg", "uvicorn", "numpy"])
        entry = (
            f"\n### {dt.date.today().isoformat()} — ledger at scale (bench/ledger_scale.py)\n\n"
            f"Machine: {os.cpu_count()} cores ({cpu_model()}), shared with other work (load"
            f" average {os.getloadavg()[0]:.1f} at the end); server pinned to CPU"
            f" {procs.SERVER_CPU} when it can be, the httpx load in this process."
            f" Python {platform.python_version()}; {versions_text(vers)}.\n"
            f"Command: `python bench/ledger_scale.py --sizes {args.sizes} --stores {args.stores}"
            f" --seconds {args.seconds:g} --archive-seconds {args.archive_seconds:g}`; rows spread"
            f" over {args.days} days, one prediction each, {args.labels} labels,"
            f" {args.connections} connections.\n\n{text}\n"
        )
        with RESULTS.open("a") as fh:
            fh.write(entry)


if __name__ == "__main__":
    main()
