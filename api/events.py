"""GET /jobs/{id}/events: a job's life as Server-Sent Events, read from its row.

The database stays the one truth; what changed is *when* the row is read. Every stream of a
job follows one shared :class:`JobFeed`, which reads the row once when a worker signals the
job's start, progress or end (:mod:`workers.finish_signals`), and otherwise only every
``EVENTS_FALLBACK_SECONDS`` (``EVENTS_QUEUED_FALLBACK_SECONDS`` while the job is queued) in
case a signal was lost. So an open stream costs nothing while
its job waits, sixty streams of one job cost what one does, and a stream nobody reads holds
no more than the latest row. A late client is caught up from the row (queued, started, the
latest progress, the end).

Open streams are counted per key in each API process (:class:`StreamSlots`): past
``max_streams_per_key`` a new one is a 429 naming the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from api.errors import ApiError
from api.jobview import UrlMaker, job_out
from api.limits import (
    EVENTS_FALLBACK_SECONDS,
    EVENTS_MIN_GAP_SECONDS,
    EVENTS_QUEUED_FALLBACK_SECONDS,
    STREAM_RETRY_AFTER,
)
from api.polling import load_job
from workers.db import Database, Job, JobStatus
from workers.finish_signals import FinishListener

__all__ = ["JobFeed", "JobFeeds", "StreamSlots", "held_stream", "job_events"]

logger = logging.getLogger(__name__)


def _event(name: str, data: dict[str, Any], number: int) -> dict[str, str]:
    return {"event": name, "data": json.dumps(data), "id": str(number)}


def _shown(job: Job) -> tuple[Any, ...]:
    """What a stream can tell about a row: a new read that differs in none of it wakes none."""
    return (job.status, job.attempts, job.started_at, job.progress_step, job.progress_total,
            job.preview)


class JobFeed:
    """One job's row as last read, shared by every stream that follows the job."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.version = 0
        self.followers = 0
        self.task: asyncio.Task[None] | None = None
        self.signalled: asyncio.Event | None = None  # set: read the row now
        self._changed = asyncio.Event()

    def publish(self, job: Job) -> None:
        self.job = job
        self.version += 1
        # Every stream waiting on the old event wakes; later ones wait on the new one.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_past(self, version: int) -> None:
        """Until the row is newer than ``version``."""
        while self.version == version:
            await self._changed.wait()


class JobFeeds:
    """The feeds of one API process, one per job with at least one open stream."""

    def __init__(self, database: Database, listener: FinishListener, *,
                 fallback: float = EVENTS_FALLBACK_SECONDS,
                 queued_fallback: float = EVENTS_QUEUED_FALLBACK_SECONDS,
                 gap: float = EVENTS_MIN_GAP_SECONDS) -> None:
        self.database, self.listener = database, listener
        self.fallback, self.queued_fallback, self.gap = fallback, queued_fallback, gap
        self._feeds: dict[str, JobFeed] = {}
        self.reads = 0  # rows read, all feeds together (tests, benches)

    def __len__(self) -> int:
        return len(self._feeds)

    def wake_batch(self, batch_id: str) -> None:
        """This process changed the batch's items (a cancel): their feeds read them now."""
        for feed in self._feeds.values():
            if feed.job.batch_id == batch_id and feed.signalled is not None:
                feed.signalled.set()

    @contextlib.asynccontextmanager
    async def follow(self, job: Job) -> AsyncIterator[JobFeed]:
        feed = self._feeds.get(job.id)
        if feed is None:
            feed = self._feeds[job.id] = JobFeed(job)
            feed.task = asyncio.create_task(self._run(feed), name=f"job-feed-{job.id}")
        feed.followers += 1
        try:
            yield feed
        finally:
            feed.followers -= 1
            if feed.followers == 0 and self._feeds.get(job.id) is feed:
                del self._feeds[job.id]
                if feed.task is not None:
                    feed.task.cancel()

    async def _run(self, feed: JobFeed) -> None:
        job_id = feed.job.id
        with self.listener.watch(job_id, progress=True) as signalled:
            feed.signalled = signalled
            # The first read comes after the watch is in place: a signal sent between the
            # caller's read and now is not lost, it is this read.
            while True:
                try:
                    job = await load_job(self.database, job_id)
                    self.reads += 1
                except Exception as exc:  # the database away: the streams wait, then look
                    logger.warning("events of job %s: row unreadable: %s", job_id, exc)
                    job = None
                if job is not None:
                    if _shown(job) != _shown(feed.job):
                        feed.publish(job)
                    if JobStatus(job.status).finished:
                        return
                queued = feed.job.status == JobStatus.QUEUED
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(signalled.wait(),
                                           self.queued_fallback if queued else self.fallback)
                signalled.clear()
                # Signals that come close together (a batch's progress, a flood) make one read.
                await asyncio.sleep(self.gap)
                signalled.clear()


