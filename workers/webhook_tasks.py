"""The Celery task that delivers one webhook event, retrying with backoff and jitter.

Scheduled by :func:`workers.webhooks.notify_job_finished`; it needs only the database (for
the signing secret) and the settings, never a model, so it loads nothing heavy.
"""

from __future__ import annotations

import logging

from celery import Task

from workers.celery_app import app
from workers.db import get_database
from workers.settings import get_settings
from workers.webhooks import DELIVER_TASK, Outcome, deliver_once, retry_delay, secret_for

__all__ = ["deliver_webhook"]

logger = logging.getLogger(__name__)


@app.task(name=DELIVER_TASK, bind=True, ignore_result=True, max_retries=None)
def deliver_webhook(self: Task, *, message_id: str, url: str, owner: str | None, type: str,
                    body: str) -> str:
    settings = get_settings()
    attempt = self.request.retries + 1
    event = {"message_id": message_id, "url": url, "owner": owner, "type": type, "body": body}
    # Looked up at each attempt: the secret never travels in a queue message.
    secret = secret_for(get_database(settings.resolved_database_url), owner, settings)
    outcome, detail, retry_after = deliver_once(
        event, secret, timeout=settings.fetch_timeout,
        allow_private=settings.webhook_allow_private)
    logger.info("webhook %s (%s) attempt %d/%d to %s: %s", message_id, type, attempt,
                settings.webhook_max_attempts, url, detail)
    if outcome is Outcome.RETRY:
        if attempt < settings.webhook_max_attempts:
            delay = retry_delay(attempt, settings.webhook_backoff, retry_after)
            raise self.retry(countdown=delay)
        logger.warning("webhook %s: giving up after %d attempts (%s)", message_id, attempt,
                       detail)
    elif outcome is Outcome.GIVE_UP:
        logger.warning("webhook %s: not retried: %s", message_id, detail)
    return outcome.value
