"""Keys for the API tests, made through the same store the ``keys`` command uses."""

from __future__ import annotations

from pathlib import Path

from workers.db import get_database
from workers.db import keys as key_store
from workers.settings import Settings


def make_key(settings: Settings, name: str, *, admin: bool = False) -> str:
    database = get_database(settings.resolved_database_url)
    database.migrate()
    with database.session() as session:
        _, secret = key_store.create_key(session, name, admin=admin)
    return secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def secured(data_dir: Path, **overrides) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(data_dir=data_dir, auth="required", **overrides)
