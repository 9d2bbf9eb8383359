"""The embedded mode's queue: task messages in the job database (SQLite, its default, and
PostgreSQL, which an embedded server may use too), taken by a real loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from workers.datagrams import DatagramWaker
from workers.db import Database
from workers.db import messages as message_store
from workers.db.models import BATCH_QUEUE, INTERACTIVE_QUEUE, utcnow
from workers.embedded_worker import TASKS, MessageLoop
from workers.settings import Settings
from workers.task_queue import QUEUES, RENDER_TASK, TaskQueue, wake_folder


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path, database_url=database_url)


@pytest.fixture
def database(settings: Settings) -> Database:
    database = Database(settings.resolved_database_url)
    database.migrate()
    return database


def _take(database: Database, lease: float = 60.0, **kwargs: Any) -> message_store.Message | None:
    with database.session() as session:
        return message_store.take(session, QUEUES, lease, **kwargs)


def _count(database: Database) -> int:
    with database.session() as session:
        return message_store.count(session)


def test_interactive_messages_go_first_then_oldest_first(settings: Settings,
                                                         database: Database) -> None:
    queue = TaskQueue(settings)
    for n in range(3):
        queue.enqueue_render(f"batch{n}", BATCH_QUEUE)
    for n in range(2):
        queue.enqueue_render(f"renders{n}", INTERACTIVE_QUEUE)
    taken = []
    while (message := _take(database)) is not None:
        taken.append(message.kwargs["job_id"])
    assert taken == ["renders0", "renders1", "batch0", "batch1", "batch2"]


def test_a_taken_message_comes_back_when_its_lease_runs_out(settings: Settings,
                                                           database: Database) -> None:
    TaskQueue(settings).enqueue_render("a")
    first = _take(database, lease=30)
    assert first is not None and first.deliveries == 1
    assert _take(database) is None  # hidden while its worker may still run it
    # Its worker died holding it: once the lease is over, another takes it.
    again = _take(database, now=utcnow() + timedelta(seconds=31))
    assert again is not None and again.id == first.id and again.deliveries == 2
    with database.session() as session:
        message_store.acknowledge(session, again.id)
    assert _take(database, now=utcnow() + timedelta(hours=1)) is None
    assert _count(database) == 0


def test_a_released_message_waits_out_its_delay(settings: Settings,
                                                database: Database) -> None:
    TaskQueue(settings).send(RENDER_TASK, {"job_id": "a"}, delay=20)
    assert _take(database) is None
    message = _take(database, now=utcnow() + timedelta(seconds=21))
    assert message is not None
    with database.session() as session:
        message_store.release(session, message.id, 5)
    assert _take(database) is None
    assert _take(database, now=utcnow() + timedelta(seconds=6)) is not None


def test_concurrent_takers_never_share_a_message(settings: Settings,
                                                 database: Database) -> None:
    count = 200
    assert TaskQueue(settings).enqueue_many([f"job{n}" for n in range(count)]) == count
    taken: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        while (message := _take(database)) is not None:
            with lock:
                taken.append(message.kwargs["job_id"])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == sorted(f"job{n}" for n in range(count))


def test_a_waiting_worker_is_poked_by_a_send(settings: Settings, database: Database) -> None:
    waker = DatagramWaker(wake_folder(settings))
    try:
        assert not waker.wait(0)
        TaskQueue(settings).enqueue_render("a")
        assert waker.wait(10)  # woken by the send, not by the timeout
    finally:
        waker.close()


@pytest.fixture
def loop(settings: Settings, database: Database,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[MessageLoop, list[Any]]]:
    """A loop whose render task only records what it was given, and asks for one retry."""
    calls: list[Any] = []

    def render(attempt: int, kwargs: dict[str, Any]) -> float | None:
        calls.append((attempt, kwargs["job_id"]))
        if kwargs["job_id"] == "boom":
            raise RuntimeError("a task that fails")
        return 0.0 if kwargs["job_id"] == "again" and attempt == 1 else None

    monkeypatch.setitem(TASKS, RENDER_TASK, render)
    loop = MessageLoop(settings, database, stopping=threading.Event())
    thread = threading.Thread(target=loop.run)
    thread.start()
    try:
        yield loop, calls
    finally:
        loop.stop()
        thread.join(10)
        assert not thread.is_alive()


def _until(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_the_loop_runs_acknowledges_and_retries(settings: Settings, database: Database,
                                               loop: tuple[MessageLoop, list[Any]]) -> None:
    _, calls = loop
    queue = TaskQueue(settings)
    for job_id in ("boom", "again", "once"):
        queue.enqueue_render(job_id)
    _until(lambda: len(calls) == 4)
    # A failed task is done with (as Celery does); a retry comes back as attempt 2.
    assert sorted(calls) == [(1, "again"), (1, "boom"), (1, "once"), (2, "again")]
    _until(lambda: _count(database) == 0)


def test_an_unknown_task_is_dropped(settings: Settings, database: Database,
                                    loop: tuple[MessageLoop, list[Any]]) -> None:
    TaskQueue(settings).send("spec2fractal.no_such_task", {})
    _until(lambda: _count(database) == 0)
