"""Alembic environment: the engine comes from the caller (Database.migrate) or the URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from workers.db.models import Base

# Any number that no other advisory lock on the database uses: b"S2F-MIGR".
MIGRATION_LOCK = 0x5332462D4D494752

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # run from the alembic command line: sqlalchemy.url in alembic.ini
    engine = create_engine(config.get_main_option("sqlalchemy.url"))

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # An API and its workers start together and each migrates. Two CREATE TABLEs at
            # once fail on PostgreSQL (a unique violation in its catalog, not a lock wait), so
            # they take turns: the lock is held to the commit, and whoever comes next reads
            # the version the first one wrote and finds nothing to do.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK})
        context.run_migrations()
