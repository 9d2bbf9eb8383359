"""The embedded shape's workers: child processes on the job database's queue, owned by the API.

``spec2fractal serve --workers N`` starts N of them (workers.cpu_share picks the default and
each one's share of the cores); they take messages from the same table, whose take is
atomic, so each message goes to one of them."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from workers.cpu_share import thread_env, worker_count, worker_threads
from workers.held_jobs import ledger_path, read_held, record_held
from workers.settings import Settings

__all__ = ["EmbeddedWorker", "EmbeddedWorkers", "settings_env"]

logger = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0
PR_SET_PDEATHSIG = 1


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment under which a child process rebuilds exactly these settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump(mode="json").items():
        key = f"SPEC2FRACTAL_{name.upper()}"
        if value is None:
            env.pop(key, None)
        elif isinstance(value, list | dict):
            env[key] = json.dumps(value)  # what pydantic-settings reads back for a list
        else:
            env[key] = str(value)
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # If the server is killed outright, the worker must not live on as an orphan (Linux).
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedWorker:
    """One worker process; ``slot`` names its record of the jobs it holds."""

    def __init__(self, settings: Settings, slot: int = 0, threads: int | None = None) -> None:
        self.settings, self.slot, self.threads = settings, slot, threads
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def ledger(self) -> Path:
        return ledger_path(self.settings, self.slot)

    def start(self) -> None:
        command = [sys.executable, "-m", "workers.embedded_worker", "--loglevel", "WARNING",
                   "--slot", str(self.slot)]
        if self.threads is not None:
            command += ["--threads", str(self.threads)]
        record_held(self.ledger, [])  # a new process holds nothing yet
        self.process = subprocess.Popen(
            command, env={**settings_env(self.settings), **thread_env(self.threads)},
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        logger.info("embedded worker %d started (pid %d, %s thread(s))", self.slot,
                    self.process.pid, self.threads or "default")

    def held(self) -> list[str]:
        """The jobs this worker last said it held (for re-queueing when it died)."""
        return read_held(self.ledger)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Terminate (the task in hand finishes, no other starts), then kill if it does not
        go in time."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            logger.warning("embedded worker did not stop; killing it")
            process.kill()
            process.wait()
        logger.info("embedded worker stopped")

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)


class EmbeddedWorkers:
    """The server's worker processes: started, watched and stopped together."""

    def __init__(self, settings: Settings, count: int | None = None) -> None:
        count = count or worker_count(settings)
        threads = worker_threads(settings, count)
        self.workers = [EmbeddedWorker(settings, slot, threads) for slot in range(count)]

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    @property
    def alive(self) -> bool:
        return all(worker.alive for worker in self.workers)

    def dead(self) -> list[EmbeddedWorker]:
        return [worker for worker in self.workers if not worker.alive]

    def stop(self) -> None:
        # Terminate all first, so they finish their jobs in hand side by side.
        for worker in self.workers:
            if worker.alive:
                assert worker.process is not None
                worker.process.terminate()
        for worker in self.workers:
            worker.stop()

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)
