"""Reading job rows from async code: each read runs in a worker thread, never on the loop."""

from __future__ import annotations

import asyncio
import contextlib
import time

from api.limits import (
    RESULT_POLL_FAST_SECONDS,
    RESULT_POLL_MAX_SECONDS,
    RESULT_POLL_MID_RENDER_SECONDS,
    RESULT_POLL_SECONDS,
    RESULT_POLL_SIGNALLED_SECONDS,
)
from workers.db import Database, Job, JobStatus
from workers.db import jobs as job_store
from workers.finish_signals import FinishListener

__all__ = ["load_job", "wait_for_job"]


def _load(database: Database, job_id: str, owner: str | None = None) -> Job | None:
    # expire_on_commit=False: the returned row stays readable after its session closes.
    with database.session() as session:
        return job_store.get_job(session, job_id, owner)


async def load_job(database: Database, job_id: str, owner: str | None = None) -> Job | None:
    """The job, if it exists and ``owner`` (when given) owns it."""
    return await asyncio.to_thread(_load, database, job_id, owner)


def _interval(job: Job, elapsed: float) -> float:
    """How long to sleep before the next look: short where the finish may be near.

    Each look costs a little CPU that the render shares on a small machine, so during the
    middle of a render the API looks rarely, and closely again at its last step (the worker
    writes every step's progress).
    """
    if elapsed > RESULT_POLL_FAST_SECONDS:
        return RESULT_POLL_MAX_SECONDS
    if job.status == JobStatus.RUNNING and job.progress_total and \
            job.progress_step < job.progress_total - 1:
        return RESULT_POLL_MID_RENDER_SECONDS
    return RESULT_POLL_SECONDS


async def wait_for_job(database: Database, job_id: str, timeout: float,
                       listener: FinishListener | None = None,
                       fallback: float = RESULT_POLL_SIGNALLED_SECONDS,
                       just_queued: bool = False) -> Job | None:
    """The job once finished, or as it is when ``timeout`` runs out. With a ``listener``,
    a worker's finish signal ends the wait at once; the looks stay, rarer, for a lost one.

    ``just_queued``: the caller has this moment queued the job, so a first look would only
    find it queued; with a listener, the wait starts with the signal instead."""
    started = time.monotonic()
    deadline = started + timeout
    with listener.watch(job_id) if listener else contextlib.nullcontext() as finished:
        if finished is not None and just_queued and timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), min(fallback, timeout))
            finished.clear()
        while True:
            job = await load_job(database, job_id)
            if job is None or JobStatus(job.status).finished:
                return job
            now = time.monotonic()
            if now >= deadline:
                return job
            pause = min(fallback if finished is not None else
                        _interval(job, now - started), deadline - now)
            if finished is None:
                await asyncio.sleep(pause)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), pause)
            finished.clear()
