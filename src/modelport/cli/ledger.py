"""The ``modelport ledger`` commands: the ledger's size and age, its archive, checks, and
what a commit costs on the store.

They work on a store and its artifact store directly (``--home``/``--store``/``--artifacts``,
or the MODELPORT_* variables), like an operator's maintenance tool, beside running servers:
archived rows are written and registered before they are deleted (modelport.store.retention).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import click

from ..timefmt import iso
from .common import Group, fail, print_json, table


@contextlib.contextmanager
def _opened(home: str | None, store: str | None, artifacts: str | None) -> Iterator[Any]:
    from ..settings import load_settings
    from ..store import Store
    from ..store.artifacts import artifact_store

    settings = load_settings({"home": home, "store": store, "artifacts": artifacts})
    st = Store(settings.store_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        yield settings, st, artifact_store(settings)
    finally:
        st.close()


def _store_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--artifacts", help="Artifact store [env MODELPORT_ARTIFACTS]")(fn)
    fn = click.option("--store", help="Store URL [env MODELPORT_STORE]")(fn)
    fn = click.option("--home", help="Home folder [env MODELPORT_HOME]")(fn)
    return fn


def _report_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The store's options and ``--json`` (as ``as_json``), for a command that reports."""
    fn = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)
    return _store_options(fn)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


@click.group(cls=Group)
def ledger() -> None:
    """The prediction ledger: size and age, the Parquet archive, checks.

    \b
    Examples:
      modelport ledger status
      modelport ledger archive --model churn
      modelport ledger verify
      modelport ledger commit-time
    """


@ledger.command("status")
@_report_options
def status(home: str | None, store: str | None, artifacts: str | None, as_json: bool) -> None:
    """Per model: rows in the ledger table, the oldest, retention, archive partitions.

    \b
    Example:
      modelport ledger status                      # the store in ./.modelport, or MODELPORT_STORE
    """
    from ..store import retention

    with _opened(home, store, artifacts) as (settings, st, _), st.read() as conn:
        out = retention.status(conn, settings.ledger_retention_days)
    if as_json:
        print_json(out)
        return
    rows = [
        {
            **m,
            "retention_days": m["retention_days"] or "keep",
            "oldest_hot": iso(m["oldest_hot"]) or "-",
            "archive_bytes": _size(m["archive_bytes"]),
        }
        for m in out["models"]
    ]
    table(
        rows,
        [
            "model",
            "retention_days",
            "hot_requests",
            "hot_predictions",
            "oldest_hot",
            "archive_partitions",
            "archive_files",
            "archived_predictions",
            "archive_bytes",
        ],
    )
    click.echo(f"ledger table: {_size(out['hot_bytes'])}; archive: {_size(out['archive_bytes'])}")


@ledger.command("archive")
@click.option("--model", help="Only this model.")
@click.option(
    "--retention-days",
    type=float,
    help="The retention of models without their own [default: ledger_retention_days].",
)
@_report_options
def archive_now(
    home: str | None,
    store: str | None,
    artifacts: str | None,
    model: str | None,
    retention_days: float | None,
    as_json: bool,
) -> None:
    """Archive now the rows past their model's retention, then delete them from the table.

    \b
    Example:
      modelport ledger archive --retention-days 30
    """
    from ..store import retention

    with _opened(home, store, artifacts) as (settings, st, blobs):

        def write(fn: Callable[[Any], Any]) -> Any:
            with st.transaction() as conn:
                return fn(conn)

        days = settings.ledger_retention_days if retention_days is None else retention_days
        out = retention.archive_pass(
            st, blobs, write, default_days=days, batch=settings.ledger_archive_batch, model=model
        )
    if as_json:
        print_json(out)
        return
    for name, moved in out["models"].items():
        click.echo(f"{name}: {moved['predictions']} predictions ({moved['requests']} requests)")
    rate = out["predictions_per_second"]
    click.echo(
        f"archived {out['predictions']} predictions in {out['seconds']:.1f} s"
        + (f" ({rate:,.0f}/s)" if rate else "")
    )


@ledger.command("verify")
@_report_options
def verify(home: str | None, store: str | None, artifacts: str | None, as_json: bool) -> None:
    """Recount every archive file against the registry; exit 1 on any difference.

    \b
    Example:
      modelport ledger verify
    """
    from ..store import retention

    with _opened(home, store, artifacts) as (_, st, blobs), st.read() as conn:
        out = retention.verify(conn, blobs)
    if as_json:
        print_json(out)
    else:
        for p in out["problems"]:
            click.echo(f"{p['sha256']}: {p['problem']}")
        click.echo(f"{out['checked']} of {out['files']} archive files agree with the registry")
    if out["problems"]:
        fail(f"{len(out['problems'])} problem(s) in the archive")


