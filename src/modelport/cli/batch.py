"""``modelport score``: batch scoring of a CSV or Parquet file (see :mod:`modelport.batch.scoring`)."""

from __future__ import annotations

import os

import click

from ..batch.scoring import ENGINES
from ..errors import NotFound, VersionNotFound
from .common import client_for, client_options, print_json


@click.command()
@click.argument("name")
@click.argument("paths", metavar="[INPUT] [OUTPUT]", nargs=-1)
@click.option(
    "--from-sql", "from_sql", help="Read the rows of this query instead of an INPUT file."
)
@click.option("--to-table", "to_table", help="Write to this table instead of an OUTPUT file.")
@click.option("--db", help="The database of --from-sql and --to-table (a SQLAlchemy URL).")
@click.option("--version", "version", type=int, help="Score with this version.")
@click.option(
    "--alias", help="Score with the version behind this alias (default: production, else latest)."
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Rows read, checked and scored at a time (memory grows with this, not the file).",
)
@click.option("--id-column", help="Keep only this input column in the output (default: all).")
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="pandas",
    show_default=True,
    help="pandas: this process, in chunks; spark: a Spark job through a pandas UDF (OUTPUT "
    "is then a folder of part files, in the INPUT's format unless OUTPUT ends in .csv or "
    ".parquet).",
)
@click.option(
    "--spark-conf",
    "spark_conf",
    multiple=True,
    help="KEY=VALUE Spark setting, with --engine spark (repeatable).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the finished run as JSON.")
@client_options
def score(
    name: str,
    paths: tuple[str, ...],
    from_sql: str | None,
    to_table: str | None,
    db: str | None,
    version: int | None,
    alias: str | None,
    chunk_rows: int,
    id_column: str | None,
    engine: str,
    spark_conf: tuple[str, ...],
    quiet: bool,
    as_json: bool,
    url: str,
    key: str | None,
) -> None:
    """Score a CSV or Parquet file (or a SQL query's rows) with a registered version, in chunks.

    Rows that do not fit the version's schema go to OUTPUT's stem + .rejects.csv (or
    .rejects.parquet) with their row number (0 is the first data row) and the reason; the
    others are scored. The output has the input columns (or the --id-column), prediction,
    proba_<class> for classifiers, model, version and run_id. The run is recorded on the
    server with its lineage (GET /v1/jobs/RUN_ID). Needs a key with the predict and read
    scopes.

    \b
    With --from-sql QUERY (instead of INPUT) and --to-table TABLE (instead of OUTPUT) the rows
    come from and go to the database --db names: the table (and TABLE_rejects) is created when
    missing and appended to; a failed run takes its rows out again.

    \b
    Examples:
      modelport score churn customers.parquet scored.parquet --alias production
      modelport score churn --from-sql "SELECT * FROM customers" --to-table churn_scores \\
          --db sqlite:///warehouse.db
      modelport score churn customers.csv scored.csv --version 3 --id-column customer_id
      modelport score churn customers.parquet scored-spark --engine spark --spark-conf spark.master=local[2]
    """
    if version is not None and alias is not None:
        raise click.UsageError("give either --version or --alias, not both")
    wanted = ["INPUT"] * (from_sql is None) + ["OUTPUT"] * (to_table is None)
    if len(paths) != len(wanted):
        raise click.UsageError(
            f"expected {' and '.join(wanted) or 'no file'} "
            f"(INPUT or --from-sql, OUTPUT or --to-table), got {len(paths)} path(s)"
        )
    named = dict(zip(wanted, paths, strict=True))
    input_path, output_path = named.get("INPUT"), named.get("OUTPUT")
    if input_path is not None and not os.path.isfile(input_path):
        raise click.BadParameter(f"Path {input_path!r} does not exist.", param_hint="INPUT")
    if (from_sql is not None or to_table is not None) and not db:
        raise click.UsageError("--from-sql and --to-table need --db URL")
    conf: dict[str, str] = {}
    for pair in spark_conf:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="--spark-conf")
        k, v = pair.split("=", 1)
        conf[k] = v
    if conf and engine != "spark":
        raise click.UsageError("--spark-conf needs --engine spark")
    try:
        run = client_for(url, key).score(
            name,
            input_path,
            output_path,
            version=version,
            alias=alias,
            chunk_rows=chunk_rows,
            id_column=id_column,
            engine=engine,
            progress=not quiet,
            spark_conf=conf,
            from_sql=from_sql,
            to_table=to_table,
            db=db,
        )
    except NotFound as exc:  # the model or version named on the command line
        hint = "--version" if isinstance(exc, VersionNotFound) else "NAME"
        raise click.BadParameter(exc.message, param_hint=hint) from None
    if as_json:
        print_json(run)
        return
    result = run["result"] or {}
    click.echo(
        f"run {run['id']}: {result.get('scored', 0)} rows scored, "
        f"{result.get('rejected', 0)} rejected, with {name} version {run['params']['version']}"
    )
    click.echo(f"output: {result.get('output')}")
    click.echo(f"rejects: {result.get('rejects')}")


#: The commands of this module, registered on the group by modelport.cli.main.
COMMANDS: list[click.Command] = [score]
