"""A worker's announcement of itself (issue #22's routing): which models it serves, which
it holds loaded, how many loads it made, whether it is warm. One thread writes it to the job
database every ``worker_presence_interval`` seconds; the API reads the live rows for
GET /models, /ready, /metrics and POST /generate's check."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence

from workers.db import Database
from workers.db import presence as presence_store
from workers.db.models import utcnow
from workers.model_cache import ModelCache

__all__ = ["Presence", "worker_name"]

logger = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Presence:
    def __init__(self, database: Database, cache: ModelCache, models: Sequence[str], *,
                 interval: float, name: str | None = None) -> None:
        self.database, self.cache, self.models = database, cache, list(models)
        self.interval = interval
        self.name = name or worker_name()
        self.warm = False
        self.started_at = utcnow()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def announce(self) -> None:
        """Write the row now (blocking); failures are logged: the next beat may work."""
        try:
            with self.database.session() as session:
                presence_store.announce(
                    session, self.name, models=self.models, loaded=self.cache.loaded(),
                    loads=dict(self.cache.loads_by_model), speed=self.cache.speed(),
                    warm=self.warm,
                    started_at=self.started_at)
        except Exception:
            logger.exception("presence: the announcement of %s failed", self.name)

    def start(self) -> None:
        if self._thread is not None:
            return
        self.announce()
        self._thread = threading.Thread(target=self._loop, name="worker-presence",
                                        daemon=True)
        self._thread.start()

    def mark_warm(self) -> None:
        self.warm = True
        self.announce()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with self.database.session() as session:
                presence_store.forget(session, self.name)
        except Exception:
            logger.exception("presence: %s could not withdraw its row", self.name)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.announce()
