"""The Celery application of the distributed mode (a broker such as Redis is configured).
Configured from Settings when first used, never at import time.

Run a worker with ``spec2fractal worker`` (or ``celery -A workers.celery_app worker``). With
no broker configured there is no Celery at all: the embedded mode's queue is a table in the
job database (:mod:`workers.embedded_worker`). Tasks are sent by name through
:class:`workers.task_queue.TaskQueue`, so no sender imports task code.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import celeryd_after_setup
from kombu import Queue

from workers.routing import served_models, worker_queues
from workers.settings import Settings, get_settings
from workers.task_queue import QUEUE, QUEUES

__all__ = ["app", "celery_config"]


def celery_config(settings: Settings) -> dict[str, Any]:
    if settings.broker_url is None:
        raise RuntimeError("no broker is configured (SPEC2FRACTAL_BROKER_URL): the embedded "
                           "mode queues in the job database, without Celery")
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": QUEUE,
        # A worker started without -Q consumes both, interactive first (-Q renders,batch).
        "task_queues": [Queue(name, routing_key=name) for name in QUEUES],
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,  # the database is the truth about a job
        # A job survives its worker: acknowledged only when done, re-queued if the worker dies.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Redis gone for a moment: the render in hand goes on (the job row is the truth);
        # its unacknowledged message comes back later and finds the job finished.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_time_limit,
        "worker_hijack_root_logger": False,
        "include": ["workers.tasks", "workers.webhook_tasks"],
        # Redis re-delivers an unacknowledged task after this long: longer than any render.
        "broker_transport_options": {
            "visibility_timeout": settings.task_time_limit * 2,
            "queue_order_strategy": "priority",  # BRPOP on the queues in -Q order
        },
    }


app = Celery("spec2fractal", set_as_current=False)
app.add_defaults(lambda: celery_config(get_settings()))


@celeryd_after_setup.connect
def _consume_model_queues(sender: str, instance: Any, **_: object) -> None:
    """Every worker consumes the queues of the models it serves (issue #22), whatever -Q
    it was started with: those name the plain queues, which only messages sent before an
    upgrade still use."""
    queues = instance.app.amqp.queues
    for name in worker_queues(served_models(get_settings())):
        queues.select_add(name)