@ledger.command("export")
@click.argument("name")
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--since", help="From this time (ISO-8601 or epoch seconds).")
@click.option("--until", help="Up to this time (ISO-8601 or epoch seconds).")
@_store_options
def export(
    home: str | None,
    store: str | None,
    artifacts: str | None,
    name: str,
    output: str,
    since: str | None,
    until: str | None,
) -> None:
    """Write a model's logged requests, archived ones included, as a CSV or Parquet file.

    One row per prediction: prediction_id, time, served_version, the inputs as the consumer
    sent them, and served_prediction. The file is an INPUT for 'modelport score'. --since
    and --until (ISO-8601 or epoch seconds) bound the window.

    \b
    Example:
      modelport ledger export churn logged.parquet
      modelport score churn logged.parquet rescored.parquet --alias candidate
    """
    import orjson
    import pandas as pd

    from ..batch.files import file_format
    from ..ledger import sent_records
    from ..store import retention
    from ..store.archive import Archive
    from ..timefmt import parse_time

    kind = file_format(output, "OUTPUT")
    start, end = parse_time(since, "since"), parse_time(until, "until")
    with _opened(home, store, artifacts) as (_, st, blobs), st.read() as conn:
        rows = retention.logged(conn, Archive(blobs), name, start, end)
    records = []
    for row in rows:
        preds = orjson.loads(row.outputs)["predictions"]
        for i, sent in enumerate(sent_records(row)):
            records.append(
                {
                    "prediction_id": str(uuid.UUID(int=uuid.UUID(row.id).int + i)),
                    "time": iso(row.ts),
                    "served_version": row.version,
                    **sent,
                    "served_prediction": preds[i],
                }
            )
    frame = pd.DataFrame(records)
    if kind == "parquet":
        frame.to_parquet(output, index=False)
    else:
        frame.to_csv(output, index=False)
    click.echo(f"{len(records)} predictions of {name} ({len(rows)} requests) to {output}")


#: The longest a commit-time run may spin through its gaps (commits x the gaps' sum).
MOST_GAP_SECONDS = 60.0


def _gaps(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    """``--gaps`` as seconds (``commit_probe.parse_gaps``), or the reason it is not."""
    from ..store.commit_probe import parse_gaps

    try:
        return parse_gaps(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@ledger.command("commit-time")
@click.option(
    "--gaps",
    default="0,100,400,1000",
    show_default=True,
    callback=_gaps,
    help="Microseconds of busy CPU before each timed commit, comma-separated.",
)
@click.option(
    "--commits",
    type=click.IntRange(1, 10_000),
    default=300,
    show_default=True,
    help="Commits timed per gap.",
)
@_report_options
def commit_time(
    home: str | None,
    store: str | None,
    artifacts: str | None,
    gaps: list[float],
    commits: int,
    as_json: bool,
) -> None:
    """Time a minimal commit on the store's engine, back to back and after gaps of work.

    Every prediction is committed before its answer goes out. Under load one commit serves
    a group; with one request at a time each answer waits for a commit of its own, which
    comes a request's work (a few hundred microseconds) after the one before, and on some
    disks such a commit costs several times one that follows another at once. On SQLite
    the probe commits to a database of its own in the store's folder (removed afterwards),
    with the store's sqlite_synchronous; on PostgreSQL, a transaction that writes one
    logical-decoding message to the server's log (prefix modelport-commit-probe; no table
    is touched), flushed at its commit. On Linux it also says when a SQLite store's folder is
    on ext4 without a journal, which costs many one-at-a-time commits a write more.

    \b
    Example:
      modelport ledger commit-time
      modelport ledger commit-time --gaps 0,300 --commits 1000 --json
    """
    from ..store import commit_probe

    spinning = commits * sum(gaps)
    if spinning > MOST_GAP_SECONDS:
        fail(
            f"--commits {commits} with --gaps summing to {sum(gaps) * 1e6:g} us would spin for "
            f"{spinning:.0f} s; keep it under {MOST_GAP_SECONDS:.0f} s",
            2,
        )
    with _opened(home, store, artifacts) as (settings, st, _):
        synchronous = settings.sqlite_synchronous
        with commit_probe.minimal_commits(st, sqlite_synchronous=synchronous) as commit:
            results = commit_probe.timed(commit, gaps, commits=commits)
        out = {
            "store": st.dialect,
            "where": commit_probe.where(st),
            "sqlite_synchronous": synchronous if st.dialect == "sqlite" else None,
            "ext4": commit_probe.journal(st),
            "gaps": [{"gap_us": round(gap * 1e6), **s} for gap, s in results.items()],
        }
    if as_json:
        print_json(out)
        return
    setting = f", synchronous {synchronous}" if st.dialect == "sqlite" else ""
    click.echo(f"minimal commits on {out['where']}{setting}, {commits} per gap:")
    table(
        [
            {
                "gap_us": g["gap_us"],
                **{k: f"{g[k]:.3f}" for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms")},
            }
            for g in out["gaps"]
        ],
        ["gap_us", "mean_ms", "p50_ms", "p90_ms", "p99_ms"],
    )
    click.echo(
        "One request at a time: each answer waits for one commit that comes a request's work "
        "after the last (read the rows with such a gap). Under load one commit serves a group."
    )
    if out["ext4"] is not None and not out["ext4"]["journal"]:
        click.echo(
            f"The store's folder is on ext4 without a journal ({out['ext4']['device']}): a "
            "flush there also writes the log file's inode whenever its time stamps moved, one "
            "more wait for the disk on many commits. docs/deploy.md: put a SQLite store on a "
            "file system with a journal."
        )


COMMANDS: list[click.Command] = [ledger]
