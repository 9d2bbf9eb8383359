"""Queries on the worker_presence table: a worker's announcement, and the live workers
(those heard from within a time to live)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from workers.db.models import Job, JobStatus, WorkerPresence, utcnow

__all__ = ["LiveWorker", "announce", "forget", "live_workers", "queued_by_model"]


@dataclass(frozen=True)
class LiveWorker:
    name: str
    models: tuple[str, ...]
    loaded: tuple[str, ...]
    loads: dict[str, int]
    speed: dict[str, dict[str, Any]]
    warm: bool
    seen_at: datetime


def announce(session: Session, name: str, *, models: Sequence[str], loaded: Sequence[str],
             loads: dict[str, int], warm: bool, started_at: datetime,
             speed: dict[str, dict[str, Any]] | None = None) -> None:
    """Insert or refresh this worker's row (one writer per row: its own worker)."""
    row = session.get(WorkerPresence, name)
    now = utcnow()
    if row is None:
        session.add(WorkerPresence(name=name, models=list(models), loaded=list(loaded),
                                   loads=dict(loads), speed=dict(speed or {}), warm=warm,
                                   started_at=started_at,
                                   seen_at=now))
        return
    row.models, row.loaded, row.loads = list(models), list(loaded), dict(loads)
    row.speed = dict(speed or {})
    row.warm, row.seen_at = warm, now


def forget(session: Session, name: str) -> None:
    """A worker going down says so, so it stops counting at once rather than after the TTL."""
    session.execute(delete(WorkerPresence).where(WorkerPresence.name == name))


def live_workers(session: Session, ttl: float) -> list[LiveWorker]:
    since = utcnow() - timedelta(seconds=ttl)
    rows = session.scalars(select(WorkerPresence).where(WorkerPresence.seen_at >= since)
                           .order_by(WorkerPresence.name))
    return [LiveWorker(row.name, tuple(row.models), tuple(row.loaded), dict(row.loads),
                       dict(row.speed or {}), bool(row.warm), row.seen_at) for row in rows]


def queued_by_model(session: Session) -> dict[str, int]:
    """Queued jobs per model: the queue depth GET /models and /metrics show, in both modes
    (the job table is the truth; a broker's queue also holds messages of cancelled jobs)."""
    return dict(session.execute(select(Job.model, func.count())
                                .where(Job.status == JobStatus.QUEUED)
                                .group_by(Job.model)).all())
