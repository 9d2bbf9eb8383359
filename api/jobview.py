"""A job row as the API shows it: fresh signed URLs, timings in seconds, UTC timestamps."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Request

from api.schemas import ErrorDetail, JobOut, OutputOut, Progress, Timings
from fractal.naming import display_name
from workers.db import Job, JobStatus
from workers.settings import Settings
from workers.storage import Storage

__all__ = ["UrlMaker", "job_out", "utc"]


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


class UrlMaker:
    """Signs object URLs; local ones (``/files/...``) become absolute on the request's base."""

    def __init__(self, storage: Storage, settings: Settings, request: Request) -> None:
        self.storage = storage
        self.expiry = settings.url_expiry
        self.base = str(request.base_url).rstrip("/")
        self.request = request

    def object(self, key: str) -> str:
        url = self.storage.url(key, self.expiry)
        return self.base + url if url.startswith("/") else url

    def job(self, job_id: str) -> str:
        return str(self.request.url_for("get_job", job_id=job_id))


def _public_request(request: dict) -> dict:
    # The configured model may be a server folder: show its name, not its path.
    shown = dict(request)
    if shown.get("model"):
        shown["model"] = display_name(shown["model"])
    return shown


def job_out(job: Job, urls: UrlMaker) -> JobOut:
    created, started, finished = utc(job.created_at), utc(job.started_at), utc(job.finished_at)
    assert created is not None
    status = JobStatus(job.status)
    outputs = [
        OutputOut(index=out["index"], url=urls.object(out["key"]),
                  record_url=urls.object(out["record_key"]) if out.get("record_key") else None,
                  seed=out.get("seed"), width=out["width"], height=out["height"],
                  format=out["format"], record=out.get("record") or {})
        for out in (job.outputs or [])
    ] if status is JobStatus.SUCCEEDED else []
    own = urls.job(job.id)  # a route lookup: once, not once per link
    return JobOut(
        id=job.id, status=status.value, model=display_name(job.model),
        output_format=job.output_format,
        request=_public_request(job.request or {}),
        progress=Progress(step=job.progress_step or 0, total=job.progress_total or 0,
                          preview=job.preview if status is JobStatus.RUNNING else None),
        timings=Timings(created_at=created, started_at=started, finished_at=finished,
                        queue_seconds=_seconds(created, started),
                        render_seconds=_seconds(started, finished)),
        outputs=outputs, error=job.error, attempts=job.attempts or 0,
        error_detail=ErrorDetail(**job.error_detail) if job.error_detail else None,
        cancel_requested=bool(job.cancel_requested),
        links={"self": own, "events": f"{own}/events", "cancel": f"{own}/cancel"},
    )