async def job_events(feeds: JobFeeds, job: Job, urls: UrlMaker) -> AsyncIterator[dict]:
    """Yields sse-starlette event dicts until the job has finished."""
    job_id = job.id
    number = 0
    queued_sent = False
    attempts_seen = 0
    progress_seen: tuple[int, int] | None = None
    async with feeds.follow(job) as feed:
        while True:
            version, current = feed.version, feed.job
            status = JobStatus(current.status)
            if not queued_sent:
                # Every job starts queued; a client arriving later is told so first anyway.
                queued_sent = True
                number += 1
                yield _event("queued", {"job_id": job_id, "created_at":
                                        job_out(current, urls).timings.created_at.isoformat()},
                             number)
            if current.started_at is not None and (current.attempts or 0) > attempts_seen:
                # A job retried after its worker died starts again: say so once per attempt.
                attempts_seen = current.attempts or 0
                progress_seen = None
                number += 1
                yield _event("started", {"job_id": job_id, "attempt": attempts_seen,
                                         "started_at": job_out(current, urls).timings
                                         .started_at.isoformat()},  # type: ignore[union-attr]
                             number)
            progress = (current.progress_step or 0, current.progress_total or 0)
            if progress[1] > 0 and progress != progress_seen:
                progress_seen = progress
                number += 1
                data: dict[str, Any] = {"job_id": job_id, "step": progress[0],
                                        "total": progress[1]}
                if current.preview and status is JobStatus.RUNNING:
                    data["preview"] = current.preview
                yield _event("progress", data, number)
            if status.finished:
                number += 1
                yield _event(status.value, job_out(current, urls).model_dump(mode="json"),
                             number)
                return
            await feed.wait_past(version)


class StreamSlots:
    """Open event streams per key in this process; ``None`` (auth off) is one key."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str | None, int] = {}

    def open(self, owner: str | None) -> int:
        return self._open.get(owner, 0)

    def take(self, owner: str | None) -> Callable[[], None]:
        """A slot, or a 429 naming the limit; returns the call that gives it back (once)."""
        held = self._open.get(owner, 0)
        if held >= self.limit:
            raise ApiError(429, f"this key already has {held} open event streams, the most "
                           f"allowed (max_streams_per_key); close one first",
                           headers={"Retry-After": str(STREAM_RETRY_AFTER)},
                           limit="max_streams_per_key", open_streams=held)
        self._open[owner] = held + 1
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if given_back:
                return
            given_back = True
            left = self._open.get(owner, 1) - 1
            if left > 0:
                self._open[owner] = left
            else:
                self._open.pop(owner, None)

        return give_back


class _HeldStream(EventSourceResponse):
    """An event stream that gives its key's slot back however it ends."""

    def __init__(self, *args: Any, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def held_stream(events: AsyncIterator[dict], release: Callable[[], None], *, ping: float,
                send_timeout: float) -> EventSourceResponse:
    """``send_timeout``: a client that reads nothing for that long (its socket's buffers are
    full) is cut off, and its slot freed."""
    return _HeldStream(events, release=release, ping=ping, send_timeout=send_timeout)
