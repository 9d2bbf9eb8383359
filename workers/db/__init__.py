"""Job records in a SQL database (SQLite by default, PostgreSQL in production)."""

from workers.db.models import Batch, Job, JobStatus
from workers.db.session import Database, get_database

__all__ = ["Batch", "Database", "Job", "JobStatus", "get_database"]
