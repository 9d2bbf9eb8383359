"""Jobs the queue lost, found again and sent again.

The database is the truth about a job; the broker only carries "run job X" messages, and a
message can vanish: Redis restarted without its data, a send that failed after the job was
recorded, a worker killed while a partner it claimed still waited. The reconciler looks at
the job table every ``reconcile_interval`` seconds (with jitter) and

- re-sends a job still **queued** ``queued_lease`` seconds after it was last sent, but only
  while its own worker sits idle: a worker that waits for work while jobs wait for a worker
  means their messages are gone. A busy worker may just be working through a backlog (a
  batch of 10,000 items waits for hours), and re-sending that backlog every lease would
  flood the broker with duplicates;
- queues again, and re-sends, a job still **running** whose worker has not written (claim,
  progress, heartbeat) for ``job_lease`` seconds: that worker is gone.

Sending a job twice is harmless: a worker claims a job with one atomic update, so a
duplicate finds it running or finished and does nothing. A re-run counts an attempt; a job
past ``max_attempts`` is failed by the worker that receives it. Every worker process runs a
reconciler (a daemon thread, started by :mod:`workers.tasks`); a compare-and-set on
``enqueued_at`` keeps several of them from re-sending the same job in the same round.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from workers.db import Database, Job, recovery
from workers.db.models import utcnow

__all__ = ["Reconciler", "Resent"]

logger = logging.getLogger(__name__)

Send = Callable[[str, str], None]  # (job id, queue name) → sent, or raises


@dataclass
class Resent:
    """What one look found and re-sent."""

    queued: int = 0
    running: int = 0
    failed_sends: int = 0

    @property
    def total(self) -> int:
        return self.queued + self.running


class Reconciler:
    def __init__(self, database: Database, send: Send, *, queued_lease: float,
                 job_lease: float, interval: float,
                 idle: Callable[[], bool] = lambda: True) -> None:
        """``idle()``: whether this process's worker has been waiting for work (see above)."""
        self.database, self.send, self.idle = database, send, idle
        self.queued_lease, self.job_lease, self.interval = queued_lease, job_lease, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> Resent:
        """One look at the job table; re-sends what is overdue."""
        resent = Resent()
        with self.database.session() as session:
            overdue = [(job, "running") for job in
                       recovery.stale_running(session, self.job_lease)]
            if self.idle():
                overdue += [(job, "queued") for job in
                            recovery.stale_queued(session, self.queued_lease)]
        for job, why in overdue:
            outcome = self._resend(job, why)
            if outcome == "failed":
                resent.failed_sends += 1
            elif outcome == "sent":
                setattr(resent, why, getattr(resent, why) + 1)
        if resent.total or resent.failed_sends:
            logger.warning("reconciler: re-sent %d queued and %d running job(s); %d send(s) "
                           "failed", resent.queued, resent.running, resent.failed_sends)
        return resent

    def _resend(self, job: Job, why: str) -> str:
        previous, now = job.enqueued_at, utcnow()
        with self.database.session() as session:
            won = (recovery.mark_sent(session, job, at=now) if why == "queued"
                   else recovery.requeue_stale(session, job, self.job_lease, at=now))
            if not won:
                return "skipped"  # another reconciler re-sent it just now
        try:
            self.send(job.id, job.queue)
        except Exception as exc:  # the broker is down: try again at the next look
            logger.error("reconciler: could not re-send %s job %s: %s", why, job.id, exc)
            with self.database.session() as session:
                recovery.unmark_sent(session, job.id, at=now, previous=previous)
            return "failed"
        logger.info("reconciler: re-sent %s job %s (attempts so far: %d)", why, job.id,
                    job.attempts)
        return "sent"

    # -- the thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Look every ``interval`` seconds (±50 %, so workers started together spread out)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)
        self._thread.start()
        logger.info("reconciler started: queued lease %g s, job lease %g s, every ~%g s",
                    self.queued_lease, self.job_lease, self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval * random.uniform(0.5, 1.5)):
            try:
                self.run_once()
            except Exception:  # the database may be away for a moment; look again later
                logger.exception("reconciler: a look at the job table failed")
