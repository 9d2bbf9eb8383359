"""A job row as the API shows it: fresh signed URLs, timings in seconds, UTC timestamps.

Every absolute URL the API hands out (image URLs, links, ``Location``) starts with
:func:`public_base`, built from trusted settings, never from what a client claims: with the
request's ``Host`` header, any client could have the server sign a URL that points at a host
it names.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from urllib.parse import urlsplit

from fastapi import Request

from api.schemas import ErrorDetail, JobOut, OutputOut, Progress, Timings
from fractal.naming import display_name
from workers.db import Job, JobStatus
from workers.settings import Settings, is_loopback
from workers.storage import Storage

__all__ = ["UrlMaker", "job_out", "link", "public_base", "utc"]

logger = logging.getLogger(__name__)
DEFAULT_PORTS = {"http": 80, "https": 443}
_warned: set[str] = set()  # Host headers already logged about, so a flood logs once


def _netloc(host: str, port: int | None, scheme: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None or port == DEFAULT_PORTS.get(scheme) else f"{shown}:{port}"


def _loopback_host(header: str | None, scheme: str) -> str | None:
    """The Host header as a netloc if it names this machine's loopback, else None."""
    if not header:
        return None
    try:
        parts = urlsplit("//" + header)
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number
        return None
    if host is None or parts.username is not None or not is_loopback(host):
        return None
    return _netloc(host, port, scheme)


def public_base(request: Request) -> str:
    """Where clients reach this API, for the links it hands out: ``SPEC2FRACTAL_PUBLIC_URL``
    (required whenever the API listens beyond loopback). Without it the server listens on
    loopback only, and the base is the request's ``Host`` if that names a loopback address
    (``localhost:8000`` stays ``localhost:8000``, the dashboard's own origin), else the
    address the connection came in on."""
    settings: Settings = request.app.state.settings
    if settings.public_url:
        return settings.public_url
    scheme = request.scope.get("scheme", "http")
    root = request.scope.get("root_path", "")
    header = request.headers.get("host")
    named = _loopback_host(header, scheme)
    if named is not None:
        return f"{scheme}://{named}{root}"
    server = request.scope.get("server") or ("127.0.0.1", None)
    if header and header not in _warned and len(_warned) < 16:
        _warned.add(header)
        logger.warning("a request names the host %r: links are built for %s instead; behind "
                       "a proxy, set SPEC2FRACTAL_PUBLIC_URL", header[:100], server[0])
    return f"{scheme}://{_netloc(server[0], server[1], scheme)}{root}"


def link(request: Request, route: str, **params: str) -> str:
    """An absolute link to one of the API's routes, on :func:`public_base`."""
    return public_base(request) + request.app.url_path_for(route, **params)


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
    """Signs object URLs; local ones (``/files/...``) become absolute on :func:`public_base`."""

    def __init__(self, storage: Storage, settings: Settings, request: Request) -> None:
        self.storage = storage
        self.expiry = settings.url_expiry
        self.base = public_base(request)
        self.request = request

    def object(self, key: str) -> str:
        url = self.storage.url(key, self.expiry)
        return self.base + url if url.startswith("/") else url

    def job(self, job_id: str) -> str:
        return self.base + self.request.app.url_path_for("get_job", job_id=job_id)


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
        OutputOut(index=out["index"], url=(url := urls.object(out["key"])),
                  # Stored before thumbnails: the full image stands in for its thumbnail.
                  thumbnail_url=urls.object(out["thumbnail_key"])
                  if out.get("thumbnail_key") else url,
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
