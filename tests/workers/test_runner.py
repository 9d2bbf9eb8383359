"""The job runner in-process: what it records for the outcomes a queue cannot see. On each
job database (``database_url``: SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from workers.db import JobStatus, get_database
from workers.db import jobs as job_store
from workers.model_cache import ModelCache
from workers.runner import WorkerContext, run_job
from workers.storage.local import LocalStorage


def _context(tmp_path: Path, database_url: str, **options: float) -> WorkerContext:
    database = get_database(database_url)
    database.migrate()
    return WorkerContext(database=database, storage=LocalStorage(tmp_path / "images",
                         secret=b"test"), models=ModelCache(1), **options)


def _job(context: WorkerContext, request: dict) -> str:
    with context.database.session() as session:
        return job_store.create_job(session, job_id=job_store.new_job_id(), model="fractal",
                                    request=request).id


def test_a_render_over_the_time_limit_fails_saying_so(tmp_path: Path,
                                                      database_url: str) -> None:
    context = _context(tmp_path, database_url, time_limit=0.05)
    job_id = _job(context, {"prompt": "a lake", "width": 1024, "height": 1024, "n": 8,
                            "seed": 1})
    assert run_job(job_id, context) == JobStatus.FAILED
    with context.database.session() as session:
        job = job_store.get_job(session, job_id)
    assert "longer than 0.05 s" in job.error
    assert job.outputs == []
    assert not (tmp_path / "images" / "renders" / job_id).exists()


def test_success_stores_image_and_record_then_marks_the_job(tmp_path: Path,
                                                            database_url: str) -> None:
    context = _context(tmp_path, database_url)
    job_id = _job(context, {"prompt": "a lake", "width": 64, "height": 48, "n": 2, "seed": 4})
    assert run_job(job_id, context) == JobStatus.SUCCEEDED
    with context.database.session() as session:
        job = job_store.get_job(session, job_id)
    assert [output["seed"] for output in job.outputs] == [4, 5]
    for output in job.outputs:
        assert context.storage.get(output["key"]).startswith(b"\x89PNG")
        assert b'"seed"' in context.storage.get(output["record_key"])
    # A finished job is not run again (a duplicate delivery is harmless).
    assert run_job(job_id, context) == JobStatus.SUCCEEDED
    with context.database.session() as session:
        assert job_store.get_job(session, job_id).attempts == 1


def _heartbeat_at(context: WorkerContext, job_id: str) -> object:
    with context.database.session() as session:
        return job_store.get_job(session, job_id).heartbeat_at


def test_one_heartbeat_thread_keeps_every_job_in_hand_alive_until_its_time_limit(
        tmp_path: Path, database_url: str) -> None:
    context = _context(tmp_path, database_url, lease=0.3, stale_after=0.6)
    first, second = _job(context, {"prompt": "a"}), _job(context, {"prompt": "b"})
    with context.database.session() as session:
        for job_id in (first, second):
            job_store.start_job(session, job_id)
    claimed = {job_id: _heartbeat_at(context, job_id) for job_id in (first, second)}
    before = set(threading.enumerate())
    with context.heartbeat.holding([first]), context.heartbeat.holding([second]):
        beaters = [thread for thread in set(threading.enumerate()) - before
                   if thread.name == "job-heartbeat"]
        assert len(beaters) == 1  # one thread for both jobs
        time.sleep(0.35)
        beaten = {job_id: _heartbeat_at(context, job_id) for job_id in (first, second)}
        assert all(beaten[job_id] > claimed[job_id] for job_id in (first, second))
        time.sleep(0.6)  # past the time limit: a stuck worker must lose its jobs
        stopped = _heartbeat_at(context, first)
        time.sleep(0.25)
        assert _heartbeat_at(context, first) == stopped
    beaters[0].join(1.0)  # nothing held: the thread ends after a quiet interval
    assert not beaters[0].is_alive()


def test_a_job_no_longer_held_gets_no_beats(tmp_path: Path, database_url: str) -> None:
    context = _context(tmp_path, database_url, lease=0.3)
    held, done = _job(context, {"prompt": "a"}), _job(context, {"prompt": "b"})
    with context.database.session() as session:
        for job_id in (held, done):
            job_store.start_job(session, job_id)
    with context.heartbeat.holding([held]):
        with context.heartbeat.holding([done]):
            pass
        released = _heartbeat_at(context, done)
        time.sleep(0.35)
        assert _heartbeat_at(context, held) > released
        assert _heartbeat_at(context, done) == released
