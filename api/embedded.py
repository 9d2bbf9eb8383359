"""The embedded shape's worker: a child process on the job database's queue, owned by the API."""

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

from workers.settings import Settings

__all__ = ["EmbeddedWorker", "settings_env"]

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
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "workers.embedded_worker", "--loglevel", "WARNING"]
        self.process = subprocess.Popen(
            command, env=settings_env(self.settings), stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        logger.info("embedded worker started (pid %d)", self.process.pid)

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
