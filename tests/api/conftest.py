"""Real pieces only: a temp data folder, embedded workers as child processes on the queue in
its database,
the app in-process (TestClient) or served by uvicorn through ``api.cli.serve``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.api_server import serving
from workers.settings import Settings

WORKER_READY_SECONDS = 30
UNLOADABLE_MODEL = "/no/such/model"


def wait_ready(base: str, server: subprocess.Popen, *,  # type: ignore[type-arg]
               timeout: float = WORKER_READY_SECONDS) -> list[dict[str, Any]]:
    """Poll ``base``/ready until it answers 200; the 503 bodies seen meanwhile. Fails at once
    if ``server`` exits, and after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    waits: list[dict[str, Any]] = []
    while True:
        assert server.poll() is None, f"the server exited with code {server.poll()}"
        assert time.monotonic() < deadline, f"not ready after {timeout} s: {waits[-1:]}"
        try:
            response = httpx.get(base + "/ready", timeout=1)
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code == 200:
            return waits
        if response is not None:
            waits.append(response.json())
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("SPEC2FRACTAL_")}
    env.update({"SPEC2FRACTAL_DATA_DIR": str(data_dir), **extra})
    return env


def stop(process: subprocess.Popen, *, kill: bool = False) -> None:  # type: ignore[type-arg]
    if process.poll() is None:
        # Tests need no grace.
        process.kill() if kill else process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def start_worker() -> Iterator:
    """Starts embedded workers for a data folder (``env``: more SPEC2FRACTAL_ variables);
    waits for 'ready'; stops them afterwards."""
    started: list[subprocess.Popen] = []  # type: ignore[type-arg]

    def start(data_dir: Path, **env: str) -> subprocess.Popen:  # type: ignore[type-arg]
        process = subprocess.Popen(
            [sys.executable, "-m", "workers.embedded_worker", "--loglevel", "INFO"],
            env=env_for(data_dir, **env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        started.append(process)
        ready = threading.Event()

        def read() -> None:  # drain stderr so the worker never blocks on a full pipe
            assert process.stderr is not None
            for line in process.stderr:
                if " ready." in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        assert ready.wait(WORKER_READY_SECONDS), "the worker did not become ready"
        return process

    yield start
    for process in started:
        stop(process, kill=True)


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[TestClient]:
    """The app with no worker at all: jobs stay queued."""
    with TestClient(create_app(Settings(data_dir=tmp_path), start_worker=False)) as client:
        yield client


@pytest.fixture
def offline_on_each_database(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    """``offline`` on each job database: SQLite and PostgreSQL."""
    settings = Settings(data_dir=tmp_path, database_url=database_url)
    with TestClient(create_app(settings, start_worker=False)) as client:
        yield client


@pytest.fixture(scope="module")
def rendering(tmp_path_factory: pytest.TempPathFactory, start_worker) -> Iterator[TestClient]:
    """The app in-process, with a real worker (started by the fixture) on its queue."""
    data_dir = tmp_path_factory.mktemp("rendering")
    # The operator allows a model no worker can load, to see how that failure reads.
    settings = Settings(data_dir=data_dir, sync_timeout=30, models=[UNLOADABLE_MODEL])
    app = create_app(settings, start_worker=False)
    with TestClient(app) as client:  # lifespan: migrates before the worker looks
        start_worker(data_dir)
        yield client


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``spec2fractal serve`` in a child process: uvicorn, plus the embedded worker it starts."""
    with serving(tmp_path_factory.mktemp("served"), SPEC2FRACTAL_SYNC_TIMEOUT="30") as server:
        yield server.url
