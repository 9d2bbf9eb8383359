"""Every change to a job's row, each one a small atomic update."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Update,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from workers.db.models import INTERACTIVE_QUEUE, Batch, Job, JobStatus, utcnow
from workers.job_errors import WORKER_LOST, JobError

__all__ = [
    "cancel_abandoned",
    "count_queued",
    "count_unfinished",
    "create_job",
    "exhausted_error",
    "fail_exhausted",
    "fail_running",
    "finish_job",
    "get_job",
    "get_state",
    "heartbeat",
    "is_cancel_requested",
    "last_sign_of_life",
    "list_jobs",
    "new_job_id",
    "queued_candidates",
    "record_progress",
    "request_cancel",
    "requeue_job",
    "start_job",
]


# The hot path (admit, claim, progress, finish) runs a handful of statements per job. On a
# small CPU, building an ORM statement costs several times what SQLite takes to run it, and
# the ORM's bookkeeping around it as much again. So the fixed statements are built once with
# bound values, and the hot ones run on the session's connection, inside its transaction
# but outside its bookkeeping: none of their rows is held in the session. Elsewhere, no
# update asks the session to mirror it into rows it holds: the callers hold none.
_UNSYNCED = {"synchronize_session": False}


def _direct(session: Session) -> Connection:
    """The session's connection, in its transaction: for the hot-path statements."""
    return session.connection()


def new_job_id() -> str:
    return uuid.uuid4().hex


# RETURNING: the new row as stored, defaults and all, in the same statement.
_INSERT = insert(Job).returning(*Job.__table__.columns)


def create_job(
    session: Session, *, job_id: str, model: str, request: dict[str, Any],
    input_key: str | None = None, output_format: str = "png", owner: str | None = None,
    webhook_url: str | None = None,
) -> Job:
    """A new queued job, returned detached: a copy to read, not a row of the session."""
    now = utcnow()
    row = _direct(session).execute(_INSERT, {
        "id": job_id, "status": JobStatus.QUEUED, "owner": owner, "model": model,
        "request": request, "input_key": input_key, "output_format": output_format,
        "created_at": now, "webhook_url": webhook_url, "progress_step": 0,
        "progress_total": 0, "cancel_requested": False, "attempts": 0, "outputs": [],
        # Sent right after this commits; if that send is lost, the reconciler sends
        # again once the job has waited ``queued_lease``.
        "enqueued_at": now,
    }).mappings().one()
    return Job(**row)


_BY_ID = select(*Job.__table__.columns).where(Job.id == bindparam("job_id"))


def get_job(session: Session, job_id: str, owner: str | None = None) -> Job | None:
    """The job as stored now, detached (a copy to read); None if it does not exist or
    ``owner`` is given and does not own it."""
    row = _direct(session).execute(_BY_ID, {"job_id": job_id}).mappings().first()
    if row is None or (owner is not None and row["owner"] != owner):
        return None
    return Job(**row)


@dataclass(frozen=True)
class JobState:
    """What a worker handed a job it cannot claim needs to know, from one light read."""

    status: str
    # Never started, and its own webhook or its batch's (not yet sent) may be due: a job
    # cancelled while queued ends with no worker, so the one that meets its message tells.
    notice_due: bool


_STATE = (select(Job.status, Job.started_at, Job.webhook_url, Batch.webhook_url,
                 Batch.notified_at)
          .select_from(Job).outerjoin(Batch, Batch.id == Job.batch_id)
          .where(Job.id == bindparam("job_id")))


def get_state(session: Session, job_id: str) -> JobState | None:
    """The job's state without building its row: a skipped message (each item of a
    cancelled batch, thousands of them) costs this one indexed read."""
    row = _direct(session).execute(_STATE, {"job_id": job_id}).first()
    if row is None:
        return None
    status, started_at, webhook, batch_webhook, batch_notified = row
    batch_due = batch_webhook is not None and batch_notified is None
    return JobState(status=status,
                    notice_due=started_at is None and (webhook is not None or batch_due))


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
    cursor: str | None = None, limit: int = 50, style: str | None = None,
    models: list[str] | None = None,
) -> tuple[list[Job], str | None]:
    """Newest first; the cursor continues after the last job of the previous page.
    ``style``: only jobs that asked for that style; ``models``: only jobs on one of those."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
    if status is not None:
        query = query.where(Job.status == status)
    if style is not None:
        # A caller's own style travels inline (api.styles): matched by its name too.
        query = query.where(or_(Job.request["style"].as_string() == style,
                                Job.request[("style", "name")].as_string() == style))
    if models is not None:
        query = query.where(Job.model.in_(models))
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


_QUEUED_COUNT = (select(func.count()).select_from(Job)
                 .where(Job.status == JobStatus.QUEUED, Job.queue == INTERACTIVE_QUEUE))
_UNFINISHED_COUNT = (select(func.count()).select_from(Job)
                     .where(Job.owner == bindparam("owner"),
                            Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)),
                            Job.queue == INTERACTIVE_QUEUE))


def count_queued(session: Session) -> int:
    """Interactive jobs waiting: the admission limit of /generate (batches have their own)."""
    return _direct(session).scalar(_QUEUED_COUNT) or 0


def count_unfinished(session: Session, owner: str) -> int:
    """One key's interactive jobs queued or running: its concurrency quota."""
    return _direct(session).scalar(_UNFINISHED_COUNT, {"owner": owner}) or 0


