"""``spec2fractal keys``: create, list and revoke API keys in the configured database."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console

from workers.db import Database, get_database
from workers.db import keys as key_store
from workers.settings import get_settings

__all__ = ["keys"]

keys = typer.Typer(help="API keys: the service asks for one whenever it listens beyond "
                        "localhost.", no_args_is_help=True)
console = Console()


def _database() -> Database:
    database = get_database(get_settings().resolved_database_url)
    database.migrate()
    return database


@keys.command()
def create(name: Annotated[str, typer.Option(help="Who or what the key is for.")],
           admin: Annotated[bool, typer.Option(
               "--admin", help="An operator's key: may also read /metrics, which shows "
                               "every key's queue and job counts.")] = False) -> None:
    """Make a key. It is shown once, alone on the last line; only its hash is kept."""
    name = name.strip()
    if not name or len(name) > 255:
        raise typer.BadParameter("give a name of 1 to 255 characters", param_hint="--name")
    with _database().session() as session:
        key, secret = key_store.create_key(session, name, admin=admin)
    role = "an operator key" if key.admin else "a key"
    console.print(f"created {role} {key.id} ({key.name}); keep the key below, it is not "
                  f"shown again", highlight=False, markup=False)
    console.print(f"webhook signing secret: {key.webhook_secret}", highlight=False, markup=False)
    print(secret)  # plain stdout, so `KEY=$(spec2fractal keys create ... | tail -n1)` works


@keys.command("list")
def list_(revoked: Annotated[bool, typer.Option(help="Show revoked keys too.")] = False
          ) -> None:
    """The keys, one line each: id, first characters, created, last used, revoked, role
    (operator or -), name."""
    with _database().session() as session:
        found = key_store.list_keys(session, include_revoked=revoked)

    def when(moment: datetime | None) -> str:
        return f"{moment:%Y-%m-%dT%H:%M}" if moment else "-"

    # Plain columns, never wrapped or cut: `keys revoke` takes the id, scripts read lines.
    print(f"{'id':<20}  {'starts with':<13}  {'created':<16}  {'last used':<16}  "
          f"{'revoked':<16}  {'role':<8}  name")
    for key in found:
        role = "operator" if key.admin else "-"
        print(f"{key.id:<20}  {key.prefix + '…':<13}  {when(key.created_at):<16}  "
              f"{when(key.last_used_at):<16}  {when(key.revoked_at):<16}  {role:<8}  "
              f"{key.name}")


@keys.command()
def revoke(key: Annotated[str, typer.Argument(help="The key's id, name or shown prefix.")]
           ) -> None:
    """Revoke a key: its next request is refused."""
    try:
        with _database().session() as session:
            revoked = key_store.revoke_key(session, key)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="KEY") from None
    if revoked is None:
        raise typer.BadParameter(f"no live key is called {key!r}", param_hint="KEY")
    console.print(f"revoked {revoked.id} ({revoked.name})", highlight=False, markup=False)
