"""A fault injector for test workers only: a job whose prompt holds MARKER kills its worker.

A test starts a worker with ``--include tests.workers.poison``; production workers never
import this module. Once the worker is ready, its models are wrapped so that rendering a
poisoned request SIGKILLs the whole worker process, the way a segfault in a model or the
kernel's out-of-memory killer would: after the job was claimed, in the middle of the work,
with no chance to clean up.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from celery.signals import worker_ready

MARKER = "☠ poison"

logger = logging.getLogger(__name__)


class _Poisoned:
    def __init__(self, model: Any) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate_many(self, requests: list[Any], **kwargs: Any) -> Any:
        if any(MARKER in (getattr(request, "prompt", None) or "") for request in requests):
            logger.error("poisoned request: this worker dies now")
            os.kill(os.getpid(), signal.SIGKILL)
        return self._model.generate_many(requests, **kwargs)


@worker_ready.connect(weak=False)
def _arm(**_: object) -> None:
    from workers.handlers import worker_context

    models = worker_context().models
    load = models.get
    models.get = lambda name: _Poisoned(load(name))  # type: ignore[method-assign]
    logger.warning("poison armed: a prompt containing %r kills this worker", MARKER)