def _claimable(stale: bool, silent: bool) -> ColumnElement[bool]:
    """Queued, or running under a dead worker's claim; bound by :func:`_claim_params`.

    A running job's claim is dead when it started before ``stale_before`` (a live worker
    stops a render within its time limit) or when its worker has not written since
    ``silent_before`` (a live worker beats on claim, on progress and from a heartbeat
    thread). With neither, only queued jobs are claimable.
    """
    queued = Job.status == JobStatus.QUEUED
    dead = []
    if stale:
        dead.append(Job.started_at < bindparam("stale_before"))
    if silent:
        dead.append(last_sign_of_life() < bindparam("silent_before"))
    if not dead:
        return queued
    return or_(queued, and_(Job.status == JobStatus.RUNNING, or_(*dead)))


def _claim_params(now: datetime, stale_after: float | None,
                  lease: float | None) -> dict[str, Any]:
    """The values for :func:`_claimable`'s thresholds, for a statement run at ``now``."""
    params: dict[str, Any] = {}
    if stale_after is not None:
        params["stale_before"] = now - timedelta(seconds=stale_after)
    if lease is not None:
        params["silent_before"] = now - timedelta(seconds=lease)
    return params


def last_sign_of_life() -> ColumnElement[datetime]:
    return func.coalesce(Job.heartbeat_at, Job.started_at, Job.created_at)


@cache
def _claim_statement(stale: bool, silent: bool, capped: bool) -> Update:
    conditions = [Job.id == bindparam("job_id"), _claimable(stale, silent),
                  Job.cancel_requested.is_(False)]
    if capped:
        conditions.append(Job.attempts < bindparam("max_attempts"))
    # RETURNING: the claimed row in the same statement (SQLite 3.35+, PostgreSQL).
    return (update(Job).where(*conditions)
            .values(status=JobStatus.RUNNING, started_at=bindparam("now"),
                    heartbeat_at=bindparam("now"), attempts=Job.attempts + 1, progress_step=0)
            .returning(Job))


def start_job(session: Session, job_id: str, *, stale_after: float | None = None,
              lease: float | None = None, max_attempts: int | None = None) -> Job | None:
    """Claim a job: queued → running, one more attempt. None: not this worker's to run now.

    The update is atomic, so of several workers handed the same job (a re-delivery, the
    reconciler's re-send, a batch partner's own message) exactly one claims it. A running
    job is claimed again only when its claim is dead (see :func:`_claimable`). A job that
    has had ``max_attempts`` attempts is not claimed: :func:`fail_exhausted` ends it.

    The job comes back as claimed, detached: a copy to read, not a row of the session.
    """
    now = utcnow()
    params = {"job_id": job_id, "now": now, **_claim_params(now, stale_after, lease)}
    if max_attempts is not None:
        params["max_attempts"] = max_attempts
    statement = _claim_statement(stale_after is not None, lease is not None,
                                 max_attempts is not None)
    row = _direct(session).execute(statement, params).mappings().first()
    return Job(**row) if row is not None else None


def exhausted_error(attempts: int) -> str:
    return (f"gave up after {attempts} attempts: each time, the worker running this job "
            "stopped before it finished (a crash, a kill or a lost lease)")


def fail_exhausted(session: Session, job_id: str, *, max_attempts: int,
                   stale_after: float | None = None, lease: float | None = None
                   ) -> Job | None:
    """A claimable job that has used up its attempts → failed with a clear error.

    Returns the job if this call failed it (so its completion is reported once).
    """
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.attempts < max_attempts:
        return None
    now = utcnow()
    result = session.execute(
        update(Job).where(Job.id == job_id,
                          _claimable(stale_after is not None, lease is not None),
                          Job.attempts >= max_attempts)
        .values(status=JobStatus.FAILED, finished_at=now,
                error=exhausted_error(job.attempts), preview=None,
                error_detail=JobError(WORKER_LOST, exhausted_error(job.attempts)).to_dict()),
        _claim_params(now, stale_after, lease))
    if result.rowcount == 0:
        return None
    return session.get(Job, job_id, populate_existing=True)


