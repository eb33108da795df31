"""``modelport keys``: create, list and revoke API keys, and the first admin key of a store.

A keys command works on a running server (``--url``, or MODELPORT_URL) or directly on a store
(``--home``/``--store``); it says on stderr which one it used. Only ``keys create`` makes a
store that does not exist yet, and it says so: a key in a store no server uses would
otherwise look like a key that works.
"""

from __future__ import annotations

import functools
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import make_url

from ..errors import ModelportError
from ..settings import Settings, load_settings
from .common import F, Group, client_for, print_json, table


def store_label(url: str) -> str:
    """A store URL fit to print: the password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def store_exists(url: str) -> bool:
    """Whether a modelport store is at ``url`` (a SQLite file, or a migrated database)."""
    from ..store import Store, normalize_url

    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        return database not in ("", ":memory:") and Path(database).exists()
    store = Store(url, migrate=False)
    try:
        return store.has_schema()
    finally:
        store.close()


def first_key_command(settings: Settings) -> str:
    """The command that makes an admin key in the store these settings name."""
    where = (
        f"--store {shlex.quote(store_label(settings.store))}"
        if settings.store
        else f"--home {shlex.quote(str(settings.home.resolve()))}"
    )
    return f"modelport keys create --name admin --scope admin {where}"


def first_key_hint(settings: Settings) -> str | None:
    """One line saying how to make the first admin key, when the store has none (and keys are
    required); None otherwise. Opens the store, so a store that cannot be opened fails here."""
    from ..registry import keys as keymod
    from ..store import Store

    if settings.no_auth:
        return None
    store = Store(settings.store_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        with store.read() as conn:
            rows = keymod.list_keys(conn)
    finally:
        store.close()
    if any("admin" in r["scopes"] for r in rows):
        return None
    return f"no admin key in this store yet; make one with: {first_key_command(settings)}"


@click.group(cls=Group)
def keys() -> None:
    """Create, list and revoke API keys.

    Against a server when --url (or MODELPORT_URL) is given, with an admin --key; otherwise
    directly against a store (--home/--store, or MODELPORT_HOME/MODELPORT_STORE; default
    ./.modelport). Each command says on stderr which server or store it used. Only keys create
    makes a store that does not exist yet (and says so).

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
        help="Manage the keys of this server instead of a store [env MODELPORT_URL]",
    )(fn)
    fn = click.option("--store", help="Store URL [env MODELPORT_STORE]")(fn)
    fn = click.option("--home", help="Home folder of the store [env MODELPORT_HOME]")(fn)
    return fn


def _backend(create: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run a keys command against a server (``--url``) or a store; ``create``: the command may
    make a store that does not exist yet."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(
            home: str | None, store: str | None, url: str | None, key: str | None, **kwargs: Any
        ) -> Any:
            url = url or (None if (home or store) else os.environ.get("MODELPORT_URL"))
            if url:
                click.echo(f"server: {url}", err=True)
                return fn(remote=client_for(url, key), local=None, **kwargs)
            from ..store import Store

            settings = load_settings({"home": home, "store": store})
            label = store_label(settings.store_url)
            new = not store_exists(settings.store_url)
            if new and not create:
                raise ModelportError(
                    f"no modelport store at {label}: give the store of your server with "
                    "--home or --store, or the server itself with --url"
                )
            st = Store(settings.store_url, sqlite_synchronous=settings.sqlite_synchronous)
            note = " (new: made now, no server has used it yet)" if new else ""
            click.echo(f"store: {label}{note}", err=True)
            try:
                return fn(remote=None, local=st, **kwargs)
            finally:
                st.close()

        return wrapper

    return decorate


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
@_backend(create=True)
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
@_backend(create=False)
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
        print_json(rows)
        return
    for r in rows:
        r["scopes"] = ",".join(r["scopes"])
        r["created"] = iso(r["created_at"])
        r["revoked"] = iso(r["revoked_at"]) or ""
    table(rows, ["id", "prefix", "consumer", "scopes", "created", "revoked"])


@keys.command("revoke")
@click.argument("key_id", type=int)
@key_target_options
@_backend(create=False)
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


#: The commands of this module, registered on the group by modelport.cli.main.
COMMANDS: list[click.Command] = [keys]
