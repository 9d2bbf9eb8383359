"""GET /jobs/{id}/events: streams are woken by the job's own signals, share one read of its
row, and one key holds at most max_streams_per_key of them open."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api.events import JobFeeds
from tests.api.auth_helpers import bearer, make_key
from tests.api.helpers import README_BODY, SMALL
from tests.api_server import serving
from tests.services import RedisServer
from workers.db import Database, JobStatus, get_database
from workers.db import jobs as job_store
from workers.db import presence as presence_store
from workers.db.models import utcnow
from workers.finish_signals import listener_for, progress_signal, publish_quietly, publisher_for
from workers.job_errors import RENDER_FAILED, JobError
from workers.settings import Settings

ASYNC = {"Prefer": "respond-async"}
STREAMS_PER_KEY = 3

BOOM = JobError(RENDER_FAILED, "boom")


@dataclass
class Server:
    url: str
    settings: Settings  # as the server has them: to play its worker from here
    alice: dict[str, str]
    bob: dict[str, str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
           ) -> Iterator[Server]:
    """``spec2fractal serve`` on a Redis broker that no worker takes from: jobs stay queued
    until the test, playing the worker, moves them on and signals it as a worker does."""
    data_dir = tmp_path_factory.mktemp("streams")
    broker = redis_server.url(7)
    settings = Settings(data_dir=data_dir, broker_url=broker, auth="required")
    alice, bob = bearer(make_key(settings, "alice")), bearer(make_key(settings, "bob"))
    # Playing the worker includes its announcement: a warm worker serving the default model
    # (else /ready and POST /generate would wait for one), live for the module's whole run.
    with get_database(settings.resolved_database_url).session() as session:
        presence_store.announce(session, "streams-test", models=[settings.model],
                                loaded=[settings.model], loads={settings.model: 1}, warm=True,
                                started_at=utcnow())
    with serving(data_dir, SPEC2FRACTAL_BROKER_URL=broker, SPEC2FRACTAL_AUTH="required",
                 SPEC2FRACTAL_RATE_LIMIT="", SPEC2FRACTAL_WORKER_PRESENCE_TTL="86400",
                 SPEC2FRACTAL_MAX_STREAMS_PER_KEY=str(STREAMS_PER_KEY)) as served:
        yield Server(served.url, settings, alice, bob)


def _queued_job(server: Server, key: dict[str, str]) -> str:
    response = httpx.post(server.url + "/generate", json={**README_BODY, **SMALL},
                          headers={**key, **ASYNC}, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["id"]


class Stream:
    """One open event stream, read event by event."""

    def __init__(self, stack: contextlib.ExitStack, server: Server, job_id: str,
                 key: dict[str, str]) -> None:
        client = stack.enter_context(httpx.Client(base_url=server.url, headers=key,
                                                  timeout=httpx.Timeout(10, read=10)))
        self.response = stack.enter_context(client.stream("GET", f"/jobs/{job_id}/events"))
        self.lines = self.response.iter_lines()

    def next_event(self) -> str:
        for line in self.lines:
            if line.startswith("event:"):
                return line[6:].strip()
        raise AssertionError("the stream ended")


def test_a_key_holds_at_most_max_streams_per_key_open_streams(server: Server) -> None:
    job_id = _queued_job(server, server.alice)
    with contextlib.ExitStack() as stack:
        streams = [Stream(stack, server, job_id, server.alice) for _ in range(STREAMS_PER_KEY)]
        for stream in streams:
            assert stream.response.status_code == 200
            assert stream.next_event() == "queued"
        refused = httpx.get(f"{server.url}/jobs/{job_id}/events", headers=server.alice,
                            timeout=10)
        assert refused.status_code == 429, refused.text
        assert refused.json()["limit"] == "max_streams_per_key"
        assert refused.json()["open_streams"] == STREAMS_PER_KEY
        assert "max_streams_per_key" in refused.json()["detail"]
        assert int(refused.headers["Retry-After"]) > 0
        # Another key's streams are its own.
        other = _queued_job(server, server.bob)
        assert Stream(stack, server, other, server.bob).next_event() == "queued"
    # Closed streams give their slots back (once the server sees the disconnect).
    deadline = time.monotonic() + 10
    while True:
        with contextlib.ExitStack() as stack:
            streams = [Stream(stack, server, job_id, server.alice)
                       for _ in range(STREAMS_PER_KEY)]
            if all(stream.response.status_code == 200 for stream in streams):
                break
        assert time.monotonic() < deadline, "slots were not given back"
        time.sleep(0.2)


def test_a_stream_moves_on_the_jobs_signals_not_on_a_poll(server: Server) -> None:
    """The API reads the row when the worker signals; without a signal it would read it
    only every EVENTS_FALLBACK_SECONDS (2 s; 10 s while queued). Here the test is the
    worker."""
    job_id = _queued_job(server, server.alice)
    database = get_database(server.settings.resolved_database_url)
    publisher = publisher_for(server.settings)
    with contextlib.ExitStack() as stack:
        stream = Stream(stack, server, job_id, server.alice)
        assert stream.next_event() == "queued"

        def step(change, signal: str) -> float:
            with database.session() as session:
                change(session)
            publish_quietly(publisher, [signal])
            return time.monotonic()

        # Without the signal: at the next look, 10 s on for a queued job, 2 s for a running
        # one. The bounds leave room for a loaded machine and still tell the two apart.
        sent = step(lambda session: job_store.start_job(session, job_id),
                    progress_signal(job_id))
        assert stream.next_event() == "started"
        assert time.monotonic() - sent < 5.0
        sent = step(lambda session: job_store.record_progress(session, job_id, 3, 10, None),
                    progress_signal(job_id))
        assert stream.next_event() == "progress"
        assert time.monotonic() - sent < 1.5
        sent = step(lambda session: job_store.finish_job(session, job_id, JobStatus.FAILED,
                                                         error=BOOM), job_id)
        assert stream.next_event() == "failed"
        assert time.monotonic() - sent < 1.5
        # ... and then the server ends the stream: no event follows.
        assert not [line for line in stream.lines if line.startswith("event:")]
    final = httpx.get(f"{server.url}/jobs/{job_id}", headers=server.alice, timeout=10).json()
    assert final["status"] == "failed"


def test_a_cancel_ends_the_jobs_streams_at_once(server: Server) -> None:
    """A queued job cancelled by the API ends with no worker to signal it: the cancel
    signals it itself."""
    job_id = _queued_job(server, server.alice)
    with contextlib.ExitStack() as stack:
        stream = Stream(stack, server, job_id, server.alice)
        assert stream.next_event() == "queued"
        sent = time.monotonic()
        assert httpx.post(f"{server.url}/jobs/{job_id}/cancel", headers=server.alice,
                          timeout=10).status_code == 200
        assert stream.next_event() == "cancelled"
        assert time.monotonic() - sent < 5.0  # a queued job's next look: 10 s on


def test_sixty_streams_of_one_job_read_its_row_once_per_signal(tmp_path: Path) -> None:
    """The reproduction: 60 open, unread streams of one job each read its row every 50 ms.
    Now they share one read per signal, and none between signals."""
    settings = Settings(data_dir=tmp_path)
    database = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    database.migrate()
    with database.session() as session:
        job = job_store.create_job(session, job_id="j60", model="fractal", request={})
    publisher = publisher_for(settings)

    async def follower(feeds: JobFeeds, seen: list[str]) -> None:
        async with feeds.follow(job) as feed:
            while True:
                version = feed.version
                if JobStatus(feed.job.status).finished:
                    seen.append(feed.job.status)
                    return
                await feed.wait_past(version)

    async def scenario() -> tuple[int, int, int, list[str], int]:
        listener = listener_for(settings)
        await listener.start()
        try:
            feeds = JobFeeds(database, listener, fallback=30, queued_fallback=30)
            seen: list[str] = []
            tasks = [asyncio.create_task(follower(feeds, seen)) for _ in range(60)]
            await asyncio.sleep(1.0)  # a second with no signal
            quiet = feeds.reads
            with database.session() as session:
                job_store.start_job(session, "j60")
            for step in range(1, 6):
                with database.session() as session:
                    job_store.record_progress(session, "j60", step, 10, None)
                await asyncio.to_thread(publish_quietly, publisher, [progress_signal("j60")])
                await asyncio.sleep(0.2)
            during = feeds.reads - quiet
            with database.session() as session:
                job_store.finish_job(session, "j60", JobStatus.SUCCEEDED, outputs=[])
            await asyncio.to_thread(publish_quietly, publisher, ["j60"])
            await asyncio.wait_for(asyncio.gather(*tasks), 5)
            return quiet, during, feeds.reads, seen, len(feeds)
        finally:
            await listener.stop()

    quiet, during, total, seen, left = asyncio.run(scenario())
    assert quiet == 1  # the first read; then nothing while nothing is signalled
    assert during == 5  # one read per signal, for all 60 streams together
    assert total == 7 and seen == ["succeeded"] * 60
    assert left == 0  # the last stream gone, its feed is gone


def test_without_signals_a_running_job_is_looked_at_more_often_than_a_queued_one(
        tmp_path: Path) -> None:
    """The looks for a lost signal: every EVENTS_FALLBACK_SECONDS while a job runs, rarer
    while it waits (a key's whole backlog may be followed, and nothing but a signalled claim
    or a cancel moves a queued job)."""
    settings = Settings(data_dir=tmp_path)
    database = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    database.migrate()
    with database.session() as session:
        waiting = job_store.create_job(session, job_id="waiting", model="fractal", request={})
        job_store.create_job(session, job_id="running", model="fractal", request={})
        running = job_store.start_job(session, "running")

    async def reads_in_a_second(job) -> int:  # type: ignore[no-untyped-def]
        listener = listener_for(settings)
        await listener.start()
        try:
            feeds = JobFeeds(database, listener, fallback=0.2, queued_fallback=30)
            async with feeds.follow(job):
                await asyncio.sleep(1.0)
            return feeds.reads
        finally:
            await listener.stop()

    assert asyncio.run(reads_in_a_second(waiting)) == 1
    assert asyncio.run(reads_in_a_second(running)) >= 3
