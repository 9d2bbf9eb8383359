"""Every change to a job's row, each one a small atomic update."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from workers.db.models import INTERACTIVE_QUEUE, Job, JobStatus, utcnow

__all__ = [
    "count_queued",
    "count_unfinished",
    "create_job",
    "finish_job",
    "get_job",
    "is_cancel_requested",
    "list_jobs",
    "new_job_id",
    "queued_candidates",
    "record_progress",
    "request_cancel",
    "requeue_running",
    "start_job",
]


def new_job_id() -> str:
    return uuid.uuid4().hex


def create_job(
    session: Session, *, job_id: str, model: str, request: dict[str, Any],
    input_key: str | None = None, output_format: str = "png", owner: str | None = None,
) -> Job:
    job = Job(id=job_id, status=JobStatus.QUEUED, owner=owner, model=model, request=request,
              input_key=input_key, output_format=output_format, created_at=utcnow(),
              progress_step=0, progress_total=0, cancel_requested=False, attempts=0, outputs=[])
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: str, owner: str | None = None) -> Job | None:
    job = session.get(Job, job_id)
    if job is None or (owner is not None and job.owner != owner):
        return None
    return job


def _encode_cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(f"{job.created_at.isoformat()}|{job.id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError for a cursor this function did not write."""
    created, _, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
    if not job_id:
        raise ValueError("not a cursor")
    return datetime.fromisoformat(created), job_id


def list_jobs(
    session: Session, *, status: str | None = None, owner: str | None = None,
    cursor: str | None = None, limit: int = 50,
) -> tuple[list[Job], str | None]:
    """Newest first; the cursor continues after the last job of the previous page."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
    if status is not None:
        query = query.where(Job.status == status)
    if owner is not None:
        query = query.where(Job.owner == owner)
    if cursor is not None:
        created, job_id = _decode_cursor(cursor)
        query = query.where(or_(Job.created_at < created,
                                (Job.created_at == created) & (Job.id < job_id)))
    jobs = list(session.scalars(query.limit(limit + 1)))
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return jobs, (_encode_cursor(jobs[-1]) if more and jobs else None)


def count_queued(session: Session) -> int:
    """Interactive jobs waiting: the admission limit of /generate (batches have their own)."""
    return session.scalar(select(func.count()).select_from(Job)
                          .where(Job.status == JobStatus.QUEUED,
                                 Job.queue == INTERACTIVE_QUEUE)) or 0


def count_unfinished(session: Session, owner: str) -> int:
    """One key's interactive jobs queued or running: its concurrency quota."""
    return session.scalar(select(func.count()).select_from(Job)
                          .where(Job.owner == owner,
                                 Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)),
                                 Job.queue == INTERACTIVE_QUEUE)) or 0


def start_job(session: Session, job_id: str, *, stale_after: float | None = None
              ) -> Job | None:
    """Claim a job: queued → running. None: not this worker's to run now.

    A job already running is claimed again only when its claim is ``stale_after`` seconds
    old: its worker died (the broker re-delivered the task), since a live one stops within
    that time limit. A younger claim belongs to a live worker, e.g. one that took the job
    into a batch while its own message was still queued.
    """
    runnable = Job.status == JobStatus.QUEUED
    if stale_after is not None:
        stale = utcnow() - timedelta(seconds=stale_after)
        runnable = or_(runnable, (Job.status == JobStatus.RUNNING) & (Job.started_at < stale))
    else:
        runnable = Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING])
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, runnable, Job.cancel_requested.is_(False))
        .values(status=JobStatus.RUNNING, started_at=utcnow(), attempts=Job.attempts + 1,
                progress_step=0)
    )
    if result.rowcount == 0:
        return None
    return session.get(Job, job_id, populate_existing=True)


def requeue_running(session: Session) -> list[Job]:
    """Running jobs back to queued (their worker is gone); returns them for re-sending."""
    jobs = list(session.scalars(select(Job).where(Job.status == JobStatus.RUNNING)))
    for job in jobs:
        job.status = JobStatus.QUEUED
        job.progress_step = 0
    session.flush()
    return jobs


def queued_candidates(session: Session, model: str, limit: int) -> list[Job]:
    """The oldest queued jobs on ``model``: partners for a batch."""
    query = (select(Job).where(Job.status == JobStatus.QUEUED, Job.model == model,
                               Job.cancel_requested.is_(False))
             # Interactive jobs before batch items, then oldest first.
             .order_by(Job.queue != INTERACTIVE_QUEUE, Job.created_at, Job.id).limit(limit))
    return list(session.scalars(query))


def record_progress(session: Session, job_id: str, step: int, total: int,
                    preview: str | None) -> None:
    values: dict[str, Any] = {"progress_step": step, "progress_total": total}
    if preview is not None:
        values["preview"] = preview
    session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                    .values(**values))


def is_cancel_requested(session: Session, job_id: str) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def finish_job(
    session: Session, job_id: str, status: JobStatus, *,
    outputs: list[dict[str, Any]] | None = None, error: str | None = None,
) -> None:
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error}
    if outputs is not None:
        values["outputs"] = outputs
    if status is JobStatus.SUCCEEDED:
        values["preview"] = None
    session.execute(update(Job).where(Job.id == job_id).values(**values))


def request_cancel(session: Session, job_id: str) -> Job | None:
    """A queued job is cancelled at once and never runs; a running one stops at its next step."""
    session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                    .values(status=JobStatus.CANCELLED, cancel_requested=True,
                            finished_at=utcnow()))
    session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                    .values(cancel_requested=True))
    return session.get(Job, job_id, populate_existing=True)
