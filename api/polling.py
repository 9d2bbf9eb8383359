"""Reading job rows from async code: each read runs in a worker thread, never on the loop."""

from __future__ import annotations

import asyncio
import time

from api.limits import RESULT_POLL_FAST_SECONDS, RESULT_POLL_MAX_SECONDS, RESULT_POLL_SECONDS
from workers.db import Database, Job, JobStatus
from workers.db import jobs as job_store

__all__ = ["load_job", "wait_for_job"]


def _load(database: Database, job_id: str) -> Job | None:
    # expire_on_commit=False: the returned row stays readable after its session closes.
    with database.session() as session:
        return job_store.get_job(session, job_id)


async def load_job(database: Database, job_id: str) -> Job | None:
    return await asyncio.to_thread(_load, database, job_id)


async def wait_for_job(database: Database, job_id: str, timeout: float) -> Job | None:
    """The job once finished, or as it is when ``timeout`` runs out."""
    started = time.monotonic()
    deadline = started + timeout
    interval = RESULT_POLL_SECONDS
    while True:
        job = await load_job(database, job_id)
        if job is None or JobStatus(job.status).finished:
            return job
        left = deadline - time.monotonic()
        if left <= 0:
            return job
        await asyncio.sleep(min(interval, left))
        if time.monotonic() - started > RESULT_POLL_FAST_SECONDS:
            interval = min(interval * 1.2, RESULT_POLL_MAX_SECONDS)
