"""GET /jobs/{id}/events: a job's life as Server-Sent Events, read from its row.

The row is polled, not subscribed to: the database is the one truth and needs no pub/sub.
A late client is caught up from the row (queued, started, the latest progress, the end).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from api.jobview import UrlMaker, job_out
from api.limits import EVENTS_POLL_SECONDS
from api.polling import load_job
from workers.db import Database, Job, JobStatus

__all__ = ["job_events"]


def _event(name: str, data: dict[str, Any], number: int) -> dict[str, str]:
    return {"event": name, "data": json.dumps(data), "id": str(number)}


async def job_events(database: Database, job: Job, urls: UrlMaker) -> AsyncIterator[dict]:
    """Yields sse-starlette event dicts until the job has finished."""
    job_id = job.id
    number = 0
    queued_sent = False
    attempts_seen = 0
    progress_seen: tuple[int, int] | None = None
    current: Job | None = job
    while current is not None:
        status = JobStatus(current.status)
        if not queued_sent:
            # Every job starts queued; a client arriving later is told so first anyway.
            queued_sent = True
            number += 1
            yield _event("queued", {"job_id": job_id, "created_at":
                                    job_out(current, urls).timings.created_at.isoformat()},
                         number)
        if current.started_at is not None and (current.attempts or 0) > attempts_seen:
            # A job retried after its worker died starts again: say so once per attempt.
            attempts_seen = current.attempts or 0
            progress_seen = None
            number += 1
            yield _event("started", {"job_id": job_id, "attempt": attempts_seen,
                                     "started_at": job_out(current, urls).timings.started_at
                                     .isoformat()}, number)  # type: ignore[union-attr]
        progress = (current.progress_step or 0, current.progress_total or 0)
        if progress[1] > 0 and progress != progress_seen:
            progress_seen = progress
            number += 1
            data: dict[str, Any] = {"job_id": job_id, "step": progress[0], "total": progress[1]}
            if current.preview and status is JobStatus.RUNNING:
                data["preview"] = current.preview
            yield _event("progress", data, number)
        if status.finished:
            number += 1
            yield _event(status.value, job_out(current, urls).model_dump(mode="json"), number)
            return
        await asyncio.sleep(EVENTS_POLL_SECONDS)
        current = await load_job(database, job_id)
