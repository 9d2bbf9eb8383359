"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from api.auth import CallerDep
from api.deps import DatabaseDep, QueueDep, SettingsDep, StorageDep
from api.errors import ApiError
from api.jsonbody import JsonRoute
from api.routing import warm_for
from workers.db import Database
from workers.settings import Settings

__all__ = ["router"]

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"], route_class=JsonRoute)

CHECK_TIMEOUT = 5.0  # seconds each readiness check may take


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers. No I/O, so a slow database never restarts the API."""
    return {"status": "ok"}


async def _check(name: str, probe: Callable[[], None]) -> str:
    try:
        await asyncio.wait_for(asyncio.to_thread(probe), CHECK_TIMEOUT)
    except Exception as exc:
        # Details (paths, hosts) go to the log, not to the unauthenticated response.
        logger.warning("readiness: %s is down: %s", name, exc or type(exc).__name__)
        return "down"
    return "ok"


@router.get("/ready", responses={503: {"description": "Something is down; see checks."}})
async def ready(request: Request, database: DatabaseDep, storage: StorageDep,
                queue: QueueDep, settings: SettingsDep) -> JSONResponse:
    """Readiness: database, storage and broker reachable, and a live worker serving the
    default model that has loaded it (warm start): a worker still loading is "warming"."""
    names = ["database", "storage", "broker"]
    results = await asyncio.gather(_check("database", database.ping),
                                   _check("storage", storage.check),
                                   _check("broker", queue.check))
    checks = dict(zip(names, results, strict=True))
    worker = request.app.state.worker  # this server's embedded workers, if it runs them
    if worker is not None and not worker.alive:
        checks["worker"] = "down"
    elif (worker is not None or not settings.embedded) and checks["database"] == "ok":
        checks["worker"] = await asyncio.to_thread(_warm_worker, database, settings)
    down = [name if result == "down" else f"{name} ({result})"
            for name, result in checks.items() if result != "ok"]
    if down:
        return JSONResponse({"status": "unavailable", "checks": checks,
                             "detail": f"down: {', '.join(down)}"}, status_code=503,
                            headers={"Retry-After": "5"})
    return JSONResponse({"status": "ready", "checks": checks})


def _warm_worker(database: Database, settings: Settings) -> str:
    """"ok" once a live worker serving the default model has loaded it; "warming" before
    (none announced yet, or still loading); "down" if the announcements are unreadable."""
    try:
        with database.session() as session:
            return "ok" if warm_for(session, settings, settings.model) else "warming"
    except Exception as exc:
        logger.warning("readiness: the workers' announcements are unreadable: %s", exc)
        return "down"


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}},
                       403: {"description": "Not an operator key (keys create --admin)."}})
async def metrics(request: Request, settings: SettingsDep, caller: CallerDep) -> Response:
    """Prometheus metrics. They count every key's jobs, so with API keys on they are for
    operator keys only; with keys off (loopback, unless the operator chose otherwise)
    whoever can call the API can read them."""
    if settings.auth_required and not caller.admin:
        raise ApiError(403, "metrics show every key's queue and job counts: they need an "
                       "operator key (`spec2fractal keys create --name NAME --admin`)")
    body = await run_in_threadpool(generate_latest, request.app.state.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
