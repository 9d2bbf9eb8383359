"""Jobs whose worker or queue message is lost: found by their leases, and queued again.

The reconciler (workers.reconciler) looks for them; each change is a compare-and-set, so of
several reconcilers looking at once, one acts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from workers.db.jobs import last_sign_of_life
from workers.db.models import Job, JobStatus, utcnow

__all__ = ["mark_sent", "requeue_running", "requeue_stale", "stale_queued", "stale_running",
           "unmark_sent"]


def stale_queued(session: Session, lease: float, limit: int = 500) -> list[Job]:
    """Queued jobs last sent ``lease`` seconds ago or more: their message may be lost."""
    cutoff = utcnow() - timedelta(seconds=lease)
    sent = func.coalesce(Job.enqueued_at, Job.created_at)
    query = (select(Job).where(Job.status == JobStatus.QUEUED, sent < cutoff,
                               Job.cancel_requested.is_(False))
             .order_by(sent).limit(limit))
    return list(session.scalars(query))


def stale_running(session: Session, lease: float, limit: int = 500) -> list[Job]:
    """Running jobs whose worker has been silent for ``lease`` seconds: it is gone."""
    cutoff = utcnow() - timedelta(seconds=lease)
    query = (select(Job).where(Job.status == JobStatus.RUNNING, last_sign_of_life() < cutoff)
             .order_by(last_sign_of_life()).limit(limit))
    return list(session.scalars(query))


def requeue_stale(session: Session, job: Job, lease: float, *, at: datetime) -> bool:
    """A running job whose lease expired → queued again, sent ``at``; False if it moved on
    meanwhile (its worker wrote after all, or another reconciler took it first)."""
    cutoff = utcnow() - timedelta(seconds=lease)
    result = session.execute(
        update(Job).where(Job.id == job.id, Job.status == JobStatus.RUNNING,
                          last_sign_of_life() < cutoff)
        .values(status=JobStatus.QUEUED, progress_step=0, enqueued_at=at))
    return result.rowcount == 1


def mark_sent(session: Session, job: Job, *, at: datetime | None = None) -> bool:
    """Record a (re-)send of ``job``, unless someone else recorded one since it was read.

    A compare-and-set on ``enqueued_at``: of several reconcilers looking at once, one
    re-sends. Returns whether this caller won.
    """
    previous = job.enqueued_at
    same = Job.enqueued_at.is_(None) if previous is None else Job.enqueued_at == previous
    result = session.execute(update(Job).where(Job.id == job.id, Job.status == job.status, same)
                             .values(enqueued_at=at or utcnow()))
    return result.rowcount == 1


def unmark_sent(session: Session, job_id: str, *, at: datetime,
                previous: datetime | None) -> None:
    """Undo :func:`mark_sent` after the send failed, so the next look tries again."""
    session.execute(update(Job).where(Job.id == job_id, Job.enqueued_at == at)
                    .values(enqueued_at=previous))


def requeue_running(session: Session, job_ids: list[str] | None = None) -> list[Job]:
    """Running jobs back to queued (their worker is gone); returns them for re-sending.
    ``job_ids``: only these (one of several workers died); None: every running job."""
    query = select(Job).where(Job.status == JobStatus.RUNNING)
    if job_ids is not None:
        query = query.where(Job.id.in_(job_ids))
    jobs = list(session.scalars(query))
    for job in jobs:
        job.status = JobStatus.QUEUED
        job.progress_step = 0
        job.enqueued_at = utcnow()  # the caller sends each one now
    session.flush()
    return jobs
