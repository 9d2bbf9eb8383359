"""Co-rendering in a worker: which queued jobs may share a pipeline call with the one in
hand, and claiming them (see fractal.corender for the library's side)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from fractal.errors import InvalidRequestError
from fractal.loras import parse_prompt_loras
from workers.db import Database, Job
from workers.db import jobs as job_store

__all__ = ["PARTNER_POLL", "PartnerSettings", "claim_partners", "corender_key"]

logger = logging.getLogger(__name__)

PARTNER_POLL = 0.005  # seconds between looks for partners while the wait window is open
# Request fields that must match for jobs to share a pipeline call (style may set defaults
# and LoRAs; a caller's own style is an object, compared whole).
_CORENDER_FIELDS = ("width", "height", "steps", "guidance", "scheduler", "strength", "style",
                    "scale", "hires", "loras")


class PartnerSettings(Protocol):
    database: Database
    max_corender: int
    corender_wait: float
    stopping: threading.Event


def corender_key(job: Job) -> tuple[Any, ...]:
    request = job.request or {}
    input_type = request.get("input_type", "text")
    kind = input_type if input_type in ("text", "upscale") else "image"
    return (job.model, kind, *(request.get(name) for name in _CORENDER_FIELDS),
            _prompt_loras(request.get("prompt")))


def _prompt_loras(prompt: Any) -> tuple[tuple[str, float], ...]:
    """The LoRAs a prompt's ``<lora:name:w>`` tags ask for: one pipeline call applies one
    LoRA set (fractal.corender groups by it too; partners that differ would wait in turn)."""
    try:
        _, tags = parse_prompt_loras(prompt if isinstance(prompt, str) else None)
    except InvalidRequestError:
        return (("<invalid>", 0.0),)
    return tuple(sorted((tag.name.casefold(), tag.weight) for tag in tags))


def claim_partners(context: PartnerSettings, first: Job) -> list[Job]:
    """Compatible queued jobs, claimed to render with it, waiting up to the window for more
    (``context``: the worker's, see workers.runner.WorkerContext)."""
    wanted = context.max_corender - 1
    # A job tried before may be the one that killed its worker: it runs alone.
    if wanted <= 0 or first.attempts > 1 or context.stopping.is_set():
        return []
    key, partners = corender_key(first), []
    deadline = time.monotonic() + context.corender_wait
    while True:
        looked, found = time.monotonic(), []
        try:
            with context.database.session() as session:
                for candidate in job_store.queued_candidates(session, first.model,
                                                             4 * wanted):
                    if len(partners) + len(found) == wanted:
                        break
                    if corender_key(candidate) == key:
                        claimed = job_store.start_job(session, candidate.id)
                        if claimed is not None:
                            found.append(claimed)
        except Exception:
            # Partners are a bonus: render with those whose claims committed. A look that
            # failed rolled its own claims back, so no job is left claimed and unrendered.
            logger.exception("job %s: the look for partners failed", first.id)
            return partners
        partners += found
        # The window is a promise: the next look must also end before it closes.
        look = time.monotonic() - looked
        left = deadline - time.monotonic() - look
        if len(partners) == wanted or left <= 0:
            return partners
        time.sleep(min(PARTNER_POLL, left))
