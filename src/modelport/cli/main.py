"""The ``modelport`` command line.

Server commands (``serve``, ``quickstart``) take every setting as a flag, generated from
:class:`~modelport.settings.Settings`. Client commands talk to a server at ``--url`` with
``--key`` (or ``MODELPORT_URL`` / ``MODELPORT_KEY``). Errors print one line and exit non-zero.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..errors import InvalidInput, InvalidRequest, ModelportError
from ..settings import Settings, load_settings

F = typing.TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = 1) -> typing.NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _one_line(exc: ModelportError) -> str:
    text = exc.message
    extra = [
        f"row {d['row']} {d.get('field')}: {d['reason']}"
        if d.get("row") is not None
        else f"{d.get('field')}: {d['reason']}"
        for d in exc.details[1:6]
    ]
    if extra:
        text += " | " + "; ".join(extra)
    return " ".join(text.split())


class Group(click.Group):
    """A click group that turns every error into one line and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModelportError as exc:
            _fail(_one_line(exc), 2 if isinstance(exc, InvalidInput | InvalidRequest) else 1)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            _fail(" ".join(exc.format_message().split()) + where, 2)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (OSError, ValueError) as exc:
            _fail(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug of ours: still one line, never a traceback
            _fail(f"unexpected {type(exc).__name__}: {exc}")


@click.group(
    cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="modelport")
def main() -> None:
    """modelport: serve, version, log and learn.

    \b
    Start here:
      modelport quickstart              # a server with a demo model on 127.0.0.1:8000
      modelport push churn model.skops --train-data train.csv --alias production
      modelport predict churn --json '[{"tenure": 3, "plan": "pro"}]'
    """


# -- settings as flags --------------------------------------------------------------------------


def settings_options(fn: F) -> F:
    """Add one flag per setting (and --config) to a command."""
    for name, info in reversed(list(Settings.model_fields.items())):
        flag = "--" + name.replace("_", "-")
        help_text = f"{info.description} [env MODELPORT_{name.upper()}]"
        annotation = info.annotation
        if typing.get_origin(annotation) is typing.Literal:
            choice = click.Choice([str(v) for v in typing.get_args(annotation)])
            fn = click.option(flag, name, type=choice, default=None, help=help_text)(fn)
        elif annotation is bool:
            fn = click.option(flag, name, is_flag=True, default=None, help=help_text)(fn)
        elif annotation is int:
            fn = click.option(flag, name, type=int, default=None, help=help_text)(fn)
        elif annotation is float:
            fn = click.option(flag, name, type=float, default=None, help=help_text)(fn)
        else:
            fn = click.option(flag, name, type=str, default=None, help=help_text)(fn)
    fn = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        help="TOML config file [env MODELPORT_CONFIG]",
    )(fn)
    return fn


def _settings(config_file: str | None, flags: dict[str, Any]) -> Settings:
    return load_settings(flags, config_file)


@main.command()
@settings_options
def serve(config_file: str | None, **flags: Any) -> None:
    """Run the server.

    \b
    Example:
      modelport serve --port 8080 --store postgresql://app@db:5432/modelport
    """
    from ..api.server import serve as run

    settings = _settings(config_file, flags)
    run(
        settings,
        on_ready=lambda: click.echo(
            f"modelport listening on http://{_host(settings)}:{settings.port}"
        ),
    )


@main.command()
@settings_options
def quickstart(config_file: str | None, **flags: Any) -> None:
    """Start a server with a demo iris classifier aliased production.

    Trains the demo on the iris data scikit-learn ships (no download), prints an admin key and
    example calls, and serves until Ctrl-C.

    \b
    Example:
      modelport quickstart --port 8080
    """
    from .quickstart import run_quickstart

    run_quickstart(_settings(config_file, flags))


def _host(settings: Settings) -> str:
    return f"[{settings.host}]" if ":" in settings.host else settings.host


