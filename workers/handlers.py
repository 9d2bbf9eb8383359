"""What a worker process holds and does for each task, whichever queue feeds it: Celery's
tasks (:mod:`workers.tasks`, :mod:`workers.webhook_tasks`) and the embedded worker's loop
(:mod:`workers.embedded_worker`) are thin shells over these functions."""

from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache
from typing import Any

from workers.db import get_database
from workers.finish_signals import publisher_for
from workers.model_cache import ModelCache
from workers.presence import Presence
from workers.reconciler import Reconciler
from workers.routing import served_models
from workers.runner import BUSY, WorkerContext, run_job
from workers.settings import get_settings
from workers.storage import get_storage
from workers.task_queue import TaskQueue
from workers.webhooks import attempt_delivery

__all__ = ["STOPPING", "deliver_webhook", "presence", "reconciler", "render", "start", "stop",
           "task_queue", "warm_models", "worker_context"]

logger = logging.getLogger(__name__)

# Set when the worker shuts down (warm): the job in hand finishes, it takes no partners.
STOPPING = threading.Event()


class _Activity:
    """Whether this worker is rendering, and since when it has not: the reconciler re-sends
    queued jobs only from a worker that has been waiting for work a while."""

    def __init__(self) -> None:
        self.running = 0
        self.since = time.monotonic()
        self.lock = threading.Lock()  # a threads pool renders several at once

    def __enter__(self) -> None:
        with self.lock:
            self.running += 1

    def __exit__(self, *_: object) -> None:
        with self.lock:
            self.running -= 1
            self.since = time.monotonic()

    def quiet_for(self, seconds: float) -> bool:
        return self.running == 0 and time.monotonic() - self.since >= seconds


_ACTIVITY = _Activity()


@lru_cache(maxsize=1)
def task_queue() -> TaskQueue:
    return TaskQueue(get_settings())


@lru_cache(maxsize=1)
def worker_context() -> WorkerContext:
    settings = get_settings()
    database = get_database(settings.resolved_database_url)
    database.migrate()
    return WorkerContext(
        database=database,
        storage=get_storage(settings),
        models=ModelCache(settings.model_cache_size, device=settings.device,
                          options=settings.model_options),
        png_level=settings.png_compress_level,
        time_limit=settings.task_soft_time_limit,
        stale_after=settings.task_time_limit,
        lease=settings.job_lease,
        max_attempts=settings.max_attempts,
        max_corender=settings.max_corender_size,
        corender_wait=settings.corender_wait_ms / 1000,
        stopping=STOPPING,
        finished=publisher_for(settings),
        requeue=lambda job_id, queue, delay: task_queue().enqueue_render(job_id, queue, delay),
        requeue_delay=settings.requeue_delay,
    )


@lru_cache(maxsize=1)
def reconciler() -> Reconciler:
    settings = get_settings()
    # Idle for a moment, not an instant: between two tasks the next message is on its way.
    quiet = min(settings.reconcile_interval, 5.0)
    return Reconciler(worker_context().database,
                      lambda job_id, queue: task_queue().enqueue_render(job_id, queue=queue),
                      queued_lease=settings.queued_lease, job_lease=settings.job_lease,
                      interval=settings.reconcile_interval,
                      idle=lambda: _ACTIVITY.quiet_for(quiet))


@lru_cache(maxsize=1)
def presence() -> Presence:
    settings = get_settings()
    return Presence(worker_context().database, worker_context().models,
                    served_models(settings), interval=settings.worker_presence_interval)


def warm_models() -> list[str]:
    """What a worker loads before its first job (/ready waits for the default model's).
    With a broker: the models it serves, as many as its cache holds (a job then never
    waits for a load). Embedded: the warm-up model, else the default one (its workers take
    every model, and the cache holds what the requests ask for)."""
    settings = get_settings()
    if settings.embedded:
        chosen = [settings.warmup_model or settings.model]
    else:
        chosen = [*filter(None, [settings.warmup_model]), *served_models(settings)]
    return list(dict.fromkeys(chosen))[:settings.model_cache_size]


def start() -> None:
    """Once a worker is up, before it takes a job: its reconciler runs, its models are
    loaded (warm start), and it announces what it serves and holds."""
    context = worker_context()
    # Every worker looks for lost jobs: with one worker or many, distributed or embedded,
    # a job whose message is gone is sent again.
    reconciler().start()
    announcer = presence()
    announcer.start()  # live but not warm: GET /models shows it loading
    warmed = True
    for model in warm_models():
        logger.info("warming up %s", model)
        try:
            context.models.get(model)
        except Exception:  # its jobs fail as they would have; the worker is not warm
            logger.exception("warm-up of %s failed", model)
            warmed = False
    if warmed:
        announcer.mark_warm()


def stop() -> None:
    """On shutdown: the reconciler stops, the worker withdraws its announcement."""
    reconciler().stop()
    presence().stop()


def render(job_id: str) -> float | None:
    """Run the job (with partners); seconds after which to try again, or None when done.

    No claimed job outlives this call still ``running`` (see :func:`run_job`), whatever
    went wrong: the task shells need no clean-up of their own."""
    with _ACTIVITY:
        status = run_job(job_id, worker_context())
    if status == BUSY:
        # Another live worker holds the job (in a batch, say). Look again once its claim
        # could have gone stale; the reconciler would re-send it too, but later.
        settings = get_settings()
        return float(min(settings.task_time_limit, settings.job_lease))
    return None


def deliver_webhook(attempt: int, event: dict[str, Any]) -> float | None:
    """One delivery attempt (1 the first time); seconds before the next, or None: done."""
    settings = get_settings()
    return attempt_delivery(event, attempt, settings,
                            get_database(settings.resolved_database_url))
