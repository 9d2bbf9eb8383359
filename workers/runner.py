"""Jobs, start to finish: claim, render, store, record.

Celery calls this through ``workers.tasks``; nothing here knows about the queue, so the same
code runs in a distributed worker and in the embedded one. A worker that picks up a job also
claims compatible queued jobs (same model, size, steps, ...) and co-renders them: one pipeline
call for all, a GPU renders more images per second that way, and each job keeps its own progress,
cancel, failure and record.

Whatever goes wrong with one job (its input unreadable, its request unbuildable, its images
unstorable, an exception of any type) ends that job, and that job only, at once: ``failed``
with a caller-safe error, or ``queued`` again when its input could not be read because
storage did not answer (see :attr:`StorageError.transient`). A claimed job is never left
``running`` for its lease to run out, unless the job database itself cannot be written.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from fractal import (
    GenerationCancelled,
    GenerationRequest,
    ModelLoadError,
    Spec2FractalError,
    read_record,
)
from workers import job_errors
from workers.db import Database, Job, JobStatus
from workers.db import jobs as job_store
from workers.encoding import (
    CONTENT_TYPES,
    THUMBNAIL_EXTENSION,
    encode_image,
    encode_thumbnail,
    preview_data_url,
)
from workers.finish_signals import Publisher, progress_signal, publish_quietly
from workers.heartbeat import Heartbeat
from workers.job_errors import JobError
from workers.model_cache import ModelCache
from workers.partners import claim_partners
from workers.references import InputUnreadable, input_error, restore_references
from workers.storage import Storage, StorageError
from workers.webhooks import schedule_job_events

__all__ = ["BUSY", "INPUT_ERROR", "INPUT_UNAVAILABLE", "INTERNAL_ERROR", "STORAGE_ERROR",
           "STORE_INTERNAL_ERROR", "Requeue", "WorkerContext", "input_key", "output_key",
           "run_job"]

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.1  # seconds between progress writes: enough for a live progress bar
PREVIEW_INTERVAL = 0.25  # seconds between preview images: a JPEG each step would be waste
# Seconds between looks at a job's cancel flag. Each progress write reads it too, so with
# writes every PROGRESS_INTERVAL no look of its own falls due.
CANCEL_INTERVAL = 1.5 * PROGRESS_INTERVAL
BUSY = "busy"  # run_job's answer when another live worker holds the job
STORAGE_ERROR = JobError(job_errors.STORAGE_UNAVAILABLE, "image storage unavailable: the "
                         "image could not be stored; try again later")
# A job's input could not be read: missing or refused (its row is written only once it is
# stored), or storage did not answer on the job's last attempt.
INPUT_ERROR = input_error("image", transient=False)
INPUT_UNAVAILABLE = input_error("image", transient=True)
# Anything else unexpected: the details go to the worker's log, never to the caller.
INTERNAL_ERROR = JobError(job_errors.INTERNAL, "internal error while rendering")
STORE_INTERNAL_ERROR = JobError(job_errors.INTERNAL, "internal error while storing the images")

# (job id, queue name, delay in seconds) → a render message sent; raises if it cannot be.
Requeue = Callable[[str, str, float], None]

@dataclass
class WorkerContext:
    """What a worker process holds for its whole life: loaded once, reused by every job."""

    database: Database
    storage: Storage
    models: ModelCache
    png_level: int = 1
    # Celery's solo pool cannot enforce time limits, so the runner does, between steps.
    time_limit: float | None = None
    # A running job's claim older than this is a dead worker's: the job may run again.
    stale_after: float | None = None
    # So is one whose worker has not written (claim, progress, heartbeat) for this long.
    lease: float | None = None
    # A job whose worker was lost this many times fails instead of running again.
    max_attempts: int | None = None
    # Co-rendering: up to this many compatible jobs in one pipeline call, waiting this long
    # (seconds) for partners.
    max_corender: int = 1
    corender_wait: float = 0.0
    # Tells API processes the moment a job ends (None: they find out by looking).
    finished: Publisher | None = None
    # Set when the worker is shutting down: finish the jobs in hand, take no partners.
    stopping: threading.Event = field(default_factory=threading.Event)
    # Sends a re-queued job's message (None: the reconciler re-sends it after queued_lease).
    requeue: Requeue | None = None
    # Seconds a job whose input storage did not answer waits before its next attempt.
    requeue_delay: float = 10.0
    heartbeat: Heartbeat = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.heartbeat = Heartbeat(self.database, self.lease, self.stale_after)


def output_key(job_id: str, index: int, extension: str) -> str:
    """Keys derive from the job id alone, so a re-run overwrites instead of duplicating."""
    return f"renders/{job_id}/{index}.{extension}"


def input_key(job_id: str) -> str:
    return f"inputs/{job_id}.png"


class _Throttled:
    """``due()`` is true at most every ``interval`` seconds, and always when forced; the
    first time ``interval`` after it is made."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = time.monotonic()

    def due(self, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            return True
        return False


def _request_of(job: Job, storage: Storage) -> GenerationRequest:
    data = dict(job.request)
    if job.input_key:
        try:
            image = storage.get(job.input_key)
        except StorageError as exc:
            raise InputUnreadable(exc) from exc
        data["image"] = base64.b64encode(image).decode("ascii")
    restore_references(data, storage)  # the style reference and control images
    return GenerationRequest.from_dict(data)


def _store(context: WorkerContext, job: Job, images: list[Image.Image]) -> list[dict[str, Any]]:
    outputs = []
    for index, image in enumerate(images):
        key = output_key(job.id, index, job.output_format)
        record = read_record(image)
        record_data = record.to_dict() if record else {}
        data = encode_image(image, job.output_format, png_level=context.png_level)
        context.storage.put(key, data, CONTENT_TYPES[job.output_format])
        # Galleries and job views show this, not a 4K original of tens of megabytes.
        thumbnail_key = output_key(job.id, index, THUMBNAIL_EXTENSION)
        context.storage.put(thumbnail_key, encode_thumbnail(image), CONTENT_TYPES["webp"])
        record_key = output_key(job.id, index, "json")
        context.storage.put(record_key, json.dumps(record_data, indent=2).encode(),
                            "application/json")
        outputs.append({"index": index, "key": key, "record_key": record_key,
                        "thumbnail_key": thumbnail_key,
                        "seed": record_data.get("seed"), "width": image.width,
                        "height": image.height, "format": job.output_format,
                        "record": record_data})
    return outputs


class _JobHooks:
    """One job's progress reports and cancel checks, written to and read from its row."""

    def __init__(self, context: WorkerContext, job_id: str, deadline: float | None) -> None:
        # Made as the render starts, just after the claim found no cancel asked for: a render
        # shorter than the intervals costs no writes and no looks beyond its claim and end.
        self.context, self.job_id, self.deadline = context, job_id, deadline
        self.progress_gate = _Throttled(PROGRESS_INTERVAL)
        self.preview_gate, self.cancel_gate = _Throttled(PREVIEW_INTERVAL), \
            _Throttled(CANCEL_INTERVAL)
        self.cancelled = self.timed_out = False
        self.reached = (0, 0)  # (step, total): written with the job's end

    def progress(self, step: int, total: int, preview: Image.Image | None) -> None:
        # At most every PROGRESS_INTERVAL, previews less often still. The last step needs no
        # write of its own: the job's end follows at once and records the steps reached.
        self.reached = (step, total)
        if step == total or not self.progress_gate.due():
            return
        shown = preview if preview is not None and self.preview_gate.due() else None
        with self.context.database.session() as session:
            cancelled = job_store.record_progress(session, self.job_id, step, total,
                                                  preview_data_url(shown) if shown else None)
        # Its event streams look at the row now, not at a poll of their own (as throttled
        # as the write: a datagram or a Redis PUBLISH at most every PROGRESS_INTERVAL).
        publish_quietly(self.context.finished, [progress_signal(self.job_id)])
        # The write read the cancel flag too: no separate look is due for a while.
        self.cancelled = self.cancelled or cancelled
        self.cancel_gate.last = time.monotonic()

    def should_cancel(self) -> bool:
        # A caller's cancel is the more telling reason, so it is looked at first.
        if not self.cancelled and self.cancel_gate.due():
            with self.context.database.session() as session:
                self.cancelled = job_store.is_cancel_requested(session, self.job_id)
        if not self.cancelled and self.deadline is not None \
                and time.monotonic() > self.deadline:
            self.timed_out = True
            return True
        return self.cancelled


@dataclass
class _Outcome:
    status: JobStatus
    outputs: list[dict[str, Any]] | None = None
    error: JobError | None = None
    progress: tuple[int, int] | None = None  # (step, total) the render reached


def _outcome(context: WorkerContext, job: Job, result: Any, hooks: _JobHooks) -> _Outcome:
    """What became of one job: its images stored, or why not. Never raises."""
    if isinstance(result, BaseException):
        return _failure(context, job, result, hooks)
    try:
        return _Outcome(JobStatus.SUCCEEDED, _store(context, job, result),
                        progress=hooks.reached)
    except StorageError as exc:
        # Never succeeded without its objects: the retries are spent, so the job fails.
        logger.error("job %s: storage failed: %s", job.id, exc)
        return _Outcome(JobStatus.FAILED, error=STORAGE_ERROR, progress=hooks.reached)
    except Exception:  # an encoder's bug, a result of the wrong shape: this job's end only
        logger.exception("job %s: its images could not be stored", job.id)
        return _Outcome(JobStatus.FAILED, error=STORE_INTERNAL_ERROR, progress=hooks.reached)


def _failure(context: WorkerContext, job: Job, error: BaseException,
             hooks: _JobHooks) -> _Outcome:
    """The outcome of a job that ended in ``error`` before it had images."""
    if isinstance(error, GenerationCancelled):
        if hooks.timed_out:
            message = f"the render took longer than {context.time_limit:g} s and was stopped"
            return _Outcome(JobStatus.FAILED, error=JobError(job_errors.TIMEOUT, message),
                            progress=hooks.reached)
        return _Outcome(JobStatus.CANCELLED, progress=hooks.reached)
    if isinstance(error, Spec2FractalError):  # the library's errors are written for callers
        return _Outcome(JobStatus.FAILED, error=JobError.of(error), progress=hooks.reached)
    if isinstance(error, InputUnreadable):
        if error.transient and job.attempts < (context.max_attempts or 1):
            # Nothing was rendered yet, so another try costs little: storage may be back.
            logger.warning("job %s: input not read, queued again: %s", job.id, error)
            return _Outcome(JobStatus.QUEUED)
        logger.error("job %s: input not read: %s", job.id, error)
        return _Outcome(JobStatus.FAILED, error=input_error(error.field, error.transient))
    logger.error("job %s failed", job.id, exc_info=error)
    return _Outcome(JobStatus.FAILED, error=INTERNAL_ERROR, progress=hooks.reached)


def _render(context: WorkerContext, jobs: list[Job]) -> list[_Outcome]:
    """Each job's outcome. What fails for one job (its input, its request, its images) ends
    that job alone; an error that ends the whole pipeline call is that of every job in it."""
    deadline = time.monotonic() + context.time_limit if context.time_limit else None
    hooks = [_JobHooks(context, job.id, deadline) for job in jobs]
    results: list[Any] = []
    for job in jobs:
        try:
            results.append(_request_of(job, context.storage))
        except Exception as exc:
            results.append(exc)
    ready = [i for i, result in enumerate(results) if isinstance(result, GenerationRequest)]
    if ready:
        try:
            model = context.models.get(jobs[0].model)
            rendered = model.generate_many(
                [results[i] for i in ready],
                on_progress=[hooks[i].progress for i in ready],
                cancel=[hooks[i].should_cancel for i in ready],
            )
            for index, result in zip(ready, rendered, strict=True):
                results[index] = result
        except ModelLoadError as exc:
            for index in ready:
                results[index] = ModelLoadError(
                    f"model {jobs[0].model!r} could not be loaded: {exc}")
        except Exception as exc:  # each job's internal error, logged by _failure
            for index in ready:
                results[index] = exc
    return [_outcome(context, job, result, hook)
            for job, result, hook in zip(jobs, results, hooks, strict=True)]


def _completed(context: WorkerContext, job_id: str, status: JobStatus,
               job: Job | None = None) -> None:
    """Every job this worker ends passes here once, whichever way it ended. ``job``, its
    row as claimed, spares a look for webhooks when it has none (nor a batch)."""
    logger.info("job %s %s", job_id, status)
    publish_quietly(context.finished, [job_id])  # wakes an API waiting to answer with it
    if job is None or job.webhook_url or job.batch_id:
        schedule_job_events(context.database, job_id)  # sent by a task of their own


def _finish(context: WorkerContext, job: Job, outcome: _Outcome) -> JobStatus:
    """Record the outcome (a re-queue included); the job's status now."""
    if outcome.status is JobStatus.QUEUED:
        if _requeue(context, job):
            return JobStatus.QUEUED
        # A cancel was asked for while it was in hand: it ends here instead.
        outcome = _Outcome(JobStatus.CANCELLED)
    with context.database.session() as session:
        job_store.finish_job(session, job.id, outcome.status, outputs=outcome.outputs,
                             error=outcome.error, progress=outcome.progress)
    _completed(context, job.id, outcome.status, job)
    return outcome.status


def _requeue(context: WorkerContext, job: Job) -> bool:
    """Queue the job again and send its message, delayed; False if a cancel was asked for.

    The claim counted an attempt, so ``max_attempts`` bounds the re-queues."""
    with context.database.session() as session:
        if not job_store.requeue_job(session, job.id):
            return False
    if context.requeue is None:
        logger.warning("job %s queued again; the reconciler will send it", job.id)
        return True
    try:
        context.requeue(job.id, job.queue, context.requeue_delay)
    except Exception as exc:  # the broker is down: the job is queued, the reconciler sends it
        logger.error("job %s queued again, but its message was not sent: %s", job.id, exc)
    return True


def _fail_claimed(context: WorkerContext, jobs: list[Job]) -> None:
    """The jobs of a run that broke off: those still running end failed at once, so no
    caller waits out a lease for a worker that is not rendering them any more."""
    with context.database.session() as session:
        ended = job_store.fail_running(session, [job.id for job in jobs], INTERNAL_ERROR)
    for job in jobs:
        if job.id in ended:
            _completed(context, job.id, JobStatus.FAILED, job)


def _claim(context: WorkerContext, job_id: str) -> Job | str:
    """The claimed job, or the answer for a job this worker does not run now."""
    leases = {"stale_after": context.stale_after, "lease": context.lease}
    ended = None
    with context.database.session() as session:
        job = job_store.start_job(session, job_id, max_attempts=context.max_attempts, **leases)
        if job is not None:
            return job
        current = job_store.get_state(session, job_id)
        # Only a queued or running row can be a dead worker's to end. A finished one (each
        # item of a cancelled batch, thousands of messages) is skipped after this one look.
        if current is not None and not JobStatus(current.status).finished:
            # A dead worker's job that cannot run again ends here, with its reason.
            ended = job_store.cancel_abandoned(session, job_id, **leases)
            if ended is None and context.max_attempts is not None:
                ended = job_store.fail_exhausted(session, job_id,
                                                 max_attempts=context.max_attempts, **leases)
        answer = (ended or current).status if current is not None else "missing"
    if ended is not None:
        if ended.error:
            logger.error("job %s: %s", job_id, ended.error)
        _completed(context, job_id, JobStatus(answer))
    elif answer == JobStatus.RUNNING:
        return BUSY  # a live worker has it, perhaps co-rendering it with its own
    else:
        logger.info("job %s is not runnable (cancelled, finished or unknown)", job_id)
        # A job cancelled while queued ends with no worker: its webhooks go out from here.
        if current is not None and current.notice_due:
            schedule_job_events(context.database, job_id, unstarted_only=True)
    return answer


def run_job(job_id: str, context: WorkerContext) -> str:
    """Run the job (with compatible partners) if it wants running; returns its status.

    Once jobs are claimed, this returns only with each of them ended or queued again: one
    whose outcome could not be recorded, or whose run broke off, fails at once. It raises
    only when even that cannot be written (the job database is away); the leases of the
    jobs then bring them back.
    """
    job = _claim(context, job_id)
    if isinstance(job, str):
        return job
    jobs: list[Job] = [job]
    ended: dict[str, str] = {}  # job id → its status, once recorded
    try:
        jobs += claim_partners(context, job)
        if len(jobs) > 1:
            logger.info("job %s renders with %d partner(s)", job_id, len(jobs) - 1)
        # Started: their event streams say so now, not at the first progress (after a
        # model load).
        publish_quietly(context.finished, [progress_signal(other.id) for other in jobs])
        with context.heartbeat.holding([other.id for other in jobs]):
            outcomes = _render(context, jobs)
        for other, outcome in zip(jobs, outcomes, strict=True):
            try:  # each on its own: one that cannot be recorded takes no partner along
                ended[other.id] = _finish(context, other, outcome)
            except Exception:
                logger.exception("job %s: its outcome could not be recorded", other.id)
    except Exception:
        logger.exception("jobs %s: the run broke off", [other.id for other in jobs])
    unended = [other for other in jobs if other.id not in ended]
    if unended:
        _fail_claimed(context, unended)
    return ended.get(job_id, JobStatus.FAILED)
