"""Sending render tasks by name, to the broker of *this* app's settings.

``workers.celery_app.enqueue_render`` is bound to the process-wide ``get_settings()``; an app
built with other settings (tests, several apps in one process) needs its own Celery client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from celery import Celery
from kombu import Connection

from workers.celery_app import BATCH_QUEUE, QUEUE, RENDER_TASK, celery_config
from workers.settings import Settings

__all__ = ["EnqueueError", "TaskQueue"]

logger = logging.getLogger(__name__)


class EnqueueError(Exception):
    """Sending stopped part-way: the first ``sent`` messages are on the queue, no others."""

    def __init__(self, sent: int, cause: Exception) -> None:
        super().__init__(f"{sent} sent, then: {cause}")
        self.sent = sent


class TaskQueue:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.celery = Celery("spec2fractal-api", set_as_current=False)
        self.celery.conf.update(celery_config(settings))

    def enqueue_render(self, job_id: str, queue: str = QUEUE) -> None:
        """The payload is the job id alone: the worker reads everything else from the DB."""
        self.celery.send_task(RENDER_TASK, args=[job_id], queue=queue)

    def enqueue_many(self, job_ids: Iterable[str], queue: str = BATCH_QUEUE) -> int:
        """One task per job, in order, over one connection; returns how many were sent.
        Raises EnqueueError, which tells how many were sent, on the first failure."""
        sent = 0
        try:
            with self.celery.producer_or_acquire() as producer:
                for job_id in job_ids:
                    self.celery.send_task(RENDER_TASK, args=[job_id], queue=queue,
                                          producer=producer)
                    sent += 1
        except Exception as exc:  # kombu/redis errors: the broker is down or refused
            raise EnqueueError(sent, exc) from exc
        return sent

    def check(self) -> None:
        """Raise unless the broker is reachable (blocking; run it in a thread)."""
        if self.settings.embedded:
            # The file queue has no server: it is up when its folder is there.
            folder = Path(self.settings.queue_dir) / "messages"
            if not folder.is_dir():
                raise ConnectionError("queue folder is missing")
            return
        with Connection(self.settings.resolved_broker_url, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=3)
