"""Object storage fails: SeaweedFS stopped while jobs render and upload.

Each test has a SeaweedFS of its own (``private_s3``), stopped with SIGKILL and started again
on the same ports with the same data, like a storage node that crashes and comes back. The
job database is PostgreSQL, as in production.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

from PIL import Image

from tests.render_stack import RenderStack
from tests.services import wait_for
from workers.db import JobStatus
from workers.runner import STORAGE_ERROR

SMALL = {"prompt": "a lake", "width": 256, "height": 192}
BIG = {"prompt": "a lake at dusk", "width": 1536, "height": 1536}


def test_uploads_ride_out_a_storage_outage(render_stack: Callable[..., RenderStack]) -> None:
    # botocore's standard retry mode pauses a random part (full jitter) of 1, 2, 4, 8, 16 and
    # then 20 s: 10 retries outlast an outage of 15 s in all but 1 run of 50,000 (10 s: 1 of
    # 3 million). 7 were not enough: a SeaweedFS restart on a loaded machine takes well over
    # the 3 s it takes on a quiet one. The task limits leave room for the longest wait.
    stack = render_stack(private_s3=True, settings={
        "storage_retries": "10", "task_time_limit": "240", "task_soft_time_limit": "230"})
    worker = stack.start_worker()
    ids = [stack.submit({**BIG, "seed": seed}) for seed in range(4)]
    stack.wait_for_progress(ids, 2, 9)  # the upload comes within a second
    down = time.monotonic()
    stack.s3.stop()
    time.sleep(1)
    stack.s3.restart()
    outage = time.monotonic() - down
    jobs = stack.wait(ids, timeout=180)
    assert [job.status for job in jobs] == [JobStatus.SUCCEEDED] * len(ids), \
        (f"outage {outage:.1f} s", [job.error for job in jobs])
    audit = stack.audit(ids)
    assert audit.clean, audit.summary()
    # No job lost its lease while it waited for storage: each ran once.
    assert set(audit.attempts.values()) == {1}
    assert "trying again after" in worker.log()


def test_a_job_fails_cleanly_when_storage_stays_down(
        render_stack: Callable[..., RenderStack]) -> None:
    # storage_retries 2: the budget is spent within 3 s (pauses of up to 1 and 2 s).
    stack = render_stack(private_s3=True, settings={"storage_retries": "2"})
    worker = stack.start_worker()
    stack.s3.stop()
    doomed = stack.submit({**SMALL, "seed": 1})
    [job] = stack.wait([doomed], timeout=30)
    assert job.status == JobStatus.FAILED
    assert (job.error, job.error_detail) == (STORAGE_ERROR.message, STORAGE_ERROR.to_dict())
    assert job.outputs == []
    assert job.attempts == 1
    assert "image storage unavailable: upload of" in worker.log()
    assert "failed after 3 attempts" in worker.log()

    stack.s3.restart()
    assert not [key for key in stack.objects() if doomed in key], "nothing half-stored"
    # Storage is back: new jobs succeed, with their objects, on the same worker.
    later = [stack.submit({**SMALL, "seed": seed}) for seed in (2, 3)]
    stack.wait(later, timeout=30)
    audit = stack.audit([doomed, *later])
    assert audit.clean, audit.summary()
    assert sorted(audit.succeeded) == sorted(later) and audit.failed == [doomed]


def test_a_job_whose_input_storage_is_down_runs_once_it_is_back(
        render_stack: Callable[..., RenderStack]) -> None:
    # No retries within a read: each attempt fails at once and the job is queued again, to
    # run a second later; attempts to spare for a slow restart of storage.
    stack = render_stack(private_s3=True, settings={
        "storage_retries": "0", "requeue_delay": "1", "max_attempts": "50"})
    worker = stack.start_worker()
    buffer = io.BytesIO()
    Image.new("RGB", (256, 192), "teal").save(buffer, format="PNG")
    job_id = stack.put_input(buffer.getvalue())
    stack.s3.stop()
    stack.submit({"input_type": "hybrid", "prompt": "a stormy sea", "width": 256,
                  "height": 192, "seed": 1}, stored_input=job_id)
    # Tried, then queued again: not failed, and not left running for its lease.
    wait_for(lambda: (job := stack.job(job_id)).status == "queued" and job.attempts >= 1,
             timeout=30, interval=0.05, what="the job to be queued again")
    assert "queued again" in worker.log()
    stack.s3.restart()
    [job] = stack.wait([job_id], timeout=60)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.attempts >= 2
    audit = stack.audit([job_id])
    assert audit.clean, audit.summary()
