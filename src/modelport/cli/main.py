"""The ``modelport`` command line.

Server commands (``serve``, ``quickstart``) take every setting as a flag, generated from
:class:`~modelport.settings.Settings`. Client commands talk to a server at ``--url`` with
``--key`` (or ``MODELPORT_URL`` / ``MODELPORT_KEY``). Errors print one line and exit non-zero.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..settings import Settings
from . import batch, keys, learning, ledger, monitoring, releases, streams
from .common import (
    Group,
    client_for,
    client_options,
    document,
    key_values,
    load,
    print_json,
    print_predictions,
    quickstart_options,
    settings_options,
    table,
)
from .keys import first_key_hint


@click.group(
    cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="modelport")
def main() -> None:
    """modelport: serve, version, log and learn.

    \b
    Start here:
      modelport quickstart              # a server with a demo model on 127.0.0.1:8000
      export MODELPORT_URL=http://127.0.0.1:8000 MODELPORT_KEY=$(cat .modelport/quickstart-admin-key)
      modelport models
      modelport predict iris --json '{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'
    """


# -- settings as flags --------------------------------------------------------------------------


@main.command()
@settings_options
def serve(config_file: str | None, **flags: Any) -> None:
    """Run the server.

    \b
    Example:
      modelport serve --port 8080 --store postgresql://app@db:5432/modelport

    On a store with no admin key it prints the command that makes one.
    """
    from ..api.server import serve as run

    settings = load(config_file, flags)
    hint = first_key_hint(settings)  # opens the store: one that cannot be opened fails here

    def ready(bound: Settings) -> None:
        click.echo(f"modelport listening on http://{_host(bound)}:{bound.port}")
        if bound.grpc_port is not None:
            click.echo(f"gRPC (Open Inference Protocol) on {_host(bound)}:{bound.grpc_port}")
        if hint is not None:
            click.echo(hint)

    run(settings, on_ready=ready)


@main.command()
@quickstart_options
def quickstart(config_file: str | None, **flags: Any) -> None:
    """Start a server with a demo iris classifier aliased production.

    Trains the demo on the iris data scikit-learn ships (no download), prints an admin key and
    example calls, and serves until Ctrl-C. Other settings come from MODELPORT_* variables or
    --config (see modelport serve --help).

    \b
    Example:
      modelport quickstart --port 8080
    """
    from .quickstart import run_quickstart

    run_quickstart(load(config_file, flags))


def _host(settings: Settings) -> str:
    return f"[{settings.host}]" if ":" in settings.host else settings.host


# -- client commands -----------------------------------------------------------------------------


@main.command()
@click.argument("name")
@click.argument("path", type=click.Path(exists=True))
@click.option("--alias", help="Point this alias at the new version (e.g. production).")
@click.option(
    "--schema",
    "schema_text",
    help="Input schema: JSON, or @FILE (a FILE path works too); as create --schema.",
)
@click.option(
    "--train-data",
    type=click.Path(exists=True, dir_okay=False),
    help="Training data (CSV or Parquet): schema, statistics and fingerprint.",
)
@click.option("--target", help="The label column of --train-data (left out of the schema).")
@click.option("--commit", help="Code commit the model was trained from.")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="NAME=VALUE",
    help="An evaluation metric (repeatable).",
)
@click.option(
    "--param", "params", multiple=True, metavar="NAME=VALUE", help="A hyperparameter (repeatable)."
)
@click.option(
    "--task",
    type=click.Choice(["classification", "regression", "other"]),
    help="Task, when the model is new.",
)
@click.option("--description", help="Description, when the model is new.")
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse the push if any consumer's recent payloads would fail the new schema.",
)
@click.option(
    "--segment",
    help="The segment of a segmented model this version answers for (--alias sets ALIAS@SEGMENT).",
)
@click.option(
    "--deterministic/--nondeterministic",
    default=None,
    help="Whether the prediction cache may keep its answers (default: scikit-learn yes, "
    "custom code no).",
)
@client_options
def push(
    name: str,
    path: str,
    alias: str | None,
    schema_text: str | None,
    train_data: str | None,
    target: str | None,
    commit: str | None,
    metrics: tuple[str, ...],
    params: tuple[str, ...],
    task: str | None,
    description: str | None,
    strict: bool,
    segment: str | None,
    deterministic: bool | None,
    url: str,
    key: str | None,
) -> None:
    """Push a model file (skops, joblib/pickle, or an MLflow model folder) as a new version.

    The compatibility report says which consumers' recent payloads the new schema would
    reject (and why); --strict refuses the push when any would.

    \b
    Example:
      modelport push churn model.skops --train-data train.csv --target churned \\
          --commit 4f2c1e9 --metric auc=0.91 --alias production
    """
    out = client_for(url, key).push(
        name,
        Path(path),
        alias=alias,
        schema=document(schema_text, "--schema") if schema_text else None,
        train_data=train_data,
        target=target,
        commit=commit,
        metrics=key_values(metrics, "--metric", True) or None,
        params=key_values(params, "--param", False) or None,
        task=task,
        description=description,
        strict=strict,
        segment=segment,
        deterministic=deterministic,
    )
    aliases = f" (aliases: {', '.join(out['aliases'])})" if out["aliases"] else ""
    click.echo(f"pushed {name} version {out['version']}{aliases} sha256 {out['sha256'][:12]}")
    for c in out.get("compatibility", {}).get("consumers", []):
        if c["rows_rejected"]:
            why = "; ".join(f"{r['field']}: {r['reason']}" for r in c.get("reasons", []))
            click.echo(
                f"warning: consumer {c['consumer']}: {c['rows_rejected']} of {c['rows_checked']} "
                f"recent rows would be rejected ({why})",
                err=True,
            )


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_options
def models(as_json: bool, url: str, key: str | None) -> None:
    """List models.

    \b
    Example:
      modelport models --url http://127.0.0.1:8000
    """
    rows = client_for(url, key).models()
    if as_json:
        print_json(rows)
        return
    for r in rows:
        r["aliases"] = ", ".join(f"{a}={v}" for a, v in r["aliases"].items())
    table(rows, ["name", "task", "latest_version", "aliases", "created"])


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with schema and lineage).")
@client_options
def versions(name: str, as_json: bool, url: str, key: str | None) -> None:
    """List the versions of a model.

    \b
    Example:
      modelport versions iris
    """
    rows = client_for(url, key).versions(name)
    if as_json:
        print_json(rows)
        return
    for r in rows:
        r["aliases"] = ", ".join(r["aliases"])
        r["sha256"] = r["sha256"][:12]
        r["by"] = r["lineage"].get("created_by")
        r["commit"] = (r["lineage"].get("code_commit") or "")[:12]
    table(rows, ["version", "flavor", "aliases", "created", "by", "commit", "sha256"])


@main.command()
@click.argument("name")
@click.argument("version", type=int)
@click.option("--alias", default="production", show_default=True, help="Alias to move.")
@click.option("--reason", default="", help="Why (kept in the audit trail).")
@client_options
def promote(name: str, version: int, alias: str, reason: str, url: str, key: str | None) -> None:
    """Point an alias at a version (audited).

    \b
    Example:
      modelport promote churn 3 --alias production --reason "better AUC on replay"
    """
    out = client_for(url, key).promote(name, version, alias=alias, reason=reason)
    click.echo(f"{name}: {alias} -> version {out['version']} (was {out['previous']})")


@main.command()
@click.argument("name")
@click.option("--alias", default="production", show_default=True, help="Alias to move back.")
@click.option("--reason", default="", help="Why (kept in the audit trail).")
@client_options
def rollback(name: str, alias: str, reason: str, url: str, key: str | None) -> None:
    """Move an alias back to its previous target (audited).

    \b
    Example:
      modelport rollback churn --reason "accuracy dropped"
    """
    out = client_for(url, key).rollback(name, alias=alias, reason=reason)
    click.echo(f"{name}: {alias} -> version {out['version']} (was {out['previous']})")


@main.command()
@click.argument("name")
@click.option("--alias", help="Only this alias.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_options
def history(name: str, alias: str | None, as_json: bool, url: str, key: str | None) -> None:
    """Show the audit trail of a model's alias moves, newest first.

    \b
    Example:
      modelport history churn --alias production
    """
    rows = client_for(url, key).alias_history(name, alias)
    if as_json:
        print_json(rows)
        return
    table(rows, ["at", "alias", "kind", "from_version", "to_version", "actor", "reason"])


@main.command()
@click.argument("name")
@click.option("--json", "json_text", help="Records as JSON: an object or a list of objects.")
@click.option(
    "--csv",
    "csv_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Records from a CSV file.",
)
@click.option("--version", "version", type=int, help="Score with this version.")
@click.option("--alias", help="Score with the version behind this alias.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    help="Output: a table (the default on a terminal), CSV, or the server's JSON answer "
    "(the default when the output is piped or redirected).",
)
@client_options
def predict(
    name: str,
    json_text: str | None,
    csv_file: str | None,
    version: int | None,
    alias: str | None,
    fmt: str | None,
    url: str,
    key: str | None,
) -> None:
    """Score records; prints one line per record: its prediction id, the prediction and the
    class probabilities.

    \b
    Examples:
      modelport predict iris --json '{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'
      modelport predict churn --csv batch.csv --version 1 --format csv
    """
    if (json_text is None) == (csv_file is None):
        raise click.UsageError("give exactly one of --json or --csv")
    inputs: Any
    if json_text is not None:
        try:
            parsed = json.loads(json_text)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--json") from None
        inputs = [parsed] if isinstance(parsed, dict) else parsed
        if not isinstance(inputs, list):
            raise click.BadParameter("expected an object or a list of objects", param_hint="--json")
    else:
        import pandas as pd

        inputs = pd.read_csv(str(csv_file))
    out = client_for(url, key).predict(name, inputs, version=version, alias=alias)
    print_predictions(out, fmt or ("table" if sys.stdout.isatty() else "json"))


@main.command()
@click.argument("prediction_id")
@click.option("--label", help="The true label (JSON value; plain text is a string).")
@click.option("--reward", type=float, help="A numeric reward.")
@client_options
def feedback(
    prediction_id: str, label: str | None, reward: float | None, url: str, key: str | None
) -> None:
    """Send a label or reward for a prediction.

    \b
    Example:
      modelport feedback 01932c1e-... --label setosa
    """
    if label is None and reward is None:
        raise click.UsageError("give --label, --reward, or both")
    value: Any = None
    if label is not None:
        try:
            value = json.loads(label)
        except json.JSONDecodeError:
            value = label
    print_json(client_for(url, key).feedback(prediction_id, label=value, reward=reward))


@main.command()
@click.argument("prediction_id")
@client_options
def prediction(prediction_id: str, url: str, key: str | None) -> None:
    """Show one logged prediction with its feedback.

    \b
    Example:
      modelport prediction 01932c1e-...
    """
    print_json(client_for(url, key).prediction(prediction_id))


# The key, release, learning, monitoring, batch, stream and ledger commands live in modules of
# their own.
for _module in (keys, releases, learning, monitoring, batch, streams, ledger):
    for _command in _module.COMMANDS:
        main.add_command(_command)
