"""Celery tasks of the distributed mode: shells over :mod:`workers.handlers`. Each worker
process builds its context once and keeps its models loaded."""

from __future__ import annotations

from celery import Task
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from workers import handlers
from workers.celery_app import app
from workers.task_queue import RENDER_TASK

__all__ = ["render"]


@worker_ready.connect
def _warm_up(**_: object) -> None:
    handlers.start()


@worker_shutting_down.connect
def _finish_in_hand(**_: object) -> None:
    # Warm shutdown (SIGTERM): Celery lets the task at hand finish; it takes no partners.
    handlers.STOPPING.set()


@worker_shutdown.connect
def _stop_reconciler(**_: object) -> None:
    handlers.stop()


@app.task(name=RENDER_TASK, bind=True, ignore_result=True, max_retries=None)
def render(self: Task, job_id: str) -> None:
    delay = handlers.render(job_id)
    if delay is not None:
        raise self.retry(countdown=delay)
