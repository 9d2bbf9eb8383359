"""Batch rows, and the queries over their jobs: counts by status, timings, bulk cancel."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from workers.db.models import BATCH_QUEUE, ApiKey, Batch, Job, JobStatus, utcnow
from workers.job_errors import JobError

__all__ = [
    "BatchCounts",
    "NewItem",
    "batch_jobs",
    "cancel_batch",
    "cancelled_items",
    "claim_notification",
    "count_queued_items",
    "count_unfinished_items",
    "counts_for",
    "create_batch",
    "fail_unsent",
    "get_batch",
    "list_batches",
]


@dataclass(frozen=True)
class NewItem:
    """One job of a new batch, already checked."""

    job_id: str
    model: str
    request: dict[str, Any]
    output_format: str = "png"
    input_key: str | None = None


@dataclass
class BatchCounts:
    by_status: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in JobStatus})
    images: int = 0  # output images of the succeeded items
    mean_seconds: float | None = None  # mean render time of the items that ran to an end

    @property
    def finished(self) -> int:
        return sum(self.by_status[s.value] for s in JobStatus if s.finished)

    @property
    def remaining(self) -> int:
        return self.by_status[JobStatus.QUEUED] + self.by_status[JobStatus.RUNNING]


def create_batch(session: Session, *, batch_id: str, name: str | None, output_format: str,
                 items: Sequence[NewItem], owner: str | None = None,
                 webhook_url: str | None = None) -> Batch:
    """The batch row and one queued job per item, in the caller's transaction."""
    now = utcnow()
    batch = Batch(id=batch_id, name=name, owner=owner, total=len(items),
                  output_format=output_format, created_at=now, cancel_requested=False,
                  webhook_url=webhook_url)
    session.add(batch)
    session.flush()
    if items:
        # One executemany: thousands of rows in well under a second, unlike ORM objects.
        session.execute(insert(Job), [
            {"id": item.job_id, "status": JobStatus.QUEUED.value, "owner": owner,
             "model": item.model, "request": item.request, "input_key": item.input_key,
             "output_format": item.output_format, "created_at": now, "progress_step": 0,
             "progress_total": 0, "cancel_requested": False, "attempts": 0, "outputs": [],
             "batch_id": batch_id, "batch_index": index, "queue": BATCH_QUEUE}
            for index, item in enumerate(items)
        ])
    return batch


_QUEUED_ITEMS = (select(func.count()).select_from(Job)
                 .where(Job.status == JobStatus.QUEUED, Job.queue == BATCH_QUEUE))
_UNFINISHED_ITEMS = (select(func.count()).select_from(Job)
                     .where(Job.owner == bindparam("owner"),
                            Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)),
                            Job.queue == BATCH_QUEUE))
_LOCK_KEY = select(ApiKey.id).where(ApiKey.id == bindparam("owner")).with_for_update()


def count_queued_items(session: Session) -> int:
    """Batch items waiting, every key's: the batch queue's admission limit."""
    return session.connection().scalar(_QUEUED_ITEMS) or 0


def count_unfinished_items(session: Session, owner: str, *, lock: bool = False) -> int:
    """One key's batch items queued or running: its quota of batch work. ``lock``: hold the
    key's row until the transaction ends (PostgreSQL), so that two batches of one key sent
    to two API replicas at once are admitted one after the other, each seeing the other."""
    if lock:
        session.connection().execute(_LOCK_KEY, {"owner": owner})
    return session.connection().scalar(_UNFINISHED_ITEMS, {"owner": owner}) or 0


def get_batch(session: Session, batch_id: str, owner: str | None = None) -> Batch | None:
    batch = session.get(Batch, batch_id)
    if batch is None or (owner is not None and batch.owner != owner):
        return None
    return batch


def _encode_cursor(batch: Batch) -> str:
    return base64.urlsafe_b64encode(f"{batch.created_at.isoformat()}|{batch.id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError for a cursor this module did not write."""
    created, _, batch_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
    if not batch_id:
        raise ValueError("not a cursor")
    return datetime.fromisoformat(created), batch_id


def list_batches(session: Session, *, owner: str | None = None, cursor: str | None = None,
                 limit: int = 20) -> tuple[list[Batch], str | None]:
    """Newest first; the cursor continues after the last batch of the previous page."""
    query = select(Batch).order_by(Batch.created_at.desc(), Batch.id.desc())
    if owner is not None:
        query = query.where(Batch.owner == owner)
    if cursor is not None:
        created, batch_id = _decode_cursor(cursor)
        query = query.where(or_(Batch.created_at < created,
                                and_(Batch.created_at == created, Batch.id < batch_id)))
    batches = list(session.scalars(query.limit(limit + 1)))
    more = len(batches) > limit
    batches = batches[:limit]
    return batches, (_encode_cursor(batches[-1]) if more and batches else None)


def _render_seconds(session: Session) -> ColumnElement[Any]:
    """finished_at - started_at in seconds, in the database's own dialect."""
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(Job.finished_at) - func.julianday(Job.started_at)) * 86400.0
    return func.extract("epoch", Job.finished_at - Job.started_at)


