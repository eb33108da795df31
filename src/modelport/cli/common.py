"""What every ``modelport`` command shares: one-line errors, the settings and client options,
the client, and printing as JSON or a table. Command modules import from here; the group in
:mod:`modelport.cli.main` registers their commands explicitly."""

from __future__ import annotations

import json
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import InvalidInput, InvalidRequest, ModelportError
from ..settings import Settings, load_settings

F = typing.TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> typing.NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def one_line(exc: ModelportError) -> str:
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
            fail(one_line(exc), 2 if isinstance(exc, InvalidInput | InvalidRequest) else 1)
        except click.exceptions.NoArgsIsHelpError as exc:  # a group alone: its help, as is
            click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message(), err=True)
            sys.exit(2)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            fail(" ".join(exc.format_message().split()) + where, 2)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (OSError, ValueError) as exc:
            fail(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug of ours: still one line, never a traceback
            fail(f"unexpected {type(exc).__name__}: {exc}")


def settings_options(fn: F, only: tuple[str, ...] | None = None) -> F:
    """Add one flag per setting (or per setting in ``only``) and --config to a command."""
    for name, info in reversed(list(Settings.model_fields.items())):
        if only is not None and name not in only:
            continue
        flag = "--" + name.replace("_", "-")
        help_text = f"{info.description} [env MODELPORT_{name.upper()}]"
        annotation = info.annotation
        if typing.get_origin(annotation) is typing.Literal:
            choice = click.Choice([str(v) for v in typing.get_args(annotation)])
            fn = click.option(flag, name, type=choice, default=None, help=help_text)(fn)
        elif annotation is bool and info.default is True:  # on unless turned off
            off = "--no-" + flag[2:]
            fn = click.option(f"{flag}/{off}", name, default=None, help=help_text)(fn)
        elif annotation is bool:
            fn = click.option(flag, name, is_flag=True, default=None, help=help_text)(fn)
        elif annotation is int or annotation == int | None:
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


#: The settings quickstart takes as flags; the others come from MODELPORT_* or --config.
QUICKSTART_SETTINGS = ("host", "port", "home", "store", "no_auth", "force_no_auth", "log_level")


def quickstart_options(fn: F) -> F:
    return settings_options(fn, QUICKSTART_SETTINGS)


def load(config_file: str | None, flags: dict[str, Any]) -> Settings:
    return load_settings(flags, config_file)


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


def client_for(url: str, key: str | None) -> Any:
    from ..client import Client

    return Client(url, key)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    text = [[str(r.get(c, "") if r.get(c) is not None else "") for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for t in text:
        click.echo("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())


def print_predictions(out: dict[str, Any], fmt: str) -> None:
    """A predict answer as one row per record (``table`` or ``csv``), or as its JSON."""
    if fmt == "json":
        print_json(out)
        return
    probabilities = out.get("probabilities") or []
    classes = list(probabilities[0]) if probabilities else []
    ids = out["prediction_ids"]
    versions = out.get("versions") or [out.get("version")] * len(ids)  # segmented: per row
    rows = []
    for i, (pid, pred) in enumerate(zip(ids, out["predictions"], strict=True)):
        row: dict[str, Any] = {"prediction_id": pid, "prediction": pred}
        for c in classes:
            row[f"proba_{c}"] = round(probabilities[i][c], 4)
        row["version"] = versions[i]
        rows.append(row)
    columns = ["prediction_id", "prediction", *(f"proba_{c}" for c in classes), "version"]
    if fmt == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    table(rows, columns)


def key_values(pairs: tuple[str, ...], what: str, number: bool) -> dict[str, Any]:
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


def document(text: str, what: str) -> Any:
    """A JSON document given inline or as @FILE / a file path."""
    path = Path(text[1:] if text.startswith("@") else text)
    try:
        if text.startswith("@") or (not text.lstrip().startswith(("{", "[")) and path.is_file()):
            return json.loads(path.read_text())
        return json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise click.BadParameter(
            f"not JSON or a readable JSON file: {exc}", param_hint=what
        ) from None


def set_or_remove(text: str | None, remove: bool) -> Any:
    """The document of a ``--set``/``--remove`` pair: exactly one is given; None removes."""
    if bool(text) == remove:
        raise click.UsageError("give --set or --remove")
    return None if remove else document(text or "", "--set")