def cancel_abandoned(session: Session, job_id: str, *, stale_after: float | None = None,
                     lease: float | None = None) -> Job | None:
    """A job cancelled while running whose worker then died: cancelled now, not left running.

    Returns the job if this call ended it.
    """
    now = utcnow()
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING,
                          Job.cancel_requested.is_(True),
                          _claimable(stale_after is not None, lease is not None))
        .values(status=JobStatus.CANCELLED, finished_at=now, preview=None),
        _claim_params(now, stale_after, lease))
    if result.rowcount == 0:
        return None
    return session.get(Job, job_id, populate_existing=True)


def requeue_job(session: Session, job_id: str) -> bool:
    """A job in hand goes back to the queue to be tried again (sent from now); False if a
    cancel was asked for meanwhile (the caller then ends it) or it is not running."""
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING,
                          Job.cancel_requested.is_(False))
        .values(status=JobStatus.QUEUED, progress_step=0, preview=None, enqueued_at=utcnow()),
        execution_options=_UNSYNCED)
    return result.rowcount == 1


def fail_running(session: Session, job_ids: list[str], error: JobError) -> set[str]:
    """Of ``job_ids``, those still running → failed with ``error``; returns their ids (those
    already ended keep their outcome)."""
    if not job_ids:
        return set()
    rows = session.execute(
        update(Job).where(Job.id.in_(job_ids), Job.status == JobStatus.RUNNING)
        .values(status=JobStatus.FAILED, finished_at=utcnow(), error=error.message,
                error_detail=error.to_dict(), preview=None)
        .returning(Job.id), execution_options=_UNSYNCED)
    return {row.id for row in rows}


def heartbeat(session: Session, job_ids: list[str]) -> None:
    """This worker still holds these jobs: their leases start again."""
    session.execute(update(Job).where(Job.id.in_(job_ids), Job.status == JobStatus.RUNNING)
                    .values(heartbeat_at=utcnow()), execution_options=_UNSYNCED)


# Interactive jobs before batch items, then oldest first.
_CANDIDATES = (select(*Job.__table__.columns)
               .where(Job.status == JobStatus.QUEUED, Job.model == bindparam("model"),
                      Job.cancel_requested.is_(False), Job.attempts == 0)
               .order_by(Job.queue != INTERACTIVE_QUEUE, Job.created_at, Job.id)
               .limit(bindparam("limit")))


def queued_candidates(session: Session, model: str, limit: int) -> list[Job]:
    """The oldest queued jobs on ``model``: partners for a batch.

    Only jobs never tried before: one whose worker died may be what killed it, and it must
    not take a batch of innocent jobs down with it again. The jobs come back detached.
    """
    rows = _direct(session).execute(_CANDIDATES, {"model": model, "limit": limit}).mappings()
    return [Job(**row) for row in rows]


# The columns to set come with each call's values; only the row is bound here.
_PROGRESS = (update(Job).where(Job.id == bindparam("job_id"), Job.status == JobStatus.RUNNING)
             .returning(Job.cancel_requested))


def record_progress(session: Session, job_id: str, step: int, total: int,
                    preview: str | None) -> bool:
    """Write a running job's progress; whether a cancel was asked for (one round trip)."""
    values: dict[str, Any] = {"progress_step": step, "progress_total": total,
                              "heartbeat_at": utcnow()}
    if preview is not None:
        values["preview"] = preview
    return bool(_direct(session).scalar(_PROGRESS, {"job_id": job_id, **values}))


def is_cancel_requested(session: Session, job_id: str) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


_FINISH = update(Job).where(Job.id == bindparam("job_id"))
# Succeeded with no steps reported from this render: every step of the total on the row.
_FINISH_EVERY_STEP = _FINISH.values(progress_step=Job.progress_total)


def finish_job(
    session: Session, job_id: str, status: JobStatus, *,
    outputs: list[dict[str, Any]] | None = None, error: JobError | None = None,
    progress: tuple[int, int] | None = None,
) -> None:
    """End a job. ``progress``: the last (step, total) its render reached, which a worker
    writes only now and then (a short render may not have written it at all)."""
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(),
                              "error": error.message if error else None,
                              "error_detail": error.to_dict() if error else None}
    if outputs is not None:
        values["outputs"] = outputs
    if progress is not None and progress[1] > 0:
        values.update(progress_step=progress[0], progress_total=progress[1])
    statement = _FINISH
    if status is JobStatus.SUCCEEDED:
        # Every step done, whether or not the last one was written as progress.
        values["preview"] = None
        if "progress_total" in values:
            values["progress_step"] = values["progress_total"]
        else:
            statement = _FINISH_EVERY_STEP
    _direct(session).execute(statement, {"job_id": job_id, **values})


def request_cancel(session: Session, job_id: str) -> Job | None:
    """A queued job is cancelled at once and never runs; a running one stops at its next step."""
    session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                    .values(status=JobStatus.CANCELLED, cancel_requested=True,
                            finished_at=utcnow()))
    session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                    .values(cancel_requested=True))
    return session.get(Job, job_id, populate_existing=True)
