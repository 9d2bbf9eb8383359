"""Alembic environment: the engine comes from the caller (Database.migrate) or the URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from workers.db.models import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # run from the alembic command line: sqlalchemy.url in alembic.ini
    engine = create_engine(config.get_main_option("sqlalchemy.url"))

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
