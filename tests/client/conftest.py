"""Real servers for the client tests, all on 127.0.0.1 sockets, API keys required.

- ``service``: ``spec2fractal serve`` in a child process with its embedded worker: renders.
- ``quiet``: the app under uvicorn in a thread with no worker at all, so jobs stay queued;
  tight limits (one unfinished job per key, two queued jobs) make real 429s and 503s.
- ``flaky``: a small HTTP proxy in front of ``service`` that answers 503 (Retry-After: 1)
  to the first requests it is told to refuse, then passes requests on.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn

from api.app import create_app
from tests.api.auth_helpers import make_key
from tests.api.conftest import free_port
from tests.api_server import serving
from tests.services import wait_for
from workers.settings import Settings

READY_SECONDS = 30


@dataclass
class Server:
    url: str
    key: str
    data_dir: Path
    keys: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("client-service")
    settings = Settings(data_dir=data_dir)
    key = make_key(settings, "client-tests")
    other = make_key(settings, "someone-else")
    with serving(data_dir, SPEC2FRACTAL_SYNC_TIMEOUT="30", SPEC2FRACTAL_AUTH="required",
                 SPEC2FRACTAL_RATE_LIMIT="1000/second") as api:
        yield Server(api.url, key, data_dir, {"other": other})


class _ThreadedUvicorn(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test process keeps its own
        pass


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("client-quiet")
    settings = Settings(data_dir=data_dir, auth="required", sync_timeout=0,
                        max_jobs_per_key=1, max_queued_jobs=2, rate_limit="")
    keys = {name: make_key(settings, name) for name in ("a", "b", "c", "d")}
    port = free_port()
    server = _ThreadedUvicorn(uvicorn.Config(create_app(settings, start_worker=False),
                                             host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: thread.is_alive() and httpx.get(url + "/ready", timeout=1).is_success,
             timeout=READY_SECONDS, what="the in-process API to be ready")
    yield Server(url, keys["a"], data_dir, keys)
    server.should_exit = True
    thread.join(10)


@dataclass
class Flaky:
    url: str
    refuse: int = 0  # how many more requests get a 503
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, key


@pytest.fixture
def flaky(service: Server) -> Iterator[Flaky]:
    """503 + Retry-After: 1 while ``refuse`` > 0, then a plain proxy to ``service``."""
    state = Flaky(url="")
    upstream = httpx.Client(base_url=service.url, timeout=60)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            state.seen.append((self.command, self.path, self.headers.get("Idempotency-Key")))
            if state.refuse > 0:
                state.refuse -= 1
                payload = b'{"detail": "the render queue is full; try again later"}'
                self.send_response(503)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {name: value for name, value in self.headers.items()
                       if name.lower() not in ("host", "content-length", "connection")}
            answer = upstream.request(self.command, self.path, content=body, headers=headers)
            self.send_response(answer.status_code)
            for name, value in answer.headers.items():
                if name.lower() not in ("content-length", "transfer-encoding", "connection",
                                        "content-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = _handle

        def log_message(self, *_: object) -> None:
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{proxy.server_address[1]}"
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield state
    proxy.shutdown()
    proxy.server_close()
    upstream.close()
