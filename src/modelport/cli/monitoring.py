"""The ``modelport`` commands for monitoring: live performance, drift, monitoring settings."""

from __future__ import annotations

from typing import Any

import click

from .common import client_for, client_options, print_json, set_or_remove, table


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@click.command()
@click.argument("name")
@click.option("--window", default="24h", show_default=True, help="e.g. 30s, 15m, 2h, 7d.")
@click.option("--version", "version", type=int, help="Only this version.")
@click.option("--consumer", help="Only this consumer's predictions.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the time series).")
@client_options
def performance(
    name: str,
    window: str,
    version: int | None,
    consumer: str | None,
    as_json: bool,
    url: str,
    key: str | None,
) -> None:
    """Show live metrics per version, from feedback labels joined to their predictions.

    \b
    Examples:
      modelport performance churn
      modelport performance churn --window 7d --version 3 --json
    """
    out = client_for(url, key).performance(name, window=window, version=version, consumer=consumer)
    if as_json:
        print_json(out)
        return
    w = out["window"]
    click.echo(f"{out['model']} ({out['task']}), {w['since']} .. {w['until']}")
    names = (
        ["mae", "rmse", "r2"]
        if out["task"] == "regression"
        else ["accuracy", "precision", "recall", "f1", "log_loss", "roc_auc"]
    )
    rows = []
    for v in out["versions"]:
        delay = v["label_delay_seconds"] or {}
        rows.append(
            {
                "version": v["version"],
                "predictions": v["predictions"],
                "labelled": v["labelled"],
                "coverage": _fmt(v["coverage"]),
                "delay_p50_s": _fmt(delay.get("median")),
                **{n: _fmt(v["metrics"].get(n)) for n in names},
            }
        )
    table(rows, ["version", "predictions", "labelled", "coverage", "delay_p50_s", *names])
    if out.get("truncated"):
        click.echo(f"(only the newest {out['max_rows']} labels were read)")


@click.command()
@click.argument("name")
@click.option("--window", help="e.g. 30s, 15m, 2h, 7d (default: the model's setting).")
@click.option("--version", "version", type=int, help="Only this version.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@client_options
def drift(
    name: str, window: str | None, version: int | None, as_json: bool, url: str, key: str | None
) -> None:
    """Show drift per version and field: PSI and KS (numbers), chi-square and PSI (categories).

    \b
    Examples:
      modelport drift churn
      modelport drift churn --window 2h --version 3 --json
    """
    out = client_for(url, key).drift(name, window=window, version=version)
    if as_json:
        print_json(out)
        return
    w = out["window"]
    click.echo(f"{out['model']}, {w['since']} .. {w['until']}; thresholds {out['thresholds']}")
    for v in out["versions"]:
        state = "DRIFTED" if v["drifted"] else "ok"
        click.echo(
            f"\nversion {v['version']}: {state}, {v['rows']} rows"
            + (f" against {v['reference_rows']} reference rows" if v["reference"] else "")
            + (f" ({v['reason']})" if v["reason"] else "")
        )
        entries = [*v["fields"], *([v["predictions"]] if v["predictions"] else [])]
        rows = [
            {
                "field": f["field"],
                "kind": f["kind"],
                "psi": _fmt(f["psi"]),
                "test": _fmt(f.get("ks_statistic", f.get("chi2"))),
                "p_value": _fmt(f.get("ks_pvalue", f.get("chi2_pvalue"))),
                "drifted": "yes" if f["drifted"] else "",
            }
            for f in entries
        ]
        if rows:
            table(rows, ["field", "kind", "psi", "test", "p_value", "drifted"])


@click.command()
@click.argument("name")
@click.option("--set", "doc", help="The settings: JSON, or @FILE.")
@click.option("--remove", is_flag=True, help="Remove the settings (defaults apply).")
@client_options
def monitoring(name: str, doc: str | None, remove: bool, url: str, key: str | None) -> None:
    """Show or set a model's monitoring settings: drift thresholds, window, webhook.

    \b
    Examples:
      modelport monitoring churn
      modelport monitoring churn --set '{"thresholds": {"psi": 0.25}, "webhook": "https://hooks.example.com/x"}'
      modelport monitoring churn --remove
    """
    client = client_for(url, key)
    if doc is None and not remove:
        print_json(client.monitoring(name))
        return
    print_json(client.set_monitoring(name, set_or_remove(doc, remove)))


#: The commands of this module, registered on the group by modelport.cli.main.
COMMANDS: list[click.Command] = [performance, drift, monitoring]
