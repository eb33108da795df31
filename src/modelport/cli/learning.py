"""The ``modelport`` commands of the learning loop: algorithms, create, ingest, retrain,
replay, jobs and gates. They talk to a server like the other client commands."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from .common import (
    client_for,
    client_options,
    document,
    key_values,
    print_json,
    set_or_remove,
    table,
)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_options
def algorithms(as_json: bool, url: str, key: str | None) -> None:
    """List the built-in algorithms a model can be made from.

    \b
    Example:
      modelport algorithms --json
    """
    rows = client_for(url, key).algorithms()
    if as_json:
        print_json(rows)
        return
    for r in rows:
        r["params"] = ", ".join(p["name"] if isinstance(p, dict) else str(p) for p in r["params"])
    table(rows, ["name", "task", "online", "params"])


@click.command()
@click.argument("name")
@click.option(
    "--algorithm", required=True, help="A built-in algorithm (see: modelport algorithms)."
)
@click.option("--schema", "schema", required=True, help="The input schema: JSON, or @FILE.")
@click.option("--target", required=True, help="The label column of observations.")
@click.option("--param", "params", multiple=True, help="NAME=VALUE (repeatable).")
@click.option("--classes", help="Class labels, comma-separated (online classifiers need them).")
@click.option("--online", "online", help='Online settings: JSON, e.g. {"snapshot_every": 50}.')
@click.option(
    "--segment-by",
    help="An input field: one instance of the model per value of it (see docs/segments.md).",
)
@client_options
def create(
    name: str,
    algorithm: str,
    schema: str,
    target: str,
    params: tuple[str, ...],
    classes: str | None,
    online: str | None,
    segment_by: str | None,
    url: str,
    key: str | None,
) -> None:
    """Create a model from a built-in algorithm: no code, it learns from observations.

    \b
    Example:
      modelport create cultivar --algorithm online_logistic_regression \\
          --schema @wine-schema.json --target cultivar --classes 0,1,2 --param alpha=0.0001
    """
    out = client_for(url, key).create_from_algorithm(
        name,
        algorithm,
        schema=document(schema, "--schema"),
        target=target,
        params=key_values(params, "--param", False) or None,
        classes=[c.strip() for c in classes.split(",")] if classes else None,
        online=document(online, "--online") if online else None,
        segment_by=segment_by,
    )
    click.echo(f"created {name} ({out['spec']['algorithm']}, {out['spec']['task']})")


@click.command()
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--chunk-rows", type=int, default=5000, show_default=True, help="Rows per request.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@client_options
def ingest(name: str, path: str, chunk_rows: int, quiet: bool, url: str, key: str | None) -> None:
    """Send a CSV or Parquet file of labelled rows (the fields and the target) as observations.

    Bad rows are reported with their row number and reason; the good ones are kept.

    \b
    Example:
      modelport ingest wine wine.csv
    """
    out = client_for(url, key).ingest(name, path, chunk_rows=chunk_rows, progress=not quiet)
    click.echo(f"{name}: {out['accepted']} of {out['rows']} rows accepted")
    for r in out["rejected"][:20]:
        click.echo(f"row {r['index']}: {r.get('field')}: {r['reason']}", err=True)
    if len(out["rejected"]) > 20:
        click.echo(f"... and {len(out['rejected']) - 20} more rejected rows", err=True)
    if out["rows"] and not out["accepted"]:
        raise click.ClickException(f"no row of {path} was accepted")


def _wait_and_show(client: Any, job: dict[str, Any], wait: bool) -> None:
    if not wait:
        click.echo(f"job {job['id']} queued ({job['type']}); see: modelport job {job['id']}")
        return
    job = follow(client, job)
    print_json(job["result"] if job["status"] == "succeeded" else job)
    if job["status"] != "succeeded":
        raise click.ClickException(f"job {job['id']} {job['status']}: {job.get('error')}")


def follow(client: Any, job: dict[str, Any], interval: float = 0.3) -> dict[str, Any]:
    """Wait for a job to end, showing its progress as a bar and its log lines as they come
    (on stderr); the ended job. Ctrl-C stops the waiting, not the job."""
    from tqdm import tqdm

    printed: set[str] = set()
    bar = tqdm(
        total=100,
        desc=f"job {job['id']} ({job['type']})",
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}",
    )
    try:
        while True:
            for line in (job.get("logs") or "").splitlines():
                if line not in printed:
                    printed.add(line)
                    bar.write(line, file=sys.stderr)
            done = job["status"] == "succeeded"
            bar.n = 100 if done else round(100 * float(job.get("progress") or 0.0))
            bar.refresh()
            if job["status"] not in ("queued", "running"):
                return dict(job)
            time.sleep(interval)
            job = client.job(job["id"])
    except KeyboardInterrupt:
        raise click.ClickException(
            f"stopped waiting; job {job['id']} goes on (see: modelport job {job['id']})"
        ) from None
    finally:
        bar.close()


@click.command()
@click.argument("name")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed (same seed, same model)."
)
@click.option("--holdout", type=float, default=0.2, show_default=True, help="Holdout share.")
@click.option("--dataset", help="Train on this dataset snapshot (default: a new snapshot).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the result.")
@client_options
def retrain(
    name: str,
    seed: int,
    holdout: float,
    dataset: str | None,
    wait: bool,
    url: str,
    key: str | None,
) -> None:
    """Retrain a model on its observations in a worker process; the result is the candidate.

    \b
    Example:
      modelport retrain wine --seed 7
    """
    client = client_for(url, key)
    params: dict[str, Any] = {"seed": seed, "holdout": holdout}
    if dataset:
        params["dataset"] = dataset
    _wait_and_show(client, client.retrain(name, **params), wait)


@click.command()
@click.argument("name")
@click.option("--version", "version", type=int, required=True, help="The version to replay.")
@click.option("--since", help="From this time (ISO-8601 or epoch seconds).")
@click.option("--until", help="Until this time.")
@click.option("--consumer", help="Only this consumer's traffic.")
@click.option("--limit", type=int, default=10000, show_default=True, help="Most requests.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the report.")
@client_options
def replay(
    name: str,
    version: int,
    since: str | None,
    until: str | None,
    consumer: str | None,
    limit: int,
    wait: bool,
    url: str,
    key: str | None,
) -> None:
    """Re-score logged traffic through a version: agreement, metric on feedback, rejects.

    \b
    Example:
      modelport replay wine --version 2 --since 2026-11-24T00:00:00Z
    """
    client = client_for(url, key)
    params = {k: v for k, v in (("since", since), ("until", until), ("consumer", consumer)) if v}
    _wait_and_show(client, client.replay(name, version, limit=limit, **params), wait)


@click.command()
@click.argument("job_id", type=int)
@click.option("--cancel", is_flag=True, help="Cancel it.")
@client_options
def job(job_id: int, cancel: bool, url: str, key: str | None) -> None:
    """Show a job (status, progress, log, result), or cancel it.

    \b
    Example:
      modelport job 1
    """
    client = client_for(url, key)
    print_json(client.cancel_job(job_id) if cancel else client.job(job_id))


@click.command()
@click.argument("name")
@click.option("--set", "gate", help="The gate: JSON, or @FILE.")
@click.option("--remove", is_flag=True, help="Remove the gate.")
@client_options
def gate(name: str, gate: str | None, remove: bool, url: str, key: str | None) -> None:
    """Set or remove the promotion gate of a model's retrained candidates.

    \b
    Example:
      modelport gate wine --set '{"metric": "accuracy", "min_improvement": 0.01}'
    """
    print_json(client_for(url, key).set_gate(name, set_or_remove(gate, remove)))


@click.command()
@click.argument("name")
@click.option("--set", "triggers", help="The triggers: JSON, or @FILE.")
@click.option("--remove", is_flag=True, help="Remove the triggers.")
@client_options
def triggers(name: str, triggers: str | None, remove: bool, url: str, key: str | None) -> None:
    """Set or remove when a model retrains by itself.

    \b
    Example:
      modelport triggers wine --set '{"after_observations": 1000, "every_seconds": 86400}'
    """
    print_json(client_for(url, key).set_triggers(name, set_or_remove(triggers, remove)))


#: The commands of this module, registered on the group by modelport.cli.main.
COMMANDS: list[click.Command] = [algorithms, create, ingest, retrain, replay, job, gate, triggers]
