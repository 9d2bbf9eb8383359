"""One job, start to finish: claim it, render it, store it, record it.

Celery calls this through ``workers.tasks``; nothing here knows about the queue, so the same
code runs in a distributed worker and in the embedded one.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from PIL import Image

from fractal import (
    GenerationCancelled,
    GenerationRequest,
    ModelLoadError,
    Spec2FractalError,
    read_record,
)
from workers.db import Database, JobStatus
from workers.db import jobs as job_store
from workers.encoding import CONTENT_TYPES, encode_image, preview_data_url
from workers.model_cache import ModelCache
from workers.storage import Storage, StorageError

__all__ = ["WorkerContext", "output_key", "run_job"]

logger = logging.getLogger(__name__)

PREVIEW_INTERVAL = 0.25  # seconds between preview images: a JPEG each step would be waste
CANCEL_INTERVAL = 0.1  # seconds between looks at the cancel flag


@dataclass
class WorkerContext:
    """What a worker process holds for its whole life: loaded once, reused by every job."""

    database: Database
    storage: Storage
    models: ModelCache
    png_level: int = 1
    # Celery's solo pool cannot enforce time limits, so the runner does, between steps.
    time_limit: float | None = None


def output_key(job_id: str, index: int, extension: str) -> str:
    """Keys derive from the job id alone, so a re-run overwrites instead of duplicating."""
    return f"renders/{job_id}/{index}.{extension}"


def input_key(job_id: str) -> str:
    return f"inputs/{job_id}.png"


class _Throttled:
    """Calls ``action`` at most every ``interval`` seconds, and always when forced."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = 0.0

    def due(self, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            return True
        return False


def _request_of(job: Any, storage: Storage) -> GenerationRequest:
    data = dict(job.request)
    if job.input_key:
        data["image"] = base64.b64encode(storage.get(job.input_key)).decode("ascii")
    return GenerationRequest.from_dict(data)


def _store(context: WorkerContext, job_id: str, images: list[Image.Image],
           output_format: str) -> list[dict[str, Any]]:
    outputs = []
    for index, image in enumerate(images):
        key = output_key(job_id, index, output_format)
        record = read_record(image)
        record_data = record.to_dict() if record else {}
        context.storage.put(key, encode_image(image, output_format, png_level=context.png_level),
                            CONTENT_TYPES[output_format])
        record_key = output_key(job_id, index, "json")
        context.storage.put(record_key, json.dumps(record_data, indent=2).encode(),
                            "application/json")
        outputs.append({"index": index, "key": key, "record_key": record_key,
                        "seed": record_data.get("seed"), "width": image.width,
                        "height": image.height, "format": output_format,
                        "record": record_data})
    return outputs


def run_job(job_id: str, context: WorkerContext) -> str:
    """Run the job if it still wants running; returns its final status."""
    database = context.database
    with database.session() as session:
        job = job_store.start_job(session, job_id)
        if job is None:
            logger.info("job %s is not runnable (cancelled, finished or unknown)", job_id)
            current = job_store.get_job(session, job_id)
            return current.status if current else "missing"
        model_name, output_format = job.model, job.output_format
        job_snapshot = job
    preview_gate, cancel_gate = _Throttled(PREVIEW_INTERVAL), _Throttled(CANCEL_INTERVAL)
    cancelled = timed_out = False
    deadline = time.monotonic() + context.time_limit if context.time_limit else None

    def on_progress(step: int, total: int, preview: Image.Image | None) -> None:
        # Every step reaches the database (one small UPDATE); previews less often.
        shown = preview if preview is not None and preview_gate.due(step == total) else None
        with database.session() as session:
            job_store.record_progress(session, job_id, step, total,
                                      preview_data_url(shown) if shown else None)

    def should_cancel() -> bool:
        nonlocal cancelled, timed_out
        if deadline is not None and time.monotonic() > deadline:
            timed_out = True
            return True
        if not cancelled and cancel_gate.due():
            with database.session() as session:
                cancelled = job_store.is_cancel_requested(session, job_id)
        return cancelled

    status, outputs, error = JobStatus.FAILED, None, None
    try:
        request = _request_of(job_snapshot, context.storage)
        model = context.models.get(model_name)
        images = model.generate(request, on_progress=on_progress, cancel=should_cancel)
        outputs = _store(context, job_id, images, output_format)
        status = JobStatus.SUCCEEDED
    except GenerationCancelled:
        if timed_out:
            error = f"the render took longer than {context.time_limit:g} s and was stopped"
        else:
            status = JobStatus.CANCELLED
    except ModelLoadError as exc:
        error = f"model {model_name!r} could not be loaded: {exc}"
    except Spec2FractalError as exc:
        error = str(exc)
    except StorageError as exc:
        logger.error("job %s: storage failed: %s", job_id, exc)
        error = "the image could not be stored; try again later"
    except Exception:
        logger.exception("job %s failed", job_id)
        error = "internal error while rendering"
    with database.session() as session:
        job_store.finish_job(session, job_id, status, outputs=outputs, error=error)
    logger.info("job %s %s", job_id, status)
    return status