def counts_for(session: Session, batch_ids: Sequence[str]) -> dict[str, BatchCounts]:
    """Counts of several batches in one grouped query."""
    result = {batch_id: BatchCounts() for batch_id in batch_ids}
    if not batch_ids:
        return result
    ran = and_(Job.status.in_([JobStatus.SUCCEEDED, JobStatus.FAILED]),
               Job.started_at.is_not(None), Job.finished_at.is_not(None))
    images = case((Job.status == JobStatus.SUCCEEDED, func.json_array_length(Job.outputs)),
                  else_=0)
    seconds = case((ran, _render_seconds(session)), else_=None)
    rows = session.execute(
        select(Job.batch_id, Job.status, func.count(), func.sum(images), func.avg(seconds),
               func.count(seconds))
        .where(Job.batch_id.in_(batch_ids))
        .group_by(Job.batch_id, Job.status)
    )
    weighted: dict[str, tuple[float, int]] = {}
    for batch_id, status, count, image_count, mean, timed in rows:
        counts = result[batch_id]
        counts.by_status[status] = count
        counts.images += int(image_count or 0)
        if mean is not None and timed:
            total, number = weighted.get(batch_id, (0.0, 0))
            weighted[batch_id] = (total + float(mean) * timed, number + timed)
    for batch_id, (total, number) in weighted.items():
        result[batch_id].mean_seconds = total / number
    return result


def batch_jobs(session: Session, batch_id: str, *, after: int = -1,
               limit: int = 500) -> list[Job]:
    """Items in order, ``limit`` at a time: pass the last index back as ``after``."""
    return list(session.scalars(
        select(Job).where(Job.batch_id == batch_id, Job.batch_index > after)
        .order_by(Job.batch_index).limit(limit)))


def cancel_batch(session: Session, batch_id: str) -> Batch | None:
    """Like ``jobs.request_cancel`` for every item, one UPDATE per status: queued items are
    cancelled at once and never run; running ones stop at their next step."""
    batch = session.get(Batch, batch_id)
    if batch is None:
        return None
    now = utcnow()
    session.execute(update(Job).where(Job.batch_id == batch_id, Job.status == JobStatus.QUEUED)
                    .values(status=JobStatus.CANCELLED, cancel_requested=True, finished_at=now))
    session.execute(update(Job).where(Job.batch_id == batch_id, Job.status == JobStatus.RUNNING)
                    .values(cancel_requested=True))
    if not batch.cancel_requested:
        batch.cancel_requested = True
        batch.cancelled_at = now
    session.flush()
    return batch


def cancelled_items(batch_id: str) -> Select[Any]:
    """The ids of the batch's cancelled items, as a query to use in another statement."""
    return select(Job.id).where(Job.batch_id == batch_id, Job.status == JobStatus.CANCELLED)


def fail_unsent(session: Session, batch_id: str, first_index: int, error: JobError) -> int:
    """Items from ``first_index`` on never reached the queue: failed, so the batch still ends."""
    result = session.execute(
        update(Job).where(Job.batch_id == batch_id, Job.batch_index >= first_index,
                          Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.FAILED, finished_at=utcnow(), error=error.message,
                error_detail=error.to_dict()))
    return result.rowcount


# A batch with a webhook not yet sent: one look by primary key.
_PENDING_NOTICE = select(Batch.id).where(Batch.id == bindparam("batch_id"),
                                         Batch.webhook_url.is_not(None),
                                         Batch.notified_at.is_(None))


def claim_notification(session: Session, batch_id: str) -> bool:
    """True once per batch with a webhook: when no item is left queued or running, the first
    caller sets ``notified_at`` and sends ``batch.completed``. One UPDATE, so of many workers
    finishing the last items at once exactly one wins."""
    # Every item's end asks; most batches have no webhook or have sent it, and then the
    # look at their items (the UPDATE below) is not made.
    if session.connection().execute(_PENDING_NOTICE, {"batch_id": batch_id}).first() is None:
        return False
    unfinished = select(Job.id).where(
        Job.batch_id == batch_id,
        Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value])).exists()
    result = session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.webhook_url.is_not(None),
               Batch.notified_at.is_(None), ~unfinished)
        .values(notified_at=utcnow()))
    return result.rowcount == 1
