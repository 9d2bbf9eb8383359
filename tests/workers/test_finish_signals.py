"""Workers' "job finished" signals reach waiting API processes: by UDP on one machine, by
Redis pub/sub when the broker is Redis; a wait ends on the signal, not on its next look."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from api.polling import wait_for_job
from tests.services import RedisServer
from workers.db import Database, JobStatus
from workers.db import jobs as job_store
from workers.finish_signals import listener_for, progress_signal, publish_quietly, publisher_for
from workers.model_cache import ModelCache
from workers.runner import WorkerContext, run_job
from workers.settings import Settings
from workers.storage.local import LocalStorage


@pytest.fixture(params=["datagram", "redis"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        return Settings(data_dir=tmp_path, broker_url=redis_server.url(5))
    return Settings(data_dir=tmp_path)


def test_a_signal_wakes_only_the_waiter_of_that_job(settings: Settings) -> None:
    async def scenario() -> tuple[bool, bool]:
        listener = listener_for(settings)
        await listener.start()
        try:
            await asyncio.sleep(0.2)  # the subscription is in place
            with listener.watch("job-a") as a, listener.watch("job-b") as b:
                await asyncio.to_thread(publish_quietly, publisher_for(settings), ["job-a"])
                await asyncio.wait_for(a.wait(), 2)
                return a.is_set(), b.is_set()
        finally:
            await listener.stop()

    assert asyncio.run(scenario()) == (True, False)


def test_a_wait_ends_on_the_signal_not_the_next_look(settings: Settings) -> None:
    database = Database(f"sqlite:///{settings.data_dir / 'jobs.db'}")
    database.migrate()
    with database.session() as session:
        job_store.create_job(session, job_id="j1", model="fractal", request={})

    def finish_later() -> float:
        time.sleep(0.5)
        with database.session() as session:
            job_store.finish_job(session, "j1", JobStatus.SUCCEEDED, outputs=[])
        publish_quietly(publisher_for(settings), ["j1"])
        return time.monotonic()

    async def scenario() -> tuple[str, float]:
        listener = listener_for(settings)
        await listener.start()
        try:
            await asyncio.sleep(0.2)
            finisher: list[float] = []
            thread = threading.Thread(target=lambda: finisher.append(finish_later()))
            thread.start()
            # Looks every 30 s: only the signal can end this wait in time.
            job = await wait_for_job(database, "j1", 10, listener, fallback=30)
            answered = time.monotonic()
            thread.join()
            assert job is not None
            return job.status, answered - finisher[0]
        finally:
            await listener.stop()

    status, delay = asyncio.run(scenario())
    assert status == "succeeded"
    assert delay < 0.5


def test_without_an_api_a_signal_is_dropped_quietly(tmp_path: Path) -> None:
    publish_quietly(publisher_for(Settings(data_dir=tmp_path)), ["nobody-listens"])
    broken = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0")
    publish_quietly(publisher_for(broken), ["redis-is-down"])  # logs, never raises


def test_progress_wakes_only_who_follows_progress(settings: Settings) -> None:
    """A sync POST /generate waits for the end alone: each progress signal would cost it a
    look at the database. Event streams follow progress too, and hear the end as well."""
    async def scenario() -> list[tuple[bool, bool]]:
        listener = listener_for(settings)
        await listener.start()
        publisher = publisher_for(settings)
        states = []
        try:
            await asyncio.sleep(0.2)  # the subscription is in place
            with listener.watch("job-p") as finished, \
                    listener.watch("job-p", progress=True) as followed:
                await asyncio.to_thread(publish_quietly, publisher, [progress_signal("job-p")])
                await asyncio.wait_for(followed.wait(), 2)
                await asyncio.sleep(0.1)
                states.append((finished.is_set(), followed.is_set()))
                followed.clear()
                await asyncio.to_thread(publish_quietly, publisher, ["job-p"])
                await asyncio.wait_for(finished.wait(), 2)
                await asyncio.wait_for(followed.wait(), 2)
                states.append((finished.is_set(), followed.is_set()))
            return states
        finally:
            await listener.stop()

    assert asyncio.run(scenario()) == [(False, True), (True, True)]


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def publish(self, job_ids: list[str]) -> None:
        self.sent.extend(job_ids)


def test_a_worker_signals_a_jobs_start_its_progress_and_its_end(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    database.migrate()
    recorder = _Recorder()
    context = WorkerContext(database=database, storage=LocalStorage(tmp_path / "images",
                            secret=b"test"), models=ModelCache(1), finished=recorder)
    with database.session() as session:
        job_store.create_job(session, job_id="jp", model="fractal", request={
            "prompt": "a lake", "width": 768, "height": 768, "steps": 30, "seed": 1})
    assert run_job("jp", context) == JobStatus.SUCCEEDED
    signal = progress_signal("jp")
    assert recorder.sent[0] == signal  # started: before any render step
    assert recorder.sent[-1] == "jp"  # the end
    steps = recorder.sent[1:-1]
    assert steps and set(steps) == {signal}  # progress, throttled as its writes are
    with database.session() as session:
        assert job_store.get_job(session, "jp").progress_total > 0
