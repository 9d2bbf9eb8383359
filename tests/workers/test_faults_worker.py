"""Workers that die: SIGKILL mid-render, a job that kills every worker it reaches, SIGTERM.

Real processes throughout (redis-server, PostgreSQL, SeaweedFS, Celery workers; see
:class:`tests.render_stack.RenderStack`). The worker settings are FAULT_SETTINGS: a 2 s job
lease and a reconciler every ~0.5 s, so lost jobs come back within seconds, while Redis's
own re-delivery (after 2 × 60 s) never gets the chance in these tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from tests.render_stack import RenderStack
from tests.services import CeleryWorker, wait_for
from tests.workers.poison import MARKER
from workers.db import JobStatus
from workers.db.jobs import exhausted_error

# A render of about a second on this machine: long enough to be caught in the middle.
BIG = {"prompt": "a lake at dusk", "width": 1536, "height": 1536}
SMALL = {"prompt": "a lake", "width": 256, "height": 192}
STREAM = 12


def _succeeded_once(stack: RenderStack, ids: Sequence[str], max_attempts: int = 2) -> None:
    audit = stack.audit(ids)
    assert audit.clean, audit.summary()
    assert len(audit.succeeded) == len(ids), audit.summary()
    assert max(audit.attempts.values()) <= max_attempts, audit.attempts
    for job_id in ids:  # exactly one set of objects: an image, its record and thumbnail
        assert sorted(key for key in stack.objects() if f"/{job_id}/" in key) == [
            f"renders/{job_id}/0.json", f"renders/{job_id}/0.png",
            f"renders/{job_id}/0.thumb.webp"]


def test_a_worker_killed_mid_render_loses_and_duplicates_nothing(
        render_stack: Callable[..., RenderStack]) -> None:
    stack = render_stack()
    worker = stack.start_worker()
    ids = [stack.submit({**BIG, "seed": seed}) for seed in range(STREAM)]
    # Mid-stream: some jobs done, one in the middle of its render, the rest still queued.
    wait_for(lambda: sum(job.status == JobStatus.SUCCEEDED for job in stack.jobs(ids)) >= 3,
             timeout=60, what="the first jobs to finish")
    victim = stack.wait_for_progress(ids, 2, 6)
    worker.kill()
    killed = stack.job(victim.id)
    assert killed.status == JobStatus.RUNNING and killed.attempts == 1
    assert 0 < killed.progress_step < killed.progress_total, "killed mid-render"
    before = {job.id: job.status for job in stack.jobs(ids)}
    assert list(before.values()).count(JobStatus.QUEUED) >= 1, "killed mid-stream"

    stack.start_worker()
    stack.wait(ids, timeout=90)
    _succeeded_once(stack, ids)
    assert stack.job(victim.id).attempts == 2  # the killed render ran again, once
    # Jobs that had not been claimed when the worker died ran exactly once.
    assert all(stack.job(job_id).attempts == 1
               for job_id, status in before.items() if status == JobStatus.QUEUED)


def _supervise(stack: RenderStack, ids: Sequence[str], worker: CeleryWorker,
               start: Callable[[], CeleryWorker], timeout: float) -> int:
    """Restart the worker whenever it dies, as systemd or Docker would, until every job has
    finished; returns how many times it died."""
    deaths, deadline = 0, time.monotonic() + timeout
    while not all(job.status in ("succeeded", "failed") for job in stack.jobs(ids)):
        assert time.monotonic() < deadline, [(job.status, job.attempts)
                                             for job in stack.jobs(ids)]
        if not worker.running:
            deaths += 1
            worker = start()
        time.sleep(0.05)
    return deaths


def test_a_poison_job_fails_after_max_attempts_and_the_queue_drains(
        render_stack: Callable[..., RenderStack]) -> None:
    stack = render_stack()

    def start() -> CeleryWorker:
        return stack.start_worker(include=["tests.workers.poison"])

    worker = start()
    poison = stack.submit({**SMALL, "prompt": f"a lake {MARKER}", "seed": 1})
    # Compatible jobs: the first time, the poisoned one takes a batch of them down with it.
    good = [stack.submit({**SMALL, "seed": seed}) for seed in range(2, 8)]
    deaths = _supervise(stack, [poison, *good], worker, start, timeout=120)

    job = stack.job(poison)
    assert job.status == JobStatus.FAILED
    assert job.attempts == 3 == deaths  # max_attempts, one worker lost on each
    assert job.error == exhausted_error(3) and job.error_detail["code"] == "worker_lost"
    assert not [key for key in stack.objects() if poison in key]
    # Every other job succeeded, at most once more than needed (when it shared the first,
    # fatal batch), and a worker is still there, serving.
    _succeeded_once(stack, good)
    later = stack.submit({**SMALL, "seed": 9})
    assert stack.wait([later], timeout=30)[0].status == JobStatus.SUCCEEDED


def test_sigterm_lets_the_running_job_finish(render_stack: Callable[..., RenderStack]) -> None:
    stack = render_stack()
    worker = stack.start_worker()
    running = stack.submit({**BIG, "seed": 1})
    stack.wait_for_progress([running], 2, 6)
    waiting = stack.submit({**BIG, "width": 1024, "seed": 2})  # not a batch partner
    worker.terminate()  # warm shutdown, as `docker stop` starts one
    assert worker.process.wait(timeout=30) == 0
    assert "Warm shutdown" in worker.log()
    job = stack.job(running)
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 1
    # The worker took nothing new on its way out; the next worker does.
    assert stack.job(waiting).status == JobStatus.QUEUED
    assert stack.job(waiting).attempts == 0
    stack.start_worker()
    stack.wait([waiting], timeout=30)
    _succeeded_once(stack, [running, waiting], max_attempts=1)


def test_a_job_cut_off_after_sigterm_runs_again(
        render_stack: Callable[..., RenderStack]) -> None:
    """The orchestrator's patience ends before the render (SIGKILL after SIGTERM): the job
    goes back to the queue and the next worker renders it."""
    stack = render_stack()
    worker = stack.start_worker()
    ids = [stack.submit({**BIG, "width": 3072, "height": 3072, "seed": 1}),
           stack.submit({**SMALL, "seed": 2})]
    stack.wait_for_progress(ids[:1], 1, 6)
    worker.terminate()
    time.sleep(0.1)  # `docker stop -t 0.1`
    worker.kill()
    assert stack.job(ids[0]).status == JobStatus.RUNNING, "the render was still going"
    stack.start_worker()
    stack.wait(ids, timeout=60)
    _succeeded_once(stack, ids)
    assert stack.job(ids[0]).attempts == 2
