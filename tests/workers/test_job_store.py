"""The job store under contention, on SQLite and on PostgreSQL: many workers claiming the same
jobs at once claim each exactly once, and of the workers finishing a batch's last items at
once exactly one sends its completion. Real processes and threads, each with its own
connections, on the real claim functions of :mod:`workers.db.jobs`."""

from __future__ import annotations

import multiprocessing
import random
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from workers.db import Database, Job, JobStatus
from workers.db import batches as batch_store
from workers.db import jobs as job_store
from workers.db.models import utcnow
from workers.settings import Settings
from workers.webhooks import schedule_job_events

PROCESSES = 4
THREADS = 3  # claimers in each process
STALE_AFTER, LEASE = 600.0, 120.0  # what a worker passes: long enough for a live claim


def _claim_all(url: str, job_ids: list[str], barrier: Any, results: Any, seed: int) -> None:
    """One worker process: THREADS claimers, each trying every job once in an order of its
    own, one transaction per claim, as a worker does for each message it gets."""
    database = Database(url)
    claimed: list[str] = []
    start = threading.Barrier(THREADS)

    def claimer(index: int) -> None:
        order = list(job_ids)
        random.Random(seed * 100 + index).shuffle(order)
        start.wait()
        for job_id in order:
            with database.session() as session:
                job = job_store.start_job(session, job_id, stale_after=STALE_AFTER,
                                          lease=LEASE)
            if job is not None:
                assert job.id == job_id and job.status == JobStatus.RUNNING
                claimed.append(job_id)

    threads = [threading.Thread(target=claimer, args=(index,)) for index in range(THREADS)]
    barrier.wait()  # every process is connected and ready: now, all at once
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(claimed)


def _make_jobs(database: Database, count: int, **values: Any) -> list[str]:
    with database.session() as session:
        ids = [job_store.create_job(session, job_id=job_store.new_job_id(), model="fractal",
                                    request={"prompt": "a lake", "seed": n}).id
               for n in range(count)]
        if values:
            session.execute(update(Job).where(Job.id.in_(ids)).values(**values))
    return ids


def test_workers_claiming_at_once_claim_every_job_exactly_once(database_url: str) -> None:
    database = Database(database_url)
    database.migrate()
    long_ago = utcnow() - timedelta(hours=1)
    queued = _make_jobs(database, 40)
    # Running under a dead worker's claim (silent for an hour): each taken over once.
    dead = _make_jobs(database, 10, status=JobStatus.RUNNING, started_at=long_ago,
                      heartbeat_at=long_ago, attempts=1)
    # Running under a live claim, or finished, or cancelled while queued: never claimed.
    live = _make_jobs(database, 5, status=JobStatus.RUNNING, started_at=utcnow(),
                      heartbeat_at=utcnow(), attempts=1)
    done = _make_jobs(database, 5, status=JobStatus.SUCCEEDED, finished_at=utcnow())
    cancelled = _make_jobs(database, 5, status=JobStatus.CANCELLED, cancel_requested=True)
    everything = queued + dead + live + done + cancelled

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    processes = [context.Process(target=_claim_all,
                                 args=(database_url, everything, barrier, results, seed))
                 for seed in range(PROCESSES)]
    for process in processes:
        process.start()
    claims = [results.get(timeout=180) for _ in processes]
    for process in processes:
        process.join(30)
    assert [process.exitcode for process in processes] == [0] * PROCESSES

    counted = Counter(job_id for claimed in claims for job_id in claimed)
    assert {job_id for job_id, times in counted.items() if times > 1} == set(), \
        "claimed more than once"
    assert set(counted) == set(queued + dead)
    with database.session() as session:
        jobs = {job.id: job for job in session.query(Job)}
    assert all(jobs[job_id].status == JobStatus.RUNNING for job_id in queued + dead + live)
    # One claim, one attempt: the queued ones are at 1, the taken-over ones at 2.
    assert Counter(jobs[job_id].attempts for job_id in queued) == {1: len(queued)}
    assert Counter(jobs[job_id].attempts for job_id in dead) == {2: len(dead)}
    assert Counter(jobs[job_id].attempts for job_id in live) == {1: len(live)}
    assert [jobs[job_id].status for job_id in done + cancelled] == (
        [JobStatus.SUCCEEDED] * len(done) + [JobStatus.CANCELLED] * len(cancelled))


def test_workers_finishing_a_batch_at_once_send_its_completion_once(
        database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each worker finishes its item, then claims the batch's notification (in a transaction
    of its own, as the runner does): whoever finishes last sends it, and only one does."""
    database = Database(database_url)
    database.migrate()
    settings = Settings(data_dir=tmp_path)
    items = 6
    for round_ in range(5):
        batch_id = f"batch-{round_}"
        new = [batch_store.NewItem(job_id=job_store.new_job_id(), model="fractal",
                                   request={"prompt": "a lake", "seed": n})
               for n in range(items)]
        with database.session() as session:
            batch_store.create_batch(session, batch_id=batch_id, name=None, output_format="png",
                                     items=new, webhook_url="https://hooks.example/b")
            for item in new:
                assert job_store.start_job(session, item.job_id) is not None
        events: list[dict[str, Any]] = []
        start = threading.Barrier(items)

        def finish(job_id: str, start: threading.Barrier, events: list[dict[str, Any]]) -> None:
            start.wait()
            with database.session() as session:
                job_store.finish_job(session, job_id, JobStatus.SUCCEEDED, outputs=[])
            schedule_job_events(database, job_id, settings, send=events.append)

        threads = [threading.Thread(target=finish, args=(item.job_id, start, events))
                   for item in new]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        completions = [event for event in events if event["type"] == "batch.completed"]
        # schedule_job_events logs what goes wrong instead of raising.
        assert "webhook not scheduled" not in caplog.text
        assert len(completions) == 1, f"round {round_}: {len(completions)} completions"
        with database.session() as session:
            assert batch_store.get_batch(session, batch_id).notified_at is not None
