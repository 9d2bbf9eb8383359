"""The leases of the jobs a worker holds, kept alive by one background thread."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator

from workers.db import Database
from workers.db import jobs as job_store

__all__ = ["Heartbeat"]

logger = logging.getLogger(__name__)


class Heartbeat:
    """Keeps the leases of the jobs in hand while they load, render and upload.

    Progress writes beat too, but a model load, one long step or an upload retried with
    backoff writes nothing for a while. A job's beats stop at the hard time limit, so a
    worker stuck past it loses the job to the reconciler even while its process lives on.
    One thread per worker process beats for every job in hand, started with the first and
    ended after a quiet interval: a thread of each job's own cost a start and a join on the
    way to its answer.
    """

    def __init__(self, database: Database, lease: float | None,
                 stale_after: float | None) -> None:
        self.database, self.lease, self.stale_after = database, lease, stale_after
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}  # job id → when its beats stop
        self._late: set[str] = set()  # past it: warned about, no longer beaten for
        self._thread: threading.Thread | None = None
        # Told every job id in hand whenever they change: the embedded supervisor's record
        # of what to re-queue at once if this process dies (workers.held_jobs).
        self.ledger: Callable[[list[str]], None] | None = None
        self._held: list[str] = []

    @contextlib.contextmanager
    def holding(self, job_ids: list[str]) -> Iterator[None]:
        self._tell(job_ids, held=True)
        try:
            with self._beating(job_ids):
                yield
        finally:
            self._tell(job_ids, held=False)

    def _tell(self, job_ids: list[str], *, held: bool) -> None:
        if self.ledger is None:
            return
        with self._lock:
            if held:
                self._held += job_ids
            else:
                self._held = [job for job in self._held if job not in job_ids]
            try:
                self.ledger(list(self._held))
            except OSError:  # only a faster recovery is lost: the lease still covers it
                logger.exception("could not record the jobs in hand")

    @contextlib.contextmanager
    def _beating(self, job_ids: list[str]) -> Iterator[None]:
        if self.lease is None:
            yield
            return
        until = time.monotonic() + (self.stale_after or math.inf)
        with self._lock:
            self._until.update(dict.fromkeys(job_ids, until))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="job-heartbeat",
                                                daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                for job_id in job_ids:
                    self._until.pop(job_id, None)
                    self._late.discard(job_id)

    def _due(self) -> list[str] | None:
        """The jobs to beat for now; None when none are held (the thread then ends)."""
        now = time.monotonic()
        with self._lock:
            if not self._until:
                self._thread = None
                return None
            due = []
            for job_id, until in self._until.items():
                if now <= until:
                    due.append(job_id)
                elif job_id not in self._late:
                    self._late.add(job_id)
                    logger.warning("job %s passed its time limit: heartbeat stopped", job_id)
            return due

    def _run(self) -> None:
        assert self.lease is not None
        interval = max(0.1, self.lease / 3)
        while True:
            time.sleep(interval)
            job_ids = self._due()
            if job_ids is None:
                return
            if not job_ids:
                continue
            try:
                with self.database.session() as session:
                    job_store.heartbeat(session, job_ids)
            except Exception:  # the database may be briefly away; the next beat may work
                logger.exception("heartbeat for jobs %s failed", job_ids)
