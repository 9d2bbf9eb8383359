"""Model-aware routing (issue #22): a queue per model, interactive and batch, so a job only
reaches a worker that serves its model and no worker unloads one model to load another.

Only the distributed mode routes: the embedded mode's one worker takes every model from the
plain queues, as before. Queue names derive from model ids (which may be hub ids, with
slashes, or anything an operator configured) through a slug plus a short hash: safe as Redis
keys and Celery queue names, and two ids that slug alike still get their own queues.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

from workers.db.models import BATCH_QUEUE, INTERACTIVE_QUEUE
from workers.settings import Settings

__all__ = ["BASE_QUEUES", "BUILT_IN", "model_queue", "render_queue", "served_models",
           "worker_queues"]

BASE_QUEUES = (INTERACTIVE_QUEUE, BATCH_QUEUE)
BUILT_IN = "fractal"  # the built-in engine, always offered (as api.model_access lists it)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_SLUG_CHARS = 40


def model_queue(base: str, model: str) -> str:
    """``renders.<slug>-<hash>``: the queue of ``model``'s jobs of kind ``base``."""
    slug = _UNSAFE.sub("_", model).strip("_")[:_SLUG_CHARS] or "model"
    digest = hashlib.sha256(model.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{base}.{slug}-{digest}"


def render_queue(settings: Settings, base: str, model: str | None) -> str:
    """Where a render message of ``model`` goes: its model's queue with a broker, the plain
    queue in the embedded mode (or for a job of no model, which no caller makes)."""
    if settings.embedded or not model:
        return base
    return model_queue(base, model)


def served_models(settings: Settings) -> list[str]:
    """The models this worker serves: ``worker_models``, or else every model the server is
    configured to offer (default first), so a worker started as before still takes every
    job (an upgrade strands nothing)."""
    wanted = settings.worker_models or [settings.model, BUILT_IN, *settings.models]
    return list(dict.fromkeys(wanted))


def worker_queues(models: Iterable[str]) -> list[str]:
    """The queues a worker serving ``models`` consumes, in the order it looks at them: every
    model's interactive queue before any batch queue (Redis' BRPOP takes them in order)."""
    chosen: Sequence[str] = list(models)
    return [model_queue(base, model) for base in BASE_QUEUES for model in chosen]
