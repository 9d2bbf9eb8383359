"""Job records in a SQL database (SQLite by default, PostgreSQL in production)."""

from workers.db.models import Job, JobStatus
from workers.db.session import Database, get_database

__all__ = ["Database", "Job", "JobStatus", "get_database"]
