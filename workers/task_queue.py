"""Sending tasks by name to the queue of one ``Settings``: the Celery broker, or, in the
embedded mode (no broker), the job database's message table.

The API sends renders through it, and workers send webhook deliveries, retries and the
reconciler's re-sends; none of them imports task code. A process may hold queues of several
settings (tests, several apps in one process): each ``TaskQueue`` has its own connection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, event
from sqlalchemy.orm import Session

from workers.datagrams import DatagramSender
from workers.db import get_database
from workers.db import messages as message_store
from workers.db.models import BATCH_QUEUE, INTERACTIVE_QUEUE, Job
from workers.routing import render_queue
from workers.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["BATCH_QUEUE", "QUEUE", "QUEUES", "RENDER_TASK", "EnqueueError", "TaskQueue",
           "wake_folder"]

logger = logging.getLogger(__name__)

RENDER_TASK = "spec2fractal.render"
QUEUE = INTERACTIVE_QUEUE  # POST /generate
# Workers take from these in this order, always looking at the first one first: a batch
# item starts only when no interactive job waits.
QUEUES = (INTERACTIVE_QUEUE, BATCH_QUEUE)
WAKE_MESSAGE = b"message"


def wake_folder(settings: Settings) -> Path:
    """Where embedded workers register the ports they wait on for new messages."""
    return settings.data_dir / "wake"


class EnqueueError(Exception):
    """Sending stopped part-way: the first ``sent`` messages are on the queue, no others."""

    def __init__(self, sent: int, cause: Exception) -> None:
        super().__init__(f"{sent} sent, then: {cause}")
        self.sent = sent


class TaskQueue:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def _celery(self) -> Celery:
        from celery import Celery

        from workers.celery_app import celery_config

        app = Celery("spec2fractal-sender", set_as_current=False)
        app.conf.update(celery_config(self.settings))
        return app

    @cached_property
    def _waker(self) -> DatagramSender:
        return DatagramSender(wake_folder(self.settings))

    def send(self, task: str, kwargs: dict[str, Any], queue: str = QUEUE,
             delay: float | None = None, *, session: Session | None = None) -> None:
        """One task message; ``delay``: not run before that many seconds. In the embedded
        mode, ``session`` (of the job database) puts the message in that unit of work: it
        is sent when, and only if, the session commits."""
        if self.settings.embedded:
            if session is not None:
                message_store.put(session, task, kwargs, queue, delay=delay or 0.0)
                event.listen(session, "after_commit", lambda _: self._wake(), once=True)
                return
            database = get_database(self.settings.resolved_database_url)
            with database.session() as own:
                message_store.put(own, task, kwargs, queue, delay=delay or 0.0)
            self._wake()
        else:
            self._celery.send_task(task, kwargs=kwargs, queue=queue, countdown=delay)

    def _wake(self) -> None:
        self._waker.send([WAKE_MESSAGE])

    def enqueue_render(self, job_id: str, queue: str = QUEUE, delay: float | None = None,
                       *, model: str | None = None) -> None:
        """The payload is the job id alone: the worker reads everything else from the DB.
        With a broker it goes to the queue of the job's ``model`` (read from the job's row
        when not given: re-sends by the reconciler and the runner)."""
        if not self.settings.embedded and model is None:
            model = self._model_of(job_id)
        self.send(RENDER_TASK, {"job_id": job_id}, render_queue(self.settings, queue, model),
                  delay)

    def _model_of(self, job_id: str) -> str | None:
        """The job's model; None (the plain queue, which every worker also consumes) when
        its row cannot be read: a message on a queue beats one not sent."""
        try:
            with get_database(self.settings.resolved_database_url).session() as session:
                job = session.get(Job, job_id)
                return job.model if job is not None else None
        except Exception as exc:
            logger.warning("job %s: model unknown (%s): sent to the plain queue", job_id, exc)
            return None

    def enqueue_many(self, job_ids: Iterable[str], queue: str = BATCH_QUEUE,
                     models: Iterable[str] | None = None) -> int:
        """One task per job, in order; returns how many were sent. Raises EnqueueError,
        which tells how many were sent, on the first failure. ``models``: each job's model,
        in the same order (with a broker, each goes to its model's queue)."""
        sent = 0
        try:
            if self.settings.embedded:
                database = get_database(self.settings.resolved_database_url)
                with database.session() as session:  # all or none: one transaction
                    count = message_store.put_many(
                        session, RENDER_TASK, ({"job_id": job_id} for job_id in job_ids),
                        queue)
                self._wake()
                return count
            ids = list(job_ids)
            each = list(models) if models is not None else [None] * len(ids)
            with self._celery.producer_or_acquire() as producer:
                for job_id, model in zip(ids, each, strict=True):
                    if model is None:
                        model = self._model_of(job_id)
                    self._celery.send_task(RENDER_TASK, kwargs={"job_id": job_id},
                                           queue=render_queue(self.settings, queue, model),
                                           producer=producer)
                    sent += 1
        except Exception as exc:  # the database or the broker is down or refused
            raise EnqueueError(sent, exc) from exc
        return sent

    def withdraw(self, session: Session, job_ids: Select[Any]) -> int:
        """Take back the render messages of these jobs (cancelled while queued) where this
        queue allows it: in the embedded mode they are deleted in ``session``'s unit of work.
        A broker's messages stay; a worker meeting one skips it after one look at the row."""
        if not self.settings.embedded:
            return 0
        return message_store.discard(session, RENDER_TASK, job_ids)

    def check(self) -> None:
        """Raise unless the queue is reachable (blocking; run it in a thread)."""
        if self.settings.embedded:
            with get_database(self.settings.resolved_database_url).session() as session:
                message_store.count(session)  # the queue's table is there and readable
            return
        from kombu import Connection

        with Connection(self.settings.broker_url, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=3)
