"""Co-rendering in the worker: compatible queued jobs share one pipeline call. On each
job database (``database_url``: SQLite and PostgreSQL)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fractal import Spec2Fractal
from tests.render_calls import render_calls
from workers.db import JobStatus, get_database
from workers.db import jobs as job_store
from workers.model_cache import ModelCache
from workers.runner import BUSY, WorkerContext, run_job
from workers.storage.local import LocalStorage


@pytest.fixture
def context(tmp_path: Path, tiny_sd: Path, database_url: str) -> WorkerContext:
    database = get_database(database_url)
    database.migrate()
    return WorkerContext(database=database, storage=LocalStorage(tmp_path / "images",
                         secret=b"t"), models=ModelCache(1), max_corender=4, stale_after=60)


def _job(context: WorkerContext, model: Path, **request: object) -> str:
    with context.database.session() as session:
        return job_store.create_job(session, job_id=job_store.new_job_id(), model=str(model),
                                    request={"steps": 3, **request}).id


def _status(context: WorkerContext, job_id: str):
    with context.database.session() as session:
        return job_store.get_job(session, job_id)


def _pixels(context: WorkerContext, job_id: str) -> np.ndarray:
    key = _status(context, job_id).outputs[0]["key"]
    return np.asarray(Image.open(io.BytesIO(context.storage.get(key)))).astype(np.int16)


def test_compatible_jobs_render_together_and_match_alone(context: WorkerContext,
                                                         tiny_sd: Path) -> None:
    ids = [_job(context, tiny_sd, prompt=f"a lake {k}", seed=k) for k in range(5)]
    other = _job(context, tiny_sd, prompt="a lake", seed=9, steps=4)  # incompatible: steps
    with render_calls(context.models.get(str(tiny_sd))) as calls:
        assert run_job(ids[0], context) == JobStatus.SUCCEEDED
    assert calls == [4]  # the first job and three partners, one call
    statuses = [_status(context, job_id).status for job_id in ids]
    assert statuses == ["succeeded"] * 4 + ["queued"]
    assert _status(context, other).status == "queued"
    # Each matches its request rendered on its own (±1: another summation order).
    alone = Spec2Fractal(str(tiny_sd))
    for k, job_id in enumerate(ids[:4]):
        single = np.asarray(alone.generate({"prompt": f"a lake {k}", "seed": k,
                                            "steps": 3})[0]).astype(np.int16)
        assert np.abs(_pixels(context, job_id) - single).max() <= 1
        assert _status(context, job_id).outputs[0]["record"]["seed"] == k
    # A partner's own task arrives later: finished, so nothing runs twice.
    assert run_job(ids[1], context) == JobStatus.SUCCEEDED
    assert _status(context, ids[1]).attempts == 1


def test_a_partner_held_by_a_live_worker_is_busy(context: WorkerContext, tiny_sd: Path) -> None:
    job_id = _job(context, tiny_sd, prompt="a lake", seed=1)
    with context.database.session() as session:
        assert job_store.start_job(session, job_id) is not None  # another worker claims it
    assert run_job(job_id, context) == BUSY
    stale = WorkerContext(database=context.database, storage=context.storage,
                          models=context.models, stale_after=0)
    assert run_job(job_id, stale) == JobStatus.SUCCEEDED  # a dead worker's claim is taken over
    assert _status(context, job_id).attempts == 2


def test_cancel_and_failure_stay_per_job(context: WorkerContext, tiny_sd: Path) -> None:
    ids = [_job(context, tiny_sd, prompt="a lake", seed=k) for k in range(3)]
    with context.database.session() as session:  # cancelled while queued: never claimed
        job_store.request_cancel(session, ids[2])
    bad = _job(context, tiny_sd, prompt="a lake", seed=5, style="Nope")
    assert run_job(ids[0], context) == JobStatus.SUCCEEDED
    assert [_status(context, job_id).status for job_id in ids] == [
        "succeeded", "succeeded", "cancelled"]
    assert run_job(bad, context) == JobStatus.FAILED
    assert "`style` is not a known style" in _status(context, bad).error


def test_corendering_off_renders_one_job(context: WorkerContext, tiny_sd: Path) -> None:
    context.max_corender = 1
    ids = [_job(context, tiny_sd, prompt="a lake", seed=k) for k in range(2)]
    run_job(ids[0], context)
    assert [_status(context, job_id).status for job_id in ids] == ["succeeded", "queued"]
