"""Model-aware routing as the API sees it (issue #22): which live workers serve each model,
and the 503 for a model none serves. Reads the workers' announcements in the job database
(workers.db.presence); imports no torch."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from api.errors import ApiError
from fractal.naming import display_name
from workers.db import presence as presence_store
from workers.db.presence import LiveWorker
from workers.settings import Settings

__all__ = ["UNSERVED_RETRY_AFTER", "check_served", "serving", "warm_for"]

# A worker being started or restarted announces itself within seconds.
UNSERVED_RETRY_AFTER = 30


def serving(workers: Iterable[LiveWorker], model: str) -> list[LiveWorker]:
    return [worker for worker in workers if model in worker.models]


def warm_for(session: Session, settings: Settings, model: str) -> bool:
    """Whether a live worker serving ``model`` has finished its warm start."""
    live = presence_store.live_workers(session, settings.worker_presence_ttl)
    return any(worker.warm for worker in serving(live, model))


def check_served(session: Session, settings: Settings, models: Iterable[str]) -> None:
    """503 with Retry-After naming the first model no live worker serves. Only with a
    broker: the embedded mode's worker takes every model."""
    if settings.embedded or not settings.refuse_unserved_models:
        return
    live = presence_store.live_workers(session, settings.worker_presence_ttl)
    for model in dict.fromkeys(models):
        if not serving(live, model):
            name = display_name(model)
            raise ApiError(503, f"no live worker serves the model {name!r} now; try again "
                           f"later, or ask the operator to start one (`spec2fractal worker "
                           f"--models {name}`)",
                           headers={"Retry-After": str(UNSERVED_RETRY_AFTER)}, model=name)
