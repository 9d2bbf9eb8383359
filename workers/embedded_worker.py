"""The embedded mode's worker: takes task messages from the job database and runs them.

With no broker configured, there is no Celery: the API (and workers, for retries, webhook
deliveries and the reconciler's re-sends) put messages in the job database's message table
(:mod:`workers.db.messages`) and poke the waiting workers with a loopback datagram
(:mod:`workers.datagrams`), so a message is taken at once; a look at the table every
``POLL_SECONDS`` covers a poke that went astray and a delayed retry coming due.

Guarantees, as with Celery on Redis: a message is acknowledged only once its task has run,
and comes back when its worker died holding it (the lease is twice the hard time limit, as
Redis' visibility timeout); interactive jobs before batch items; SIGTERM finishes the task
in hand, then exits. ``spec2fractal worker`` runs this loop when no broker is configured,
and ``spec2fractal serve`` starts it as its child (``python -m workers.embedded_worker``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from workers import handlers
from workers.cpu_share import apply_threads
from workers.datagrams import DatagramWaker
from workers.db import Database
from workers.db import messages as message_store
from workers.held_jobs import ledger_path, record_held
from workers.settings import Settings, get_settings
from workers.task_queue import QUEUES, RENDER_TASK, wake_folder
from workers.webhooks import DELIVER_TASK

__all__ = ["POLL_SECONDS", "TASKS", "MessageLoop", "main"]

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # the longest a message waits when its poke was lost


def _render(attempt: int, kwargs: dict[str, Any]) -> float | None:
    return handlers.render(kwargs["job_id"])


# Task name → handler(attempt, kwargs) → seconds before a retry, or None when done.
TASKS: dict[str, Callable[[int, dict[str, Any]], float | None]] = {
    RENDER_TASK: _render,
    DELIVER_TASK: handlers.deliver_webhook,
}


class MessageLoop:
    def __init__(self, settings: Settings, database: Database,
                 stopping: Any = handlers.STOPPING) -> None:
        self.settings, self.database, self.stopping = settings, database, stopping
        self.lease = 2.0 * settings.task_time_limit
        self.waker = DatagramWaker(wake_folder(settings))

    def stop(self) -> None:
        """From a signal handler or another thread: finish the task in hand, then return."""
        self.stopping.set()
        self.waker.wake()

    def run_once(self) -> bool:
        """Take one message and run its task; False if there was none."""
        with self.database.session() as session:
            message = message_store.take(session, QUEUES, self.lease)
        if message is None:
            return False
        handler = TASKS.get(message.task)
        delay = None
        if handler is None:
            logger.error("message %d: unknown task %r dropped", message.id, message.task)
        else:
            try:
                delay = handler(message.deliveries, message.kwargs)
            except Exception:  # as Celery does: the task failed, its message is done
                logger.exception("task %s %s failed", message.task, message.kwargs)
        with self.database.session() as session:
            if delay is None:
                message_store.acknowledge(session, message.id)
            else:
                message_store.release(session, message.id, delay)
        return True

    def run(self) -> None:
        """Until stopped: run every message there is, then wait for a poke."""
        try:
            while not self.stopping.is_set():
                try:
                    took = self.run_once()
                except Exception:  # the database away for a moment: look again later
                    logger.exception("the queue could not be read")
                    took = False
                if not took:
                    self.waker.wait(POLL_SECONDS)
        finally:
            self.waker.close()


def main(argv: list[str] | None = None) -> None:
    """The worker process: ``python -m workers.embedded_worker [--loglevel INFO]
    [--slot K] [--threads N]``; ``--slot``: its place among the server's workers, whose jobs
    in hand it records for the server (workers.held_jobs)."""
    parser = argparse.ArgumentParser(prog="python -m workers.embedded_worker")
    parser.add_argument("--loglevel", default="WARNING")
    parser.add_argument("--slot", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    options = parser.parse_args(argv)
    logging.basicConfig(level=options.loglevel.upper(),
                        format="[%(asctime)s: %(levelname)s/%(name)s] %(message)s")
    settings = get_settings()
    if not settings.embedded:
        sys.exit("a broker is configured: run `spec2fractal worker` (Celery) instead")
    apply_threads(options.threads)
    context = handlers.worker_context()  # migrates the database, reaches storage
    if options.slot is not None:
        path = ledger_path(settings, options.slot)
        context.heartbeat.ledger = lambda job_ids: record_held(path, job_ids)
    worker = MessageLoop(settings, context.database)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    handlers.start()
    name = f"embedded-worker-{os.getpid()}@{socket.gethostname()}"
    # On stderr whatever the log level: starters wait for this line.
    sys.stderr.write(f"{name} ready.\n")
    sys.stderr.flush()
    try:
        worker.run()
    finally:
        handlers.stop()


if __name__ == "__main__":
    main()
