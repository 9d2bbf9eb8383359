"""The job runner in-process: what it records for the outcomes a queue cannot see."""

from __future__ import annotations

from pathlib import Path

from workers.db import JobStatus, get_database
from workers.db import jobs as job_store
from workers.model_cache import ModelCache
from workers.runner import WorkerContext, run_job
from workers.storage.local import LocalStorage


def _context(tmp_path: Path, **options: float) -> WorkerContext:
    database = get_database(f"sqlite:///{tmp_path / 'jobs.db'}")
    database.migrate()
    return WorkerContext(database=database, storage=LocalStorage(tmp_path / "images",
                         secret=b"test"), models=ModelCache(1), **options)


def _job(context: WorkerContext, request: dict) -> str:
    with context.database.session() as session:
        return job_store.create_job(session, job_id=job_store.new_job_id(), model="fractal",
                                    request=request).id


def test_a_render_over_the_time_limit_fails_saying_so(tmp_path: Path) -> None:
    context = _context(tmp_path, time_limit=0.05)
    job_id = _job(context, {"prompt": "a lake", "width": 1024, "height": 1024, "n": 8,
                            "seed": 1})
    assert run_job(job_id, context) == JobStatus.FAILED
    with context.database.session() as session:
        job = job_store.get_job(session, job_id)
    assert "longer than 0.05 s" in job.error
    assert job.outputs == []
    assert not (tmp_path / "images" / "renders" / job_id).exists()


def test_success_stores_image_and_record_then_marks_the_job(tmp_path: Path) -> None:
    context = _context(tmp_path)
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
