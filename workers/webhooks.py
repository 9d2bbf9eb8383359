"""Webhooks: events when a job or a batch finishes, signed the Standard Webhooks way.

A finished job with a ``webhook_url`` gets ``job.succeeded``, ``job.failed`` or
``job.cancelled``; a batch with one gets ``batch.completed`` once, when its last item ends
(``batches.notified_at`` is claimed by one atomic UPDATE, so many workers send it once).

The worker that finishes a job only *schedules* the event: a task of its own
(:data:`DELIVER_TASK`, on the same queue as renders) sends it, so a slow receiver never holds
up a render and an undelivered event survives a worker restart (the message is acknowledged
late). Each event keeps one ``webhook-id`` over all its attempts, derived from the job or
batch, so a receiver can drop duplicates.

Events are signed with the secret of the API key that owns the job (``ApiKey.webhook_secret``),
or, with auth off, a server secret derived from the server's secret key. Every attempt goes
through :mod:`workers.netguard`: the receiver's address is checked again at delivery time.
See docs/webhooks.md.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from workers import netguard
from workers.backoff import exponential_backoff
from workers.db import ApiKey, Batch, Database, Job, JobStatus
from workers.db import batches as batch_store
from workers.db.keys import new_webhook_secret
from workers.settings import Settings, get_settings
from workers.storage import secret_key

__all__ = [
    "DELIVER_TASK",
    "MAX_DELAY",
    "Event",
    "Outcome",
    "attempt_delivery",
    "batch_event",
    "deliver_once",
    "job_event",
    "new_webhook_secret",
    "retry_delay",
    "schedule_batch_event",
    "schedule_job_events",
    "secret_for",
    "server_webhook_secret",
    "sign",
]

logger = logging.getLogger(__name__)

DELIVER_TASK = "spec2fractal.deliver_webhook"
MAX_DELAY = 600.0  # seconds; also below Redis' visibility timeout, so a waiting retry stays put
USER_AGENT = "spec2fractal-webhooks"
_SERVER_SECRET_LABEL = b"spec2fractal webhook signing secret v1"


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GIVE_UP = "give_up"


Event = dict[str, Any]  # the task's keyword arguments: message_id, url, owner, body, type
Sender = Callable[[Event], None]


def server_webhook_secret(settings: Settings) -> str:
    """The secret for jobs with no owner (auth off): an HMAC of the server's secret key, so
    every worker that shares ``SPEC2FRACTAL_SECRET_KEY`` (or the data folder) agrees."""
    digest = hmac.new(secret_key(settings), _SERVER_SECRET_LABEL, hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(digest).decode()


def secret_for(database: Database, owner: str | None, settings: Settings) -> str:
    """The owner's key's secret (a revoked key still signs its jobs' events)."""
    if owner:
        with database.session() as session:
            key = session.get(ApiKey, owner)
            if key is not None and key.webhook_secret:
                return key.webhook_secret
        logger.warning("webhook: key %s is gone; signing with the server secret", owner)
    return server_webhook_secret(settings)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite hands back naive datetimes, stored as UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _link(settings: Settings, path: str) -> str | None:
    return f"{settings.public_url.rstrip('/')}{path}" if settings.public_url else None


def _envelope(kind: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "timestamp": _iso(datetime.now(UTC)), "data": data},
                      separators=(",", ":"))


def job_event(job: Job, settings: Settings) -> Event:
    kind = f"job.{job.status}"
    outputs = [{name: output.get(name) for name in
                ("index", "key", "record_key", "seed", "width", "height", "format")}
               for output in (job.outputs or [])]
    data = {"object": "job", "id": job.id, "status": str(job.status), "error": job.error,
            "model": job.model, "batch_id": job.batch_id, "batch_index": job.batch_index,
            "created_at": _iso(job.created_at), "finished_at": _iso(job.finished_at),
            "outputs": outputs, "url": _link(settings, f"/jobs/{job.id}")}
    return {"message_id": f"msg_{job.id}_{job.status}", "url": job.webhook_url,
            "owner": job.owner, "type": kind, "body": _envelope(kind, data)}


def batch_event(batch: Batch, counts: batch_store.BatchCounts, settings: Settings) -> Event:
    kind = "batch.completed"
    data = {"object": "batch", "id": batch.id, "name": batch.name, "total": batch.total,
            "counts": dict(counts.by_status), "images": counts.images,
            "cancelled": bool(batch.cancel_requested), "created_at": _iso(batch.created_at),
            "url": _link(settings, f"/batches/{batch.id}")}
    return {"message_id": f"msg_batch_{batch.id}", "url": batch.webhook_url,
            "owner": batch.owner, "type": kind, "body": _envelope(kind, data)}


