"""Jobs: read one, list them, cancel one, follow one as Server-Sent Events."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api.auth import Caller, CallerDep
from api.deps import DatabaseDep, SettingsDep, StorageDep
from api.errors import ApiError, field_error
from api.events import held_stream, job_events
from api.jobview import UrlMaker, job_out
from api.jsonbody import JsonRoute
from api.limits import EVENTS_PING_SECONDS, EVENTS_SEND_TIMEOUT_SECONDS
from api.model_access import allowed_models
from api.polling import load_job
from api.schemas import JobList, JobOut
from fractal.naming import display_name
from workers.db import Database, Job, JobStatus
from workers.db import jobs as job_store
from workers.finish_signals import publish_quietly
from workers.settings import Settings

__all__ = ["router"]

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=JsonRoute)

StatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
NOT_FOUND = {404: {"description": "No such job."}}


async def _job_or_404(database: Database, job_id: str, caller: Caller) -> Job:
    # Another key's job answers exactly as a job that does not exist.
    job = await load_job(database, job_id, caller.owner)
    if job is None:
        raise ApiError(404, "job not found", job_id=job_id)
    return job


def _stored_models(name: str, settings: Settings) -> list[str]:
    """The configured models a filter names (by id or shown name), as jobs store them."""
    found = [stored for stored in allowed_models(settings)
             if name in (stored, display_name(stored))]
    if not found:
        raise field_error(["query", "model"], "this server does not serve that model", name,
                          choices=[display_name(stored) for stored in allowed_models(settings)])
    return found


@router.get("", response_model=JobList)
async def list_jobs(
    request: Request, settings: SettingsDep, database: DatabaseDep, storage: StorageDep,
    caller: CallerDep, limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    status: StatusName | None = None,
    style: Annotated[str | None, Query(max_length=255, description="Only this style's jobs."
                                       )] = None,
    model: Annotated[str | None, Query(max_length=255, description="Only jobs on this model "
                                       "(an id from GET /models).")] = None,
) -> JobList:
    """Newest first. Pass ``next_cursor`` back as ``cursor`` for the next page."""
    models = None if model is None else _stored_models(model, settings)

    def read() -> tuple[list[Job], str | None]:
        with database.session() as session:
            return job_store.list_jobs(session, status=status, owner=caller.owner,
                                      cursor=cursor, limit=limit, style=style, models=models)

    try:
        jobs, next_cursor = await run_in_threadpool(read)
    except ValueError:
        raise field_error(["query", "cursor"], "is not a cursor from this API",
                          cursor) from None
    urls = UrlMaker(storage, settings, request)
    return JobList(jobs=[job_out(job, urls) for job in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=NOT_FOUND)
async def get_job(job_id: str, request: Request, settings: SettingsDep, database: DatabaseDep,
                  storage: StorageDep, caller: CallerDep) -> JobOut:
    job = await _job_or_404(database, job_id, caller)
    return job_out(job, UrlMaker(storage, settings, request))


@router.post("/{job_id}/cancel", response_model=JobOut,
             responses={**NOT_FOUND, 202: {"description": "Running: stops at its next step."},
                        409: {"description": "Already succeeded or failed."}})
async def cancel_job(job_id: str, request: Request, settings: SettingsDep,
                     database: DatabaseDep, storage: StorageDep,
                     caller: CallerDep) -> JSONResponse:
    """A queued job is cancelled at once and never runs; a running one stops soon."""

    def cancel() -> Job | None:
        with database.session() as session:
            before = job_store.get_job(session, job_id, caller.owner)
            if before is None:
                return None
            job = job_store.request_cancel(session, job_id)
        if job is not None and before.status == JobStatus.QUEUED \
                and job.status == JobStatus.CANCELLED:
            # Ended here, by no worker: the job's streams (in any API process) hear it as
            # they would a worker's finish signal.
            publish_quietly(request.app.state.signals, [job_id])
        return job

    job = await run_in_threadpool(cancel)
    if job is None:
        raise ApiError(404, "job not found", job_id=job_id)
    shown = job_out(job, UrlMaker(storage, settings, request)).model_dump(mode="json")
    status = JobStatus(job.status)
    if status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        raise ApiError(409, f"the job has already {status.value}", job_id=job_id, job=shown)
    return JSONResponse(shown, status_code=202 if status is JobStatus.RUNNING else 200)


@router.get("/{job_id}/events", responses={
    **NOT_FOUND, 200: {"content": {"text/event-stream": {}},
                       "description": "queued, started, progress..., then succeeded, "
                                      "failed or cancelled; then the stream ends."},
    429: {"description": "This key already has max_streams_per_key open streams (or its "
                         "rate limit is reached); see Retry-After."}})
async def job_events_stream(job_id: str, request: Request, settings: SettingsDep,
                            database: DatabaseDep, storage: StorageDep,
                            caller: CallerDep) -> EventSourceResponse:
    job = await _job_or_404(database, job_id, caller)
    urls = UrlMaker(storage, settings, request)
    release = request.app.state.streams.take(caller.owner)  # or a 429 naming the limit
    return held_stream(job_events(request.app.state.feeds, job, urls), release,
                       ping=EVENTS_PING_SECONDS, send_timeout=EVENTS_SEND_TIMEOUT_SECONDS)
