"""The ``modelport`` commands for releases: pins, adapters, traffic policies, events and
experiment reports. They talk to a server like the other client commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .main import _client, _print_json, _table, client_options, main


def _document(text: str, what: str) -> Any:
    """A JSON document given inline or as @FILE / a file path."""
    path = Path(text[1:] if text.startswith("@") else text)
    try:
        if text.startswith("@") or (path.suffix == ".json" and path.exists()):
            return json.loads(path.read_text())
        return json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise click.BadParameter(
            f"not JSON or a readable JSON file: {exc}", param_hint=what
        ) from None


def _set_or_remove(text: str | None, remove: bool) -> Any:
    """The document of a ``--set``/``--remove`` pair: exactly one is given; None removes."""
    if bool(text) == remove:
        raise click.UsageError("give --set or --remove")
    return None if remove else _document(text or "", "--set")


@main.command()
@click.argument("name")
@click.argument("consumer")
@click.option("--version", "version", type=int, help="Pin to this version.")
@click.option("--alias", help="Pin to the version behind this alias.")
@click.option("--adapter", help="An adapter for this consumer's payloads: JSON, or @FILE.")
@client_options
def pin(
    name: str,
    consumer: str,
    version: int | None,
    alias: str | None,
    adapter: str | None,
    url: str,
    key: str | None,
) -> None:
    """Pin a consumer (an app, named by its keys) to a version or alias of a model.

    Without --version and --alias the consumer follows the model's traffic policy (and keeps
    only its adapter). Replaces what the consumer had; audited.

    \b
    Examples:
      modelport pin churn checkout --version 3
      modelport pin churn mobile --alias production --adapter @mobile-adapter.json
    """
    if version is not None and alias is not None:
        raise click.UsageError("give --version or --alias, not both")
    doc = _document(adapter, "--adapter") if adapter else None
    out = _client(url, key).pin(name, consumer, version=version, alias=alias, adapter=doc)
    target = out["pin"] or "the traffic policy"
    click.echo(
        f"{name}: consumer {consumer} -> {target}; adapter: {'yes' if out['adapter'] else 'none'}"
    )


@main.command()
@click.argument("name")
@click.argument("consumer")
@client_options
def unpin(name: str, consumer: str, url: str, key: str | None) -> None:
    """Remove a consumer's pin and adapter on a model (audited).

    \b
    Example:
      modelport unpin churn checkout
    """
    _client(url, key).unpin(name, consumer)
    click.echo(f"{name}: consumer {consumer} follows the traffic policy")


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_options
def consumers(name: str, as_json: bool, url: str, key: str | None) -> None:
    """List the consumers with a pin or an adapter on a model.

    \b
    Example:
      modelport consumers churn
    """
    rows = _client(url, key).consumers(name)
    if as_json:
        _print_json(rows)
        return
    for r in rows:
        r["adapter"] = "yes" if r["adapter"] else ""
    _table(rows, ["consumer", "pin", "adapter", "updated", "updated_by"])


@main.command()
@click.argument("name")
@click.option("--set", "policy", help="The new policy: JSON, or @FILE (see docs/api.md).")
@client_options
def traffic(name: str, policy: str | None, url: str, key: str | None) -> None:
    """Show or set the traffic policy of a model's unversioned routes.

    \b
    Examples:
      modelport traffic churn
      modelport traffic churn --set '{"policy": "split", "arms": [
          {"name": "a", "alias": "production", "weight": 90},
          {"name": "b", "alias": "candidate", "weight": 10}]}'
      modelport traffic churn --set @canary.json
    """
    client = _client(url, key)
    out = client.set_traffic(name, _document(policy, "--set")) if policy else client.traffic(name)
    _print_json(out)


@main.command()
@click.argument("name")
@click.option("--set", "adapter", help="The model-wide adapter: JSON, or @FILE.")
@click.option("--remove", is_flag=True, help="Remove the model-wide adapter.")
@client_options
def adapter(name: str, adapter: str | None, remove: bool, url: str, key: str | None) -> None:
    """Set or remove the adapter every consumer without its own goes through.

    \b
    Example:
      modelport adapter churn --set '{"steps": [{"rename": {"from": "postcode", "to": "zip"}}]}'
    """
    _print_json(_client(url, key).set_adapter(name, _set_or_remove(adapter, remove)))


@main.command()
@click.argument("name")
@click.option("--limit", type=int, default=50, show_default=True, help="How many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_options
def events(name: str, limit: int, as_json: bool, url: str, key: str | None) -> None:
    """Show a model's release events: policies, pins, adapters, automatic actions, aliases.

    \b
    Example:
      modelport events churn --limit 20
    """
    rows = _client(url, key).events(name, limit)
    if as_json:
        _print_json(rows)
        return
    for r in rows:
        r["detail"] = json.dumps(r["detail"], separators=(",", ":"))[:100]
    _table(rows, ["time", "kind", "actor", "detail"])


@main.command()
@click.argument("name")
@click.option("--metric", type=click.Choice(["accuracy", "mean_reward", "rmse"]))
@click.option("--revision", type=int, help="A traffic revision (default: the current one).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_options
def experiment(
    name: str, metric: str | None, revision: int | None, as_json: bool, url: str, key: str | None
) -> None:
    """Report a traffic experiment: per arm, the metric, its interval and its test.

    \b
    Example:
      modelport experiment churn --metric accuracy
    """
    out = _client(url, key).experiment(name, metric=metric, revision=revision)
    if as_json:
        _print_json(out)
        return
    click.echo(
        f"{name}: revision {out['revision']}, {out['policy']} policy, metric {out['metric']}"
    )
    rows = []
    for arm in out["arms"]:
        vs = arm.get("vs_control") or {}
        ci = arm.get("ci") or {}
        rows.append(
            {
                "arm": arm["arm"],
                "requests": arm["requests"],
                "feedback": arm["feedback"],
                "value": _num(arm.get("value")),
                "ci": f"[{_num(ci.get('low'))}, {_num(ci.get('high'))}]" if ci else "",
                "diff": _num(vs.get("difference")),
                "p": _num(vs.get("p_value")),
                "significant": vs.get("significant", ""),
                "test": vs.get("test", ""),
            }
        )
    _table(rows, ["arm", "requests", "feedback", "value", "ci", "diff", "p", "significant", "test"])


def _num(value: Any) -> str:
    return "" if value is None else f"{value:.4g}"
