"""Sending render tasks by name, to the broker of *this* app's settings.

``workers.celery_app.enqueue_render`` is bound to the process-wide ``get_settings()``; an app
built with other settings (tests, several apps in one process) needs its own Celery client.
"""

from __future__ import annotations

import logging
from pathlib import Path

from celery import Celery
from kombu import Connection

from workers.celery_app import QUEUE, RENDER_TASK, celery_config
from workers.settings import Settings

__all__ = ["TaskQueue"]

logger = logging.getLogger(__name__)


class TaskQueue:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.celery = Celery("spec2fractal-api", set_as_current=False)
        self.celery.conf.update(celery_config(settings))

    def enqueue_render(self, job_id: str) -> None:
        """The payload is the job id alone: the worker reads everything else from the DB."""
        self.celery.send_task(RENDER_TASK, args=[job_id], queue=QUEUE)

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
