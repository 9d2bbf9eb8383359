"""``spectral batch --server``'s renderer, which renders through ``Spec2FractalClient``,
against a real server with no worker: its jobs stay queued."""

from __future__ import annotations

import threading
import time

import httpx

from fractal import GenerationRequest
from spec2fractal.batch.items import Item
from spec2fractal.batch.render import Abandoned
from spec2fractal.batch.service import ServiceRenderer
from tests.client.conftest import Server
from tests.services import wait_for


def test_a_stopping_batch_abandons_its_render_and_cancels_the_job(quiet: Server) -> None:
    """Ctrl-C: a render waiting on its job is abandoned at once (the client's pauses end with
    the batch), and the job, which nobody will collect, is cancelled on the server."""
    key = quiet.keys["a"]
    renderer = ServiceRenderer(quiet.url, None, 1, api_key=key)
    item = Item(1, 1, "cd" * 32, GenerationRequest(prompt="a lake", seed=3, width=64,
                                                   height=48))
    stop = threading.Event()
    outcome: list[str] = []

    def render() -> None:
        try:
            renderer.render(item, 0, stop)
        except Abandoned:
            outcome.append("abandoned")

    def jobs() -> list[dict]:
        answer = httpx.get(f"{quiet.url}/jobs", headers={"Authorization": f"Bearer {key}"})
        return answer.raise_for_status().json()["jobs"]

    worker = threading.Thread(target=render)
    worker.start()
    try:
        wait_for(jobs, timeout=30, what="the item's job to be queued")
        time.sleep(1.5)  # the client's polls now pause a second at a time
        stopped = time.monotonic()
        stop.set()
        worker.join(10)
        assert outcome == ["abandoned"]
        assert time.monotonic() - stopped < 0.8  # a pause of up to 1 s ended with the batch
        [job] = jobs()
        assert job["status"] == "cancelled"
        assert job["request"]["prompt"] == "a lake" and job["model"] == renderer.name
    finally:
        stop.set()
        renderer.close()
