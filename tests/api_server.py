"""``spec2fractal serve`` as a real child process, for the suites that talk to a server."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.services import HOST, ManagedProcess, free_port, service_env, wait_for

__all__ = ["ApiServer", "serving"]


@dataclass
class ApiServer:
    """``spec2fractal serve`` (uvicorn plus the embedded worker it starts) on a loopback port."""

    process: ManagedProcess
    url: str
    data_dir: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.contextmanager
def serving(data_dir: Path, *, timeout: float = 30, **env: str) -> Iterator[ApiServer]:
    """The server for ``data_dir``, ready (GET /ready is 200) before this yields, stopped
    after. ``env``: more variables, e.g. ``SPEC2FRACTAL_AUTH="required"``."""
    port = free_port()
    process = ManagedProcess(
        "api", [sys.executable, "-c", f"from api.cli import serve; serve(port={port})"],
        data_dir / "server.log",
        env=service_env({"SPEC2FRACTAL_DATA_DIR": str(data_dir), **env})).start()
    url = f"http://{HOST}:{port}"

    def ready() -> bool:
        return httpx.get(url + "/ready", timeout=1).status_code == 200

    try:
        wait_for(ready, timeout=timeout, what="the API to be ready", process=process)
        yield ApiServer(process, url, data_dir)
    finally:
        process.stop(grace=10)
