"""The job runner in-process: what it records for the outcomes a queue cannot see. On each
job database (``database_url``: SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from workers.db import Job, JobStatus, get_database
from workers.db import jobs as job_store
from workers.model_cache import ModelCache
from workers.runner import (
    INPUT_ERROR,
    INTERNAL_ERROR,
    STORE_INTERNAL_ERROR,
    WorkerContext,
    input_key,
    run_job,
)
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


def _png(width: int = 64, height: int = 48) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(buffer, format="PNG")
    return buffer.getvalue()


def _image_job(context: WorkerContext, seed: int, *, stored: bool = True,
               output_format: str = "png") -> str:
    """An image-to-image job as the API makes one: its input stored first, then its row."""
    job_id = job_store.new_job_id()
    if stored:
        context.storage.put(input_key(job_id), _png(), "image/png")
    with context.database.session() as session:
        job_store.create_job(session, job_id=job_id, model="fractal", input_key=input_key(job_id),
                             output_format=output_format,
                             request={"input_type": "hybrid", "prompt": "a stormy sea",
                                      "width": 64, "height": 48, "seed": seed})
    return job_id


def _get(context: WorkerContext, job_id: str) -> Job:
    with context.database.session() as session:
        job = job_store.get_job(session, job_id)
    assert job is not None
    return job


def test_a_job_whose_input_cannot_be_read_fails_at_once_and_its_partners_render(
        tmp_path: Path, database_url: str) -> None:
    # The default lease: a job left running would sit there for two minutes.
    context = _context(tmp_path, database_url, lease=120, max_batch=4, max_attempts=3)
    first, lost, last = (_image_job(context, seed) for seed in range(3))
    (tmp_path / "images" / input_key(lost)).unlink()  # gone from storage: no retry brings it
    started = time.monotonic()
    assert run_job(first, context) == JobStatus.SUCCEEDED
    assert time.monotonic() - started < 10
    failed = _get(context, lost)
    assert failed.status == JobStatus.FAILED and failed.error == INPUT_ERROR
    assert failed.attempts == 1 and failed.outputs == []
    assert "inputs/" not in failed.error  # no key, no path: the caller sees this text
    for job_id in (first, last):  # rendered in the same call, untouched by their partner
        job = _get(context, job_id)
        assert job.status == JobStatus.SUCCEEDED and len(job.outputs) == 1, job.error


def test_an_unexpected_error_storing_one_job_fails_it_at_once(tmp_path: Path,
                                                              database_url: str) -> None:
    # An output format this worker cannot encode (a row from a newer API, say): the encoder
    # raises a ValueError, not a StorageError nor a library error.
    context = _context(tmp_path, database_url, lease=120, max_batch=4)
    first = _image_job(context, 1)
    odd = _image_job(context, 2, output_format="bmp")
    started = time.monotonic()
    assert run_job(first, context) == JobStatus.SUCCEEDED
    assert time.monotonic() - started < 10
    job = _get(context, odd)
    assert job.status == JobStatus.FAILED and job.error == STORE_INTERNAL_ERROR
    assert "bmp" not in job.error  # the details are for the worker's log
    assert _get(context, first).status == JobStatus.SUCCEEDED


def test_a_job_whose_outcome_cannot_be_recorded_fails_and_its_partner_succeeds(
        tmp_path: Path) -> None:
    # SQLite: the trigger below is written in its dialect.
    context = _context(tmp_path, f"sqlite:///{tmp_path / 'jobs.db'}", lease=120, max_batch=4)
    first, refused = _job(context, {"prompt": "a", "seed": 1}), \
        _job(context, {"prompt": "b", "seed": 2})
    # The job database refuses to record one job's success (a constraint, a trigger, a
    # bug in the statement): the run must not end with that job left running.
    with context.database.engine.begin() as connection:
        connection.exec_driver_sql(
            f"CREATE TRIGGER refuse AFTER UPDATE OF status ON jobs "
            f"WHEN NEW.id = '{refused}' AND NEW.status = 'succeeded' "
            f"BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    assert run_job(refused, context) == JobStatus.FAILED
    job = _get(context, refused)
    assert job.status == JobStatus.FAILED and job.error == INTERNAL_ERROR
    assert _get(context, first).status == JobStatus.SUCCEEDED
