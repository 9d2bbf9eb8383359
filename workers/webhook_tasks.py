"""The Celery task of the distributed mode that delivers one webhook event, retried with
backoff and jitter (:func:`workers.webhooks.attempt_delivery`).

Scheduled by :func:`workers.webhooks.schedule_job_events`; it needs only the database (for
the signing secret) and the settings, never a model, so it loads nothing heavy.
"""

from __future__ import annotations

from celery import Task

from workers import handlers
from workers.celery_app import app
from workers.webhooks import DELIVER_TASK

__all__ = ["deliver_webhook"]


@app.task(name=DELIVER_TASK, bind=True, ignore_result=True, max_retries=None)
def deliver_webhook(self: Task, *, message_id: str, url: str, owner: str | None, type: str,
                    body: str) -> None:
    event = {"message_id": message_id, "url": url, "owner": owner, "type": type, "body": body}
    delay = handlers.deliver_webhook(self.request.retries + 1, event)
    if delay is not None:
        raise self.retry(countdown=delay)
