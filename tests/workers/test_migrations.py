"""The Alembic migrations build exactly the schema the models describe."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from workers.db import Database
from workers.db.models import Base


def test_migrations_match_the_models(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    database.migrate()
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
