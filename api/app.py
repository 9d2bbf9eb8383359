"""The FastAPI application: ``create_app(settings)`` builds one, with no global state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api.auth import Gatekeeper
from api.bodylimit import BodyLimit
from api.embedded import EmbeddedWorkers
from api.errors import install_error_handlers
from api.events import JobFeeds, StreamSlots
from api.jsonbody import JsonParser
from api.limits import MAX_BODY_BYTES, WORKER_WATCH_SECONDS
from api.lora_upload import remove_stale_uploads
from api.metrics import HttpMetrics, build_registry
from api.openai_errors import OpenAIErrorShape
from api.openapi import install_openapi
from api.routers import (
    batches,
    catalogue,
    controls,
    files,
    generate,
    health,
    jobs,
    loras,
    openai_images,
    styles,
)
from api.routers.dashboard import install_dashboard
from api.styles import MAX_STYLE_BODY_BYTES, operator_styles
from workers.db import Database, get_database, recovery
from workers.finish_signals import listener_for, publisher_for
from workers.settings import Settings, get_settings, is_loopback
from workers.storage import LocalStorage, get_storage
from workers.task_queue import TaskQueue

__all__ = ["check_public_url", "create_app"]

logger = logging.getLogger(__name__)


def _requeue_orphans(database: Database, queue: TaskQueue,
                     job_ids: list[str] | None = None) -> None:
    """Running jobs (``job_ids``: only these) back on the queue: their worker is gone."""
    with database.session() as session:
        orphans = [(job.id, job.queue) for job in recovery.requeue_running(session, job_ids)]
    for job_id, name in orphans:
        logger.warning("job %s lost its worker: queued again", job_id)
        queue.enqueue_render(job_id, name)


async def _keep_alive(workers: EmbeddedWorkers, database: Database, queue: TaskQueue) -> None:
    """Restart an embedded worker that dies (a crash, an OOM kill), re-sending the jobs it
    held; the other workers' jobs run on."""
    while True:
        await asyncio.sleep(WORKER_WATCH_SECONDS)
        for worker in workers.dead():
            logger.error("embedded worker %d exited (code %s); starting it again", worker.slot,
                         worker.process.poll() if worker.process else None)
            await asyncio.to_thread(_requeue_orphans, database, queue, worker.held())
            worker.start()


def check_public_url(settings: Settings) -> None:
    """A ValueError unless links can be built from trusted settings: listening beyond
    loopback, the API must be told the URL clients reach it at (never a request's Host)."""
    if settings.public_url is None and not is_loopback(settings.host):
        raise ValueError(
            f"listening on {settings.host}, the API needs SPEC2FRACTAL_PUBLIC_URL: the URL "
            f"clients reach it at (e.g. https://images.example.com), which every image URL, "
            f"link and Location it hands out starts with; it never trusts a request's Host "
            f"header for that")


LORA_FORM_SLACK = 1024 * 1024  # a LoRA upload's multipart headers, `name`, and read-ahead


def create_app(settings: Settings | None = None, *, start_worker: bool | None = None) -> FastAPI:
    """``start_worker``: run the embedded worker as a child process; by default only
    in the embedded shape (no broker). Tests pass False to control workers themselves."""
    settings = settings or get_settings()
    check_public_url(settings)
    run_worker = settings.embedded if start_worker is None else start_worker
    database = get_database(settings.resolved_database_url)
    storage = get_storage(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Idempotent, and safe when a worker migrates at the same moment.
        await asyncio.to_thread(database.migrate)
        await asyncio.to_thread(remove_stale_uploads, settings.lora_dir)
        await app.state.finished.start()
        watchdog = None
        if run_worker:
            if settings.embedded:
                # This server's own worker is the only one: a job still "running" lost its
                # worker with the last server.
                await asyncio.to_thread(_requeue_orphans, database, app.state.queue)
            app.state.worker = EmbeddedWorkers(settings)
            app.state.worker.start()
            if settings.embedded:
                watchdog = asyncio.create_task(_keep_alive(app.state.worker, database,
                                                           app.state.queue))
        try:
            yield
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if app.state.worker is not None:
                await app.state.worker.astop()
            await app.state.finished.stop()
            app.state.json_parser.close()

    app = FastAPI(title="Spec-2-Fractal", version="0.1.0", lifespan=lifespan,
                  description="Self-hostable image generation. POST /generate to render.")
    app.state.settings = settings
    app.state.database = database
    app.state.storage = storage
    app.state.queue = TaskQueue(settings)
    app.state.styles = operator_styles(settings)
    app.state.worker = None
    app.state.json_parser = JsonParser()
    app.state.finished = listener_for(settings)  # workers' "job finished" signals
    app.state.signals = publisher_for(settings)  # the same signals, for jobs ended here
    app.state.feeds = JobFeeds(database, app.state.finished)  # rows read for event streams
    app.state.streams = StreamSlots(settings.max_streams_per_key)  # open streams per key
    registry, requests, latency = build_registry(database, settings.worker_presence_ttl)
    app.state.registry = registry

    install_error_handlers(app)
    install_openapi(app)
    for router in (generate.router, jobs.router, batches.router, catalogue.router,
                   health.router, openai_images.router, controls.router, styles.router,
                   loras.router):
        app.include_router(router)
    if isinstance(storage, LocalStorage):
        app.include_router(files.router)  # S3 serves its own presigned URLs
    install_dashboard(app, settings, storage)  # GET / and /ui/...: the web dashboard
    # Added last = runs first: CORS answers preflights before the Gatekeeper asks for a key.
    app.add_middleware(Gatekeeper, database=database, settings=settings)
    app.add_middleware(OpenAIErrorShape)  # /v1 only, and around the Gatekeeper's 401/429
    # A LoRA upload's own cap (its file part's is counted as it streams); a style is small.
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, paths={
        "/loras": int(settings.lora_upload_max_bytes) + LORA_FORM_SLACK,
        "/styles": MAX_STYLE_BODY_BYTES})
    app.add_middleware(HttpMetrics, requests=requests, latency=latency)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key",
                                          "Prefer", "Last-Event-ID"],
                           expose_headers=["Location", "Retry-After", "Idempotent-Replayed",
                                           "Preference-Applied"],
                           max_age=600)
    return app
