"""The ``modelport stream`` command: a worker that scores (or learns from) a message stream.

It talks to a server at ``--url`` like the other client commands, so routing, the ledger,
consumers' adapters and keys apply unchanged, and it can run anywhere (see docs/streams.md).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket

import click

from .common import client_options, fail


@click.command()
@click.argument("model")
@click.option(
    "--broker",
    required=True,
    help="redis://HOST:PORT/DB, nats://HOST:PORT or kafka://HOST:PORT (one broker for input, "
    "output and dead letters).",
)
@click.option("--input", "input_name", required=True, help="Stream (Redis), subject (NATS), topic.")
@click.option("--output", help="Where results go on the broker: stream, subject or topic.")
@click.option("--db", "db_url", help="Or insert results into a table of this database (URL).")
@click.option("--table", help="The table for --db (created when missing).")
@click.option(
    "--dead-letter",
    help="Where bad records go with the reason [default: INPUT:dead (Redis), INPUT.dead].",
)
@click.option(
    "--group", default="modelport", show_default=True, help="Consumer group / durable name."
)
@click.option("--consumer", help="This worker's name in the group [default: the host name].")
@click.option("--learn", is_flag=True, help="Send records as observations (with their label).")
@click.option("--id-field", help="A record field carried to the result (not sent to the model).")
@click.option("--unit-field", help="A record field sent as X-Unit-ID (sticky traffic arms).")
@click.option("--model-field", help="A record field naming the model (overrides MODEL).")
@click.option("--batch", default=100, show_default=True, help="Records read per batch.")
@click.option("--concurrency", default=16, show_default=True, help="Requests in flight.")
@click.option(
    "--claim-idle",
    default=60.0,
    show_default=True,
    help="Redis: seconds after which another consumer's unacknowledged records are taken over.",
)
@click.option(
    "--ack-wait",
    default=30.0,
    show_default=True,
    help="NATS: seconds before an unacknowledged record is delivered again.",
)
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics on 127.0.0.1:PORT.")
@client_options
def stream(
    model: str,
    broker: str,
    input_name: str,
    output: str | None,
    db_url: str | None,
    table: str | None,
    dead_letter: str | None,
    group: str,
    consumer: str | None,
    learn: bool,
    id_field: str | None,
    unit_field: str | None,
    model_field: str | None,
    batch: int,
    concurrency: int,
    claim_idle: float,
    ack_wait: float,
    metrics_port: int | None,
    url: str,
    key: str | None,
) -> None:
    """Score records from a stream (or learn from them) until stopped (Ctrl-C, SIGTERM).

    Each record is a JSON object: the model's input fields (and the label, with --learn).
    Results go to --output or a --db table, one per record even when records are delivered
    again after a crash; bad records go to the dead-letter stream with the reason.

    \b
    Example:
      modelport stream churn --broker redis://127.0.0.1:6379/0 --input events \\
          --output scores --id-field customer --metrics-port 9108
      modelport stream churn --broker nats://127.0.0.1:4222 --input events.new \\
          --db postgresql://127.0.0.1/app --table churn_scores
    """
    from ..errors import StreamError
    from ..streams.worker import StreamJob, run_stream

    if (db_url is None) != (table is None):
        fail("give --db and --table together", 2)
    if db_url is not None and output is not None:
        fail("give --output or --db/--table, not both", 2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per record
    job = StreamJob(
        model=model,
        learn=learn,
        id_field=id_field,
        unit_field=unit_field,
        model_field=model_field,
        batch=max(1, batch),
        concurrency=max(1, concurrency),
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_stream(
            broker_url=broker,
            input_name=input_name,
            group=group,
            consumer=consumer or socket.gethostname(),
            job=job,
            server_url=url,
            key=key,
            output=output,
            db_url=db_url,
            table=table,
            dead_letter=dead_letter,
            metrics_port=metrics_port,
            claim_idle_seconds=claim_idle,
            ack_wait_seconds=ack_wait,
            stop=stop,
            on_ready=lambda: click.echo(f"streaming {input_name} -> {model}", err=True),
        )

    try:
        asyncio.run(run())
    except StreamError as exc:
        fail(str(exc))


#: The commands of this module, registered on the group by modelport.cli.main.
COMMANDS: list[click.Command] = [stream]
