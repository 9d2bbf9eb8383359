"""Job records in a SQL database (SQLite by default, PostgreSQL in production)."""

from workers.db.models import ApiKey, Batch, IdempotencyRecord, Job, JobStatus, UserStyle
from workers.db.session import Database, get_database

__all__ = [
    "ApiKey",
    "Batch",
    "Database",
    "IdempotencyRecord",
    "Job",
    "JobStatus",
    "UserStyle",
    "get_database",
]
