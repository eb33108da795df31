"""The ``modelport`` commands for releases: pins, adapters, traffic policies, events and
experiment reports. They talk to a server like the other client commands."""

from __future__ import annotations

import json
from typing import Any

import click

from .common import client_for, client_options, document, print_json, set_or_remove, table


@click.command()
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
      modelport pin churn mobile --alias production \\
          --adapter '{"steps": [{"rename": {"from": "months", "to": "tenure"}}]}'
    """
    if version is not None and alias is not None:
        raise click.UsageError("give --version or --alias, not both")
    doc = document(adapter, "--adapter") if adapter else None
    out = client_for(url, key).pin(name, consumer, version=version, alias=alias, adapter=doc)
    target = out["pin"] or "the traffic policy"
    click.echo(
        f"{name}: consumer {consumer} -> {target}; adapter: {'yes' if out['adapter'] else 'none'}"
    )


@click.command()
@click.argument("name")
@click.argument("consumer")
@client_options
def unpin(name: str, consumer: str, url: str, key: str | None) -> None:
    """Remove a consumer's pin and adapter on a model (audited).

    \b
    Example:
      modelport unpin churn checkout
    """
    client_for(url, key).unpin(name, consumer)
    click.echo(f"{name}: consumer {consumer} follows the traffic policy")


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_options
def consumers(name: str, as_json: bool, url: str, key: str | None) -> None:
    """List the consumers with a pin or an adapter on a model.

    \b
    Example:
      modelport consumers churn
    """
    rows = client_for(url, key).consumers(name)
    if as_json:
        print_json(rows)
        return
    for r in rows:
        r["adapter"] = "yes" if r["adapter"] else ""
    table(rows, ["consumer", "pin", "adapter", "updated", "updated_by"])


@click.command()
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
      modelport traffic churn --set '{"policy": "single", "target": {"alias": "production"}}'
    """
    client = client_for(url, key)
    out = client.set_traffic(name, document(policy, "--set")) if policy else client.traffic(name)
    print_json(out)


@click.command()
@click.argument("name")
@click.option("--set", "adapter", help="The model-wide adapter: JSON, or @FILE.")
@click.option("--remove", is_flag=True, help="Remove the model-wide adapter.")
@client_options
def adapter(name: str, adapter: str | None, remove: bool, url: str, key: str | None) -> None:
    """Set or remove the adapter every consumer without its own goes through.

    \b
    Example:
      modelport adapter churn --set '{"steps": [{"rename": {"from": "months", "to": "tenure"}}]}'
    """
    print_json(client_for(url, key).set_adapter(name, set_or_remove(adapter, remove)))


@click.command()
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
    rows = client_for(url, key).events(name, limit)
    if as_json:
        print_json(rows)
        return
    for r in rows:
        r["detail"] = json.dumps(r["detail"], separators=(",", ":"))[:100]
    table(rows, ["time", "kind", "actor", "detail"])


@click.command()
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
    out = client_for(url, key).experiment(name, metric=metric, revision=revision)
    if as_json:
        print_json(out)
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
    table(rows, ["arm", "requests", "feedback", "value", "ci", "diff", "p", "significant", "test"])


def _num(value: Any) -> str:
    return "" if value is None else f"{value:.4g}"


#: The commands of this module, registered on the group by modelport.cli.main.
COMMANDS: list[click.Command] = [pin, unpin, consumers, traffic, adapter, events, experiment]