def _send_task(event: Event, session: Session) -> None:
    # Imported here: only a worker process sends, through its own queue. In the embedded
    # mode the message joins the session's unit of work (SQLite has one writer at a time).
    from workers.handlers import task_queue

    task_queue().send(DELIVER_TASK, dict(event), session=session)


def schedule_job_events(database: Database, job_id: str, settings: Settings | None = None, *,
                        unstarted_only: bool = False, send: Sender | None = None) -> int:
    """Schedule the events a finished job causes; how many. Never raises: a webhook must not
    change a job's outcome.

    ``unstarted_only``: for a job a worker found already finished, schedule only if it never
    ran (cancelled while queued); one that ran was notified by the worker that ran it.
    """
    scheduled = 0
    try:
        settings = settings or get_settings()
        with database.session() as session:
            send = send or functools.partial(_send_task, session=session)
            job = session.get(Job, job_id)
            if job is None or not JobStatus(job.status).finished:
                return 0
            if unstarted_only and job.started_at is not None:
                return 0
            if job.webhook_url:
                send(job_event(job, settings))
                scheduled += 1
            if job.batch_id and schedule_batch_event(session, job.batch_id, settings, send):
                scheduled += 1
    except Exception:
        logger.exception("job %s: webhook not scheduled", job_id)
    return scheduled


def schedule_batch_event(session: Session, batch_id: str, settings: Settings,
                          send: Sender) -> bool:
    """Schedule ``batch.completed`` if the batch has a webhook, no item is left to run and
    no one has sent it yet; whether this call did. The claim commits with ``session``, only
    once the event is on the queue."""
    if not batch_store.claim_notification(session, batch_id):
        return False
    batch = session.get(Batch, batch_id)
    assert batch is not None
    counts = batch_store.counts_for(session, [batch.id])[batch.id]
    send(batch_event(batch, counts, settings))
    return True


def sign(secret: str, message_id: str, body: str, when: datetime | None = None
         ) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    when = when or datetime.now(UTC)
    signature = Webhook(secret).sign(message_id, when, body)
    return {"webhook-id": message_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": signature}


def deliver_once(event: Event, secret: str, *, timeout: float, allow_private: bool
                 ) -> tuple[Outcome, str, float | None]:
    """One attempt: the outcome, what happened (for the log), and the receiver's
    Retry-After in seconds if it gave one."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               **sign(secret, event["message_id"], event["body"])}
    try:
        result = netguard.post(event["url"], event["body"].encode(), headers=headers,
                               timeout=timeout, allow_private=allow_private)
    except netguard.UnsafeUrlError as exc:
        return Outcome.GIVE_UP, f"refused: {exc}", None
    except netguard.FetchError as exc:
        return Outcome.RETRY, str(exc), None
    status = result.status
    retry_after = float(result.retry_after) if (result.retry_after or "").isdigit() else None
    if 200 <= status < 300:
        return Outcome.DELIVERED, f"answered {status}", None
    if 400 <= status < 500 and status not in (408, 429):
        return Outcome.GIVE_UP, f"answered {status}", None
    return Outcome.RETRY, f"answered {status}", retry_after


def retry_delay(attempt: int, backoff: float, retry_after: float | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: ``backoff`` doubled per attempt, times a
    random factor in [0.5, 1.5) so receivers that failed together are not hit together;
    at least the receiver's Retry-After; at most MAX_DELAY."""
    delay = exponential_backoff(attempt - 1, backoff, MAX_DELAY, jitter=0.5)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, MAX_DELAY)


def attempt_delivery(event: Event, attempt: int, settings: Settings,
                     database: Database) -> float | None:
    """Attempt ``attempt`` (from 1) at delivering ``event``; the seconds to wait before the
    next one, or None when there is none (delivered, refused, or attempts used up)."""
    # Looked up at each attempt: the secret never travels in a queue message.
    secret = secret_for(database, event["owner"], settings)
    outcome, detail, retry_after = deliver_once(
        event, secret, timeout=settings.fetch_timeout,
        allow_private=settings.webhook_allow_private)
    logger.info("webhook %s (%s) attempt %d/%d to %s: %s", event["message_id"],
                event["type"], attempt, settings.webhook_max_attempts, event["url"], detail)
    if outcome is Outcome.RETRY:
        if attempt < settings.webhook_max_attempts:
            return retry_delay(attempt, settings.webhook_backoff, retry_after)
        logger.warning("webhook %s: giving up after %d attempts (%s)", event["message_id"],
                       attempt, detail)
    elif outcome is Outcome.GIVE_UP:
        logger.warning("webhook %s: not retried: %s", event["message_id"], detail)
    return None