# -- client commands -----------------------------------------------------------------------------


def client_options(fn: F) -> F:
    fn = click.option("--key", envvar="MODELPORT_KEY", help="API key [env MODELPORT_KEY]")(fn)
    fn = click.option(
        "--url",
        envvar="MODELPORT_URL",
        default="http://127.0.0.1:8000",
        show_default=True,
        help="Server address [env MODELPORT_URL]",
    )(fn)
    return fn


def _client(url: str, key: str | None) -> Any:
    from ..client import Client

    return Client(url, key)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    text = [[str(r.get(c, "") if r.get(c) is not None else "") for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for t in text:
        click.echo("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())


def _key_values(pairs: tuple[str, ...], what: str, number: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r}: expected NAME=VALUE", param_hint=what)
        k, v = pair.split("=", 1)
        if number:
            try:
                out[k] = float(v)
            except ValueError:
                raise click.BadParameter(
                    f"{pair!r}: {v!r} is not a number", param_hint=what
                ) from None
        else:
            try:
                out[k] = json.loads(v)
            except json.JSONDecodeError:
                out[k] = v
    return out


@main.command()
@click.argument("name")
@click.argument("path", type=click.Path(exists=True))
@click.option("--alias", help="Point this alias at the new version (e.g. production).")
@click.option(
    "--schema",
    "schema_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Input schema, a JSON file.",
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
    schema_file: str | None,
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
          --commit $(git rev-parse HEAD) --metric auc=0.91 --alias production
    """
    out = _client(url, key).push(
        name,
        Path(path),
        alias=alias,
        schema=schema_file,
        train_data=train_data,
        target=target,
        commit=commit,
        metrics=_key_values(metrics, "--metric", True) or None,
        params=_key_values(params, "--param", False) or None,
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
    rows = _client(url, key).models()
    if as_json:
        _print_json(rows)
        return
    for r in rows:
        r["aliases"] = ", ".join(f"{a}={v}" for a, v in r["aliases"].items())
    _table(rows, ["name", "task", "latest_version", "aliases", "created"])


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
    rows = _client(url, key).versions(name)
    if as_json:
        _print_json(rows)
        return
    for r in rows:
        r["aliases"] = ", ".join(r["aliases"])
        r["sha256"] = r["sha256"][:12]
        r["by"] = r["lineage"].get("created_by")
        r["commit"] = (r["lineage"].get("code_commit") or "")[:12]
    _table(rows, ["version", "flavor", "aliases", "created", "by", "commit", "sha256"])


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
    out = _client(url, key).promote(name, version, alias=alias, reason=reason)
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
    out = _client(url, key).rollback(name, alias=alias, reason=reason)
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
    rows = _client(url, key).alias_history(name, alias)
    if as_json:
        _print_json(rows)
        return
    _table(rows, ["at", "alias", "kind", "from_version", "to_version", "actor", "reason"])


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
@client_options
def predict(
    name: str,
    json_text: str | None,
    csv_file: str | None,
    version: int | None,
    alias: str | None,
    url: str,
    key: str | None,
) -> None:
    """Score records; prints predictions with their ids.

    \b
    Examples:
      modelport predict iris --json '{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'
      modelport predict iris --csv batch.csv --version 2
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
    _print_json(_client(url, key).predict(name, inputs, version=version, alias=alias))


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
    _print_json(_client(url, key).feedback(prediction_id, label=value, reward=reward))


@main.command()
@click.argument("prediction_id")
@client_options
def prediction(prediction_id: str, url: str, key: str | None) -> None:
    """Show one logged prediction with its feedback.

    \b
    Example:
      modelport prediction 01932c1e-...
    """
    _print_json(_client(url, key).prediction(prediction_id))


# -- keys ------------------------------------------------------------------------------------------


@main.group(cls=Group)
def keys() -> None:
    """Create, list and revoke API keys.

    Against the local store by default (``--home``/``--store``, or MODELPORT_HOME/
    MODELPORT_STORE); against a server when ``--url`` (or MODELPORT_URL) is given, with an
    admin ``--key``.

    \b
    Example:
      modelport keys create --name checkout --scope predict --scope feedback
    """


def key_target_options(fn: F) -> F:
    fn = click.option(
        "--key", envvar="MODELPORT_KEY", help="Admin key, with --url [env MODELPORT_KEY]"
    )(fn)
    fn = click.option(
        "--url",
        help="Manage the keys of this server instead of the local store [env MODELPORT_URL]",
    )(fn)
    fn = click.option("--store", help="Store URL [env MODELPORT_STORE]")(fn)
    fn = click.option("--home", help="Home folder of the local store [env MODELPORT_HOME]")(fn)
    return fn


def _keys_backend(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a keys command against a server (``--url``) or the local store."""

    @functools.wraps(fn)
    def wrapper(
        home: str | None, store: str | None, url: str | None, key: str | None, **kwargs: Any
    ) -> Any:
        url = url or (None if (home or store) else os.environ.get("MODELPORT_URL"))
        if url:
            return fn(remote=_client(url, key), local=None, **kwargs)
        from ..store import Store

        settings = load_settings({"home": home, "store": store})
        st = Store(settings.store_url, sqlite_synchronous=settings.sqlite_synchronous)
        try:
            return fn(remote=None, local=st, **kwargs)
        finally:
            st.close()

    return wrapper


@keys.command("create")
@click.option("--name", required=True, help="The consumer (app) the key identifies.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(["admin", "push", "predict", "feedback", "read"]),
    help="A scope (repeatable).",
)
@key_target_options
@_keys_backend
def keys_create(remote: Any, local: Any, name: str, scopes: tuple[str, ...]) -> None:
    """Create a key; prints only the key on stdout.

    \b
    Example:
      export MODELPORT_KEY=$(modelport keys create --name checkout --scope predict --scope feedback)
    """
    from ..registry import keys as keymod

    if remote is not None:
        secret = remote.create_key(name, scopes)["key"]
    else:
        with local.transaction() as conn:
            secret, _ = keymod.create_key(conn, name, scopes)
    click.echo(secret)


@keys.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@key_target_options
@_keys_backend
def keys_list(remote: Any, local: Any, include_revoked: bool, as_json: bool) -> None:
    """List keys (never the secrets).

    \b
    Example:
      modelport keys list --all
    """
    from ..registry import keys as keymod
    from ..timefmt import iso

    if remote is not None:
        rows = remote.list_keys()
    else:
        with local.read() as conn:
            rows = keymod.list_keys(conn, include_revoked=include_revoked)
    if as_json:
        _print_json(rows)
        return
    for r in rows:
        r["scopes"] = ",".join(r["scopes"])
        r["created"] = iso(r["created_at"])
        r["revoked"] = iso(r["revoked_at"]) or ""
    _table(rows, ["id", "prefix", "consumer", "scopes", "created", "revoked"])


@keys.command("revoke")
@click.argument("key_id", type=int)
@key_target_options
@_keys_backend
def keys_revoke(remote: Any, local: Any, key_id: int) -> None:
    """Revoke a key by its id (see keys list).

    \b
    Example:
      modelport keys revoke 3
    """
    from ..registry import keys as keymod

    if remote is not None:
        out = remote.revoke_key(key_id)
    else:
        with local.transaction() as conn:
            out = keymod.revoke_key(conn, key_id)
    click.echo(f"revoked key {out['id']} of {out['consumer']}")


# The release and learning-loop commands live in modules of their own.
from . import batch, learning, monitoring, releases, streams  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    # Run as ``python -m modelport.cli``: start the imported module's group, on which
    # cli_releases registered its commands (this __main__ copy has only its own).
    from modelport.cli.main import main as registered

    registered()
