"""Celery tasks. Each worker process builds its context once and keeps its models loaded."""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import Task
from celery.signals import worker_ready

from workers.celery_app import RENDER_TASK, app
from workers.db import get_database
from workers.model_cache import ModelCache
from workers.runner import BUSY, WorkerContext, run_job
from workers.settings import get_settings
from workers.storage import get_storage

__all__ = ["render", "worker_context"]

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def worker_context() -> WorkerContext:
    settings = get_settings()
    database = get_database(settings.resolved_database_url)
    database.migrate()
    return WorkerContext(
        database=database,
        storage=get_storage(settings),
        models=ModelCache(settings.model_cache_size, device=settings.device),
        png_level=settings.png_compress_level,
        time_limit=settings.task_soft_time_limit,
        stale_after=settings.task_time_limit,
        max_batch=settings.max_batch_size,
        batch_wait=settings.batch_wait_ms / 1000,
    )


@worker_ready.connect
def _warm_up(**_: object) -> None:
    context = worker_context()
    model = get_settings().warmup_model
    if model:
        logger.info("warming up %s", model)
        context.models.get(model)


@app.task(name=RENDER_TASK, bind=True, ignore_result=True, max_retries=None)
def render(self: Task, job_id: str) -> str:
    status = run_job(job_id, worker_context())
    if status == BUSY:
        # Another live worker holds the job (in a batch, say). Look again once its claim
        # could have gone stale, so a job is never lost if that worker dies.
        raise self.retry(countdown=get_settings().task_time_limit)
    return status
