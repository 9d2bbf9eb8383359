"""Task messages in the job database: the embedded mode's queue.

With no broker configured, the database that holds the jobs carries the "run job X" and
"deliver webhook Y" messages too, through nothing but SQL. A message is *taken* with one
atomic update that hides it until its lease runs out, and *acknowledged* by deleting it once
its task has run: a worker that dies holding one lets it come back (at least once, as with
Redis's visibility timeout). Queues are looked at in the order given, so interactive work
always goes before batch items; within a queue, oldest first. A retry is the same message
made available again later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Select, Update, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from workers.db.models import QueueMessage, utcnow

__all__ = ["Message", "acknowledge", "count", "discard", "put", "put_many", "release", "take"]

_UNSYNCED = {"synchronize_session": False}


@dataclass(frozen=True)
class Message:
    id: int
    task: str
    kwargs: dict[str, Any]
    deliveries: int  # this delivery included: 1 the first time


def put(session: Session, task: str, kwargs: dict[str, Any], queue: str, *,
        delay: float = 0.0) -> None:
    put_many(session, task, [kwargs], queue, delay=delay)


def put_many(session: Session, task: str, kwargs: Iterable[dict[str, Any]], queue: str, *,
             delay: float = 0.0) -> int:
    """One message per ``kwargs``, in order, in one statement; how many."""
    available = utcnow() + timedelta(seconds=delay)
    rows = [{"queue": queue, "task": task, "kwargs": item, "available_at": available,
             "deliveries": 0} for item in kwargs]
    if rows:
        session.connection().execute(insert(QueueMessage), rows)
    return len(rows)


def _available(now: Any) -> Any:
    return (QueueMessage.available_at <= now,
            or_(QueueMessage.taken_until.is_(None), QueueMessage.taken_until < now))


@cache
def _take_statement() -> Update:
    now = bindparam("now")
    # SKIP LOCKED on PostgreSQL: workers taking at once pass over each other's rows instead
    # of queueing behind them (SQLite has no row locks: it runs writers one at a time).
    oldest = (select(QueueMessage.id)
              .where(QueueMessage.queue == bindparam("queue_name"), *_available(now))
              .order_by(QueueMessage.available_at, QueueMessage.id)
              .limit(1).with_for_update(skip_locked=True).scalar_subquery())
    # The conditions again on the row itself: of two takers that picked the same row, the
    # second updates nothing.
    return (update(QueueMessage).where(QueueMessage.id == oldest, *_available(now))
            .values(taken_until=bindparam("until"),
                    deliveries=QueueMessage.deliveries + 1)
            .returning(QueueMessage.id, QueueMessage.task, QueueMessage.kwargs,
                       QueueMessage.deliveries))


def take(session: Session, queues: Sequence[str], lease: float,
         now: datetime | None = None) -> Message | None:
    """The oldest available message of the first queue that has one, hidden for ``lease``
    seconds; None when every queue is empty (or its messages are taken or delayed)."""
    now = now or utcnow()
    connection = session.connection()
    for queue in queues:
        for _ in range(3):  # another worker took the row picked: pick again
            row = connection.execute(_take_statement(), {
                "queue_name": queue, "now": now, "until": now + timedelta(seconds=lease)}).first()
            if row is not None:
                return Message(row.id, row.task, row.kwargs, row.deliveries)
            if not _has_available(session, queue, now):
                break
    return None


def _has_available(session: Session, queue: str, now: datetime) -> bool:
    query = select(QueueMessage.id).where(QueueMessage.queue == queue,
                                          *_available(now)).limit(1)
    return session.connection().execute(query).first() is not None


def acknowledge(session: Session, message_id: int) -> None:
    """Its task ran: the message is gone."""
    session.connection().execute(delete(QueueMessage).where(QueueMessage.id == message_id))


def discard(session: Session, task: str, job_ids: Select[Any]) -> int:
    """Delete the messages of ``task`` whose ``job_id`` argument is one of ``job_ids`` (a
    query): work withdrawn before a worker ran it, e.g. a cancelled batch's items, which no
    worker should have to take one by one. How many."""
    result = session.connection().execute(
        delete(QueueMessage).where(QueueMessage.task == task,
                                   QueueMessage.kwargs["job_id"].as_string().in_(job_ids)))
    return result.rowcount


def release(session: Session, message_id: int, delay: float) -> None:
    """Deliver the message again in ``delay`` seconds (a retry)."""
    session.execute(update(QueueMessage).where(QueueMessage.id == message_id)
                    .values(taken_until=None,
                            available_at=utcnow() + timedelta(seconds=delay)),
                    execution_options=_UNSYNCED)


def count(session: Session, queue: str | None = None) -> int:
    """Messages waiting or taken, on ``queue`` or on every queue."""
    query = select(func.count()).select_from(QueueMessage)
    if queue is not None:
        query = query.where(QueueMessage.queue == queue)
    return session.connection().scalar(query) or 0
