"""Batches: many jobs at once, run after interactive ones; their progress, results, cancel."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.auth import Caller, CallerDep
from api.batching import create_batch, plan_batch
from api.deps import DatabaseDep, QueueDep, SettingsDep, StorageDep, StylesDep
from api.errors import ApiError, field_error
from api.idempotency import HEADER as IDEMPOTENCY_HEADER
from api.idempotency import Idempotency
from api.jobview import UrlMaker, job_out, link, utc
from api.jsonbody import JsonRoute
from api.limits import BATCH_RESULTS_CHUNK
from api.schemas import BatchBody, BatchCountsOut, BatchItemResult, BatchList, BatchOut
from workers.db import Batch, Database, Job, JobStatus
from workers.db import batches as batch_store
from workers.db.batches import BatchCounts
from workers.webhooks import DELIVER_TASK, schedule_batch_event

__all__ = ["router"]

router = APIRouter(prefix="/batches", tags=["batches"], route_class=JsonRoute)

NOT_FOUND = {404: {"description": "No such batch."}}
CSV_COLUMNS = ("index", "job_id", "status", "seed", "seeds", "urls", "error", "job_url",
               "parameters")


def _status(batch: Batch, counts: BatchCounts) -> Literal["running", "finished", "cancelled"]:
    if batch.cancel_requested:
        return "cancelled"
    return "finished" if counts.remaining == 0 else "running"


def batch_out(batch: Batch, counts: BatchCounts, request: Request) -> BatchOut:
    created = utc(batch.created_at)
    assert created is not None
    finished = counts.finished
    if counts.remaining == 0:
        eta: float | None = 0.0
    elif counts.mean_seconds is None:
        eta = None
    else:  # one worker's view: the mean render time for every item still to come
        eta = round(counts.mean_seconds * counts.remaining, 3)
    own = link(request, "get_batch", batch_id=batch.id)
    return BatchOut(
        id=batch.id, name=batch.name, status=_status(batch, counts), created_at=created,
        output_format=batch.output_format, total=batch.total,
        counts=BatchCountsOut(**counts.by_status), finished=finished,
        progress=round(finished / batch.total, 4) if batch.total else 1.0,
        images=counts.images, eta_seconds=eta, cancel_requested=bool(batch.cancel_requested),
        links={"self": own, "results": own + "/results",
               "results_csv": own + "/results?format=csv", "cancel": own + "/cancel"},
    )


def _load(database: Database, batch_id: str, owner: str | None
          ) -> tuple[Batch, BatchCounts] | None:
    with database.session() as session:
        batch = batch_store.get_batch(session, batch_id, owner)
        if batch is None:
            return None
        return batch, batch_store.counts_for(session, [batch_id])[batch_id]


async def _batch_or_404(database: Database, batch_id: str,
                        caller: Caller) -> tuple[Batch, BatchCounts]:
    # Another key's batch answers exactly as a batch that does not exist.
    found = await run_in_threadpool(_load, database, batch_id, caller.owner)
    if found is None:
        raise ApiError(404, "batch not found", batch_id=batch_id)
    return found


@router.post("", status_code=201, response_model=BatchOut,
             responses={401: {"description": "No API key, or not a valid one."},
                        409: {"description": "A request with this Idempotency-Key is still "
                                             "in progress."},
                        413: {"description": "Body too large."},
                        429: {"description": "Rate limit reached, or the key's quota of "
                                             "batch items (max_batch_items_per_key); see "
                                             "Retry-After."},
                        503: {"description": "The batch queue is full "
                                             "(max_queued_batch_items), or a backend is "
                                             "down; see Retry-After."}})
async def post_batch(body: BatchBody, request: Request, settings: SettingsDep,
                     database: DatabaseDep, storage: StorageDep, queue: QueueDep,
                     styles: StylesDep, caller: CallerDep,
                     idempotency_key: Annotated[str | None, Header(
                         alias=IDEMPOTENCY_HEADER, description="Retry safely: the same key "
                         "and body replay the first response.")] = None) -> JSONResponse:
    """Queue many renders: ``items`` (POST /generate bodies) or a ``template`` and a ``grid``
    whose Cartesian product makes the items. Every item is checked before anything is
    created. Items run after interactive POST /generate jobs."""
    idempotency = Idempotency.of(idempotency_key, database, settings, caller, "batches",
                                 body)

    async def work(guard: Idempotency) -> JSONResponse:
        plan = await run_in_threadpool(plan_batch, body, settings, styles,
                                       caller.owner is not None)
        batch_id = await run_in_threadpool(create_batch, plan, database, storage, queue,
                                           settings, caller.owner)
        await guard.attach(batch_id)
        batch, counts = await _batch_or_404(database, batch_id, caller)
        shown = batch_out(batch, counts, request)
        return JSONResponse(shown.model_dump(mode="json"), status_code=201,
                            headers={"Location": shown.links["self"]})

    return await idempotency.run(work)


@router.get("", response_model=BatchList)
async def list_batches(
    request: Request, database: DatabaseDep, caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> BatchList:
    """Newest first. Pass ``next_cursor`` back as ``cursor`` for the next page."""

    def read() -> tuple[list[tuple[Batch, BatchCounts]], str | None]:
        with database.session() as session:
            batches, next_cursor = batch_store.list_batches(session, owner=caller.owner,
                                                             cursor=cursor, limit=limit)
            counts = batch_store.counts_for(session, [batch.id for batch in batches])
            return [(batch, counts[batch.id]) for batch in batches], next_cursor

    try:
        rows, next_cursor = await run_in_threadpool(read)
    except ValueError:
        raise field_error(["query", "cursor"], "is not a cursor from this API",
                          cursor) from None
    return BatchList(batches=[batch_out(batch, counts, request) for batch, counts in rows],
                     next_cursor=next_cursor)


@router.get("/{batch_id}", response_model=BatchOut, responses=NOT_FOUND)
async def get_batch(batch_id: str, request: Request, database: DatabaseDep,
                    caller: CallerDep) -> BatchOut:
    batch, counts = await _batch_or_404(database, batch_id, caller)
    return batch_out(batch, counts, request)


def _result(job: Job, urls: UrlMaker) -> BatchItemResult:
    shown = job_out(job, urls)
    seeds = [out.seed for out in shown.outputs]
    return BatchItemResult(
        index=job.batch_index if job.batch_index is not None else -1, job_id=job.id,
        status=shown.status, parameters=shown.request,
        seed=seeds[0] if seeds else shown.request.get("seed"), seeds=seeds,
        urls=[out.url for out in shown.outputs],
        thumbnail_urls=[out.thumbnail_url for out in shown.outputs], error=shown.error,
        job_url=shown.links["self"])


def _results(database: Database, batch_id: str, urls: UrlMaker) -> Iterator[BatchItemResult]:
    """Every item in order, read a chunk at a time (a session per chunk, none held open)."""
    after = -1
    while True:
        with database.session() as session:
            jobs = batch_store.batch_jobs(session, batch_id, after=after,
                                          limit=BATCH_RESULTS_CHUNK)
        for job in jobs:
            yield _result(job, urls)
        if len(jobs) < BATCH_RESULTS_CHUNK:
            return
        after = jobs[-1].batch_index if jobs[-1].batch_index is not None else after + 1


def _ndjson(results: Iterator[BatchItemResult]) -> Iterator[str]:
    for result in results:
        yield json.dumps(result.model_dump(mode="json"), separators=(",", ":")) + "\n"


def _csv(results: Iterator[BatchItemResult]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for number, result in enumerate(results):
        writer.writerow([
            result.index, result.job_id, result.status,
            "" if result.seed is None else result.seed,
            " ".join("" if seed is None else str(seed) for seed in result.seeds),
            " ".join(result.urls), result.error or "", result.job_url,
            json.dumps(result.parameters, separators=(",", ":")),
        ])
        if number % 100 == 99:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@router.get("/{batch_id}/results", responses={
    **NOT_FOUND, 200: {"content": {"application/x-ndjson": {}, "text/csv": {}},
                       "description": "One line per item, in order: index, job_id, status, "
                                      "parameters, seed(s), fresh URLs, error."}})
async def batch_results(batch_id: str, request: Request, settings: SettingsDep,
                        database: DatabaseDep, storage: StorageDep, caller: CallerDep,
                        format: Literal["ndjson", "csv"] = "ndjson") -> StreamingResponse:
    """Streamed as NDJSON, or ``?format=csv`` (seeds and URLs joined by spaces)."""
    await _batch_or_404(database, batch_id, caller)
    results = _results(database, batch_id, UrlMaker(storage, settings, request))
    if format == "csv":
        return StreamingResponse(
            _csv(results), media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="batch-{batch_id}.csv"'})
    return StreamingResponse(_ndjson(results), media_type="application/x-ndjson")


@router.post("/{batch_id}/cancel", response_model=BatchOut,
             responses={**NOT_FOUND,
                        202: {"description": "Items still running stop at their next step."},
                        409: {"description": "Every item had already finished."}})
async def cancel_batch(batch_id: str, request: Request, settings: SettingsDep,
                       database: DatabaseDep, queue: QueueDep,
                       caller: CallerDep) -> JSONResponse:
    """Queued items are cancelled at once and never run; running ones stop soon; finished
    ones keep their images."""

    def cancel() -> tuple[Batch, BatchCounts, bool] | None:
        with database.session() as session:
            batch = batch_store.get_batch(session, batch_id, caller.owner)
            if batch is None:
                return None
            before = batch_store.counts_for(session, [batch_id])[batch_id]
            if before.remaining == 0 and not batch.cancel_requested:
                return batch, before, False
            batch_store.cancel_batch(session, batch_id)
            # Its queued work leaves the queue with it (embedded mode), so no worker spends
            # minutes taking thousands of messages only to skip them. In the same unit of
            # work: a message is gone only if its item is cancelled.
            queue.withdraw(session, batch_store.cancelled_items(batch_id))
            # With nothing left running, no worker will end an item and send the batch's
            # webhook: it goes from here (claimed once, whoever gets there first).
            schedule_batch_event(session, batch_id, settings, lambda event: queue.send(
                DELIVER_TASK, dict(event), session=session))
            return batch, batch_store.counts_for(session, [batch_id])[batch_id], True

    found = await run_in_threadpool(cancel)
    if found is None:
        raise ApiError(404, "batch not found", batch_id=batch_id)
    batch, counts, cancelled = found
    if cancelled:
        request.app.state.feeds.wake_batch(batch_id)  # its items' streams here end now
    shown = batch_out(batch, counts, request).model_dump(mode="json")
    if not cancelled:
        raise ApiError(409, "every item of the batch has already finished",
                       batch_id=batch_id, batch=shown)
    running = counts.by_status[JobStatus.RUNNING]
    return JSONResponse(shown, status_code=202 if running else 200)
