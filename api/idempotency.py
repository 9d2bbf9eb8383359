"""``Idempotency-Key`` on POST /generate and POST /batches, with Stripe's semantics.

The first request with a key runs; its response is kept and replayed to every retry with the
same key and the same body. The same key with another body is a 422; a retry while the first
is still running is a 409. Requests refused before anything was created (a 422, a full queue)
keep nothing, so they may be retried with the same key. Records expire after
``settings.idempotency_ttl``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from api.auth import Caller
from api.errors import ApiError, field_error
from workers.db import Database, IdempotencyRecord
from workers.db.models import utcnow
from workers.settings import Settings

__all__ = ["HEADER", "Idempotency", "fingerprint"]

HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255
KEPT_HEADERS = ("location", "retry-after", "preference-applied")
IN_FLIGHT_RETRY_AFTER = "1"
# A first request that created nothing in this long died before it could (a server crash):
# its key is free again. Checking and queueing take milliseconds, not minutes.
ABANDONED_AFTER = timedelta(minutes=1)
_DIGEST_OVER = 4096  # characters


def fingerprint(body: BaseModel, upload: bytes | None = None) -> str:
    """The request as parsed, so the same JSON sent with other spacing or key order, or the
    same form sent with another multipart boundary, is the same request."""
    digest = hashlib.sha256(json.dumps(_digested(body.model_dump(mode="json")),
                                       sort_keys=True).encode())
    if upload is not None:
        digest.update(b"\0" + hashlib.sha256(upload).digest())
    return digest.hexdigest()


def _digested(value: Any) -> Any:
    """Long strings (a batch item's data URL) by their SHA-256: hashlib releases the GIL on
    large data, while JSON-encoding 60 MB would hold it, and the event loop, for 100 ms."""
    if isinstance(value, str) and len(value) > _DIGEST_OVER:
        return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    if isinstance(value, dict):
        return {key: _digested(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_digested(item) for item in value]
    return value


class Idempotency:
    """One request's view of its key; ``attach`` names what it created as soon as it exists."""

    def __init__(self, database: Database, settings: Settings, caller: Caller,
                 endpoint: str, key: str | None, request_hash: str) -> None:
        self.database = database
        self.settings = settings
        self.owner = caller.owner or ""
        self.endpoint = endpoint
        self.key = key
        self.request_hash = request_hash
        self.resource_id: str | None = None

    @classmethod
    def of(cls, key: str | None, database: Database, settings: Settings, caller: Caller,
           endpoint: str, body: BaseModel, upload: bytes | None = None) -> Idempotency:
        """The request's view of its key; the body is fingerprinted only when there is one."""
        if key is not None and not 1 <= len(key.strip()) <= MAX_KEY_CHARS:
            raise field_error(["header", HEADER], f"must be 1 to {MAX_KEY_CHARS} characters",
                              key)
        request_hash = fingerprint(body, upload) if key is not None else ""
        return cls(database, settings, caller, endpoint, key and key.strip(), request_hash)

    async def run(self, work: Callable[[Idempotency], Awaitable[JSONResponse]]
                  ) -> JSONResponse:
        if self.key is None:
            return await work(self)
        replay = await run_in_threadpool(self._begin)
        if replay is not None:
            return replay
        try:
            response = await work(self)
        except ApiError as exc:
            if self.resource_id is None:
                await run_in_threadpool(self._release)
            else:
                body = {"detail": exc.detail, **exc.extra}
                await run_in_threadpool(self._store, exc.status, body, exc.headers or {})
            raise
        except BaseException:
            # Nothing created: forget the key. Something created: stay "in flight", so a
            # retry learns of the job (409 with its id) instead of making a second one.
            if self.resource_id is None:
                await run_in_threadpool(self._release)
            raise
        await run_in_threadpool(self._store, response.status_code,
                                json.loads(bytes(response.body)), dict(response.headers))
        return response

    async def attach(self, resource_id: str) -> None:
        """Name the resource this request created, so a retry in flight learns of it."""
        await run_in_threadpool(self.attach_blocking, resource_id)

    def attach_blocking(self, resource_id: str) -> None:
        """:meth:`attach` from a worker thread."""
        self.resource_id = resource_id
        if self.key is not None:
            self._update(resource_id=resource_id)

    # --- the record ---

    def _where(self) -> Any:
        return ((IdempotencyRecord.owner == self.owner)
                & (IdempotencyRecord.endpoint == self.endpoint)
                & (IdempotencyRecord.key == self.key))

    def _begin(self) -> JSONResponse | None:
        now = utcnow()
        expired = now - timedelta(seconds=self.settings.idempotency_ttl)
        with self.database.session() as session:
            session.execute(delete(IdempotencyRecord)
                            .where(IdempotencyRecord.created_at < expired))
        try:
            with self.database.session() as session:
                session.add(IdempotencyRecord(owner=self.owner, endpoint=self.endpoint,
                                              key=self.key, request_hash=self.request_hash,
                                              created_at=now))
            return None
        except IntegrityError:
            pass  # the key was used before: look at how
        with self.database.session() as session:
            record = session.scalars(select(IdempotencyRecord).where(self._where())).first()
        if record is None:  # expired between the two statements: run as new
            return self._begin()
        if record.request_hash != self.request_hash:
            raise field_error(["header", HEADER], "this key was already used with a "
                              "different request; use a new key for a new request",
                              self.key, kind="idempotency_key_reused")
        if record.response_status is None and record.resource_id is None:
            started = record.created_at
            if started.tzinfo is None:  # SQLite hands back naive UTC
                started = started.replace(tzinfo=now.tzinfo)
            if now - started > ABANDONED_AFTER and self._take_over(record, now):
                return None
        if record.response_status is None:
            extra = {"job_id": record.resource_id} if record.resource_id else {}
            raise ApiError(409, "a request with this Idempotency-Key is still in progress",
                           headers={"Retry-After": IN_FLIGHT_RETRY_AFTER}, **extra)
        headers = dict(record.response_headers or {}, **{"Idempotent-Replayed": "true"})
        return JSONResponse(json.loads(record.response_body or "null"),
                            status_code=record.response_status, headers=headers)

    def _take_over(self, record: IdempotencyRecord, now: Any) -> bool:
        """Claim an abandoned key; of two retries racing for it, one wins."""
        with self.database.session() as session:
            claimed = session.execute(
                update(IdempotencyRecord)
                .where(self._where(), IdempotencyRecord.created_at == record.created_at,
                       IdempotencyRecord.resource_id.is_(None),
                       IdempotencyRecord.response_status.is_(None))
                .values(created_at=now))
            return claimed.rowcount == 1

    def _update(self, **values: Any) -> None:
        with self.database.session() as session:
            session.execute(update(IdempotencyRecord).where(self._where()).values(**values))

    def _store(self, status: int, body: Any, headers: dict[str, str]) -> None:
        kept = {name: value for name, value in headers.items()
                if name.lower() in KEPT_HEADERS}
        self._update(response_status=status, response_body=json.dumps(body),
                     response_headers=kept)

    def _release(self) -> None:
        with self.database.session() as session:
            session.execute(delete(IdempotencyRecord).where(self._where()))
