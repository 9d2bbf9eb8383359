"""Who is calling: API keys (``Authorization: Bearer``) and per-key rate limits.

One pure-ASGI middleware does both before any route runs, so every path, including unknown
ones, ``/docs`` and ``/metrics``, is refused alike without a key. ``/health`` and ``/ready``
stay open for probes, and ``/files/...`` URLs carry their own signature, like S3's presigned
ones, so an ``<img src>`` can show them. The dashboard's page and static files (``/`` and
``/ui/...``) are open too: they hold no data, and the page asks for a key itself.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from sqlalchemy import update
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from workers.db import ApiKey, Database
from workers.db import keys as key_store
from workers.db.models import utcnow
from workers.settings import Settings

__all__ = ["ANONYMOUS", "Caller", "CallerDep", "Gatekeeper", "is_open", "rate_limits"]

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health", "/ready", "/"})
SIGNED_PREFIX = "/files/"
DASHBOARD_PREFIX = "/ui/"  # the dashboard's static files (api/routers/dashboard.py)
LAST_USED_RESOLUTION = timedelta(minutes=1)  # last_used_at is written at most this often
MAX_KEY_CHARS = 256


@dataclass(frozen=True)
class Caller:
    """The key behind a request; ``key_id`` None when auth is off (the caller sees all)."""

    key_id: str | None
    name: str | None = None
    admin: bool = False  # an operator's key (``keys create --admin``)

    @property
    def owner(self) -> str | None:
        return self.key_id


ANONYMOUS = Caller(key_id=None)


def is_open(path: str) -> bool:
    """Paths served without a key: probes, signed files, the dashboard's page and assets."""
    return (path in OPEN_PATHS or path.startswith(SIGNED_PREFIX)
            or path.startswith(DASHBOARD_PREFIX))


def rate_limits(settings: Settings) -> tuple[list[RateLimitItem], Storage]:
    """The per-key limits and where their counters live: Redis when the broker is Redis,
    so every API replica counts together; else this process's memory."""
    items = parse_many(settings.rate_limit) if settings.rate_limit.strip() else []
    broker = settings.broker_url or ""
    if broker.startswith(("redis://", "rediss://")):
        storage = storage_from_string(f"async+{broker}", implementation="redispy",
                                      key_prefix="spec2fractal-limits")
    else:
        storage = MemoryStorage()
    return items, storage


def _unauthorized(detail: str, error: str | None = None) -> JSONResponse:
    challenge = 'Bearer realm="spec2fractal"'
    if error:
        challenge += f', error="{error}"'
    return JSONResponse({"detail": detail}, status_code=401,
                        headers={"WWW-Authenticate": challenge})


class Gatekeeper:
    def __init__(self, app: ASGIApp, *, database: Database, settings: Settings) -> None:
        self.app = app
        self.database = database
        self.required = settings.auth_required
        self.limits, storage = rate_limits(settings)
        self.limiter = MovingWindowRateLimiter(storage)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not self.required or is_open(path):
            await self.app(scope, receive, send)
            return
        secret = _bearer(dict(scope["headers"]).get(b"authorization"))
        if secret is None:
            await _unauthorized("an API key is required: send `Authorization: Bearer <key>`"
                                )(scope, receive, send)
            return
        caller = await run_in_threadpool(self._identify, secret)
        if caller is None:
            await _unauthorized("the API key is not valid (unknown or revoked)",
                                "invalid_token")(scope, receive, send)
            return
        refusal = await self._rate_limit(caller)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)

    def _identify(self, secret: str) -> Caller | None:
        with self.database.session() as session:
            key: ApiKey | None = key_store.find_key(session, secret)
            if key is None:
                return None
            now = utcnow()
            last = key.last_used_at
            if last is not None and last.tzinfo is None:  # SQLite hands back naive UTC
                last = last.replace(tzinfo=now.tzinfo)
            if last is None or now - last > LAST_USED_RESOLUTION:
                session.execute(update(ApiKey).where(ApiKey.id == key.id)
                                .values(last_used_at=now))
            return Caller(key_id=key.id, name=key.name, admin=bool(key.admin))

    async def _rate_limit(self, caller: Caller) -> JSONResponse | None:
        for item in self.limits:
            try:
                if await self.limiter.hit(item, caller.key_id or ""):
                    continue
                reset, _ = await self.limiter.get_window_stats(item, caller.key_id or "")
            except Exception as exc:  # the counters' store is down: serve rather than refuse
                logger.warning("rate limits not applied: %s", exc)
                return None
            retry = max(1, math.ceil(reset - time.time()))
            return JSONResponse(
                {"detail": f"rate limit of {item} per key reached; retry in {retry} s"},
                status_code=429, headers={"Retry-After": str(retry)})
        return None


def _bearer(header: bytes | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.decode("latin-1").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_KEY_CHARS:
        return None
    return token


_bearer_scheme = HTTPBearer(auto_error=False, description="An API key from "
                                                          "`spec2fractal keys create`.")


async def get_caller(request: Request,
                     _: Annotated[HTTPAuthorizationCredentials | None,
                                  Security(_bearer_scheme)]) -> Caller:
    # async: FastAPI runs a plain def dependency in a worker thread, a trip per request.
    # The Security parameter only documents the scheme in OpenAPI; the Gatekeeper checked it.
    return request.scope.get("state", {}).get("caller", ANONYMOUS)


CallerDep = Annotated[Caller, Depends(get_caller)]
