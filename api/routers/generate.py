"""POST /generate: check, queue, and wait for the image (or answer 202 with the job)."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.auth import Caller, CallerDep
from api.deps import DatabaseDep, FinishedDep, QueueDep, SettingsDep, StorageDep, StylesDep
from api.errors import ApiError, field_error, invalid_request
from api.generation import Submission, enqueue, job_failure, read_body
from api.idempotency import HEADER as IDEMPOTENCY_HEADER
from api.idempotency import Idempotency
from api.jobview import UrlMaker, job_out
from api.jsonbody import JsonRoute
from api.polling import load_job, wait_for_job
from api.schemas import GenerateBody, GenerateResult, JobOut, UpscaleBody
from fractal import GenerationRequest, InvalidRequestError
from fractal.images import load_image
from fractal.record import attach_record, parse_record
from fractal.validation import MAX_SEED, check_request, check_upscale
from workers.db import Job, JobStatus
from workers.settings import Settings
from workers.storage import Storage, StorageError

__all__ = ["router"]

router = APIRouter(tags=["generate"], route_class=JsonRoute)


def _request_body_docs() -> dict[str, Any]:
    schema = GenerateBody.model_json_schema()
    binary = {"type": "string", "format": "binary"}
    form = {**schema, "properties": {
        **schema["properties"], "image": binary,
        "style_image": {**binary, "description": "The style reference image file."},
        "mask": {**binary, "description": "The inpainting mask's file (or a data URL as "
                 "text): white repaints, black keeps; or transparent pixels repaint."},
        "expand": {"type": "string", "description": "Outpainting's sides as JSON text, e.g. "
                   '`{"left": 64, "right": 64}` (see the JSON body\'s `expand`).'},
        "control": {"type": "string", "description": "The control units as JSON text (see "
                    "the JSON body's `control`); a unit may leave out `image`."},
        "control_image": {"type": "array", "items": binary, "description": "Control image "
                          "files (repeat the part): in order, the images of the `control` "
                          "units that have none."}}}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema},
        "multipart/form-data": {"schema": form},
    }}}


def _prefer(header: str | None, default_wait: float) -> tuple[bool, float]:
    """RFC 7240: ``respond-async`` asks for a 202 now; ``wait=N`` caps the wait."""
    respond_async, wait = False, default_wait
    for token in (header or "").split(","):
        name, _, value = token.split(";")[0].strip().lower().partition("=")
        if name == "respond-async":
            respond_async = True
        elif name == "wait" and value.strip().isdigit():
            wait = min(wait, float(value))
    return respond_async, wait


@router.post(
    "/generate", response_model=GenerateResult, openapi_extra=_request_body_docs(),
    responses={202: {"model": JobOut, "description": "Still running: poll the Location."},
               401: {"description": "No API key, or not a valid one."},
               409: {"description": "The job was cancelled, or a request with this "
                                    "Idempotency-Key is still in progress."},
               413: {"description": "Body too large."},
               415: {"description": "Not JSON or multipart/form-data."},
               429: {"description": "Rate limit or the key's job quota; see Retry-After."},
               502: {"description": "The render failed on the server."},
               503: {"description": "Queue full or a backend down; see Retry-After."}},
)
async def generate(request: Request, settings: SettingsDep, database: DatabaseDep,
                   storage: StorageDep, queue: QueueDep, styles: StylesDep, caller: CallerDep,
                   finished: FinishedDep,
                   prefer: Annotated[str | None, Header()] = None,
                   idempotency_key: Annotated[str | None, Header(
                       alias=IDEMPOTENCY_HEADER, description="Retry safely: the same key "
                       "and body replay the first response.")] = None) -> JSONResponse:
    """Render an image. JSON (images as data URLs) or multipart/form-data (images as files:
    `image`, `style_image`, `mask`, and `control_image` parts for the `control` units).
    Inpainting: `mask` over `image`; outpainting: `expand`."""
    body, upload = await read_body(request)
    idempotency = Idempotency.of(idempotency_key, database, settings, caller, "generate",
                                 body, upload)

    async def work(guard: Idempotency) -> JSONResponse:
        # 1.-3. Check, admit and queue it; the job is named to the Idempotency-Key at once.
        job_id = await enqueue(body, upload, Submission(database, storage, queue), settings,
                               styles, caller, guard)
        # 4. Wait for the image, up to the Prefer header's patience.
        respond_async, wait = _prefer(prefer, settings.sync_timeout)
        job = await wait_for_job(database, job_id, 0 if respond_async else wait, finished,
                                 just_queued=True)
        return _answer(job, job_id, request, settings, storage, respond_async)

    return await idempotency.run(work)


@router.post(
    "/jobs/{job_id}/upscale", response_model=GenerateResult, tags=["jobs"],
    responses={202: {"model": JobOut, "description": "Still running: poll the Location."},
               404: {"description": "No such job (or another key's)."},
               409: {"description": "The job has not succeeded (yet), or was cancelled."},
               429: {"description": "Rate limit or the key's job quota; see Retry-After."},
               502: {"description": "The render failed on the server."},
               503: {"description": "Queue full or a backend down; see Retry-After."}},
)
async def upscale_job(job_id: str, request: Request, settings: SettingsDep,
                      database: DatabaseDep, storage: StorageDep, queue: QueueDep,
                      caller: CallerDep, finished: FinishedDep,
                      body: UpscaleBody | None = None,
                      prefer: Annotated[str | None, Header()] = None,
                      idempotency_key: Annotated[str | None, Header(
                          alias=IDEMPOTENCY_HEADER, description="Retry safely: the same key "
                          "and body replay the first response.")] = None) -> JSONResponse:
    """One of a finished job's images, ``scale`` times larger, as a new job (answered as
    POST /generate answers): the image is read from storage, not sent again. The built-in
    engine draws its own text renders again at the new size. No body: ``{"index": 0,
    "scale": 2}``."""
    body = body if body is not None else UpscaleBody()
    # 1. The job: the caller's own, finished, with that image.
    job = await load_job(database, job_id, caller.owner)
    if job is None:
        raise ApiError(404, "job not found", job_id=job_id)
    if JobStatus(job.status) is not JobStatus.SUCCEEDED:
        raise ApiError(409, f"the job has not succeeded (it is {job.status}); only a "
                       f"finished job's images can be upscaled", job_id=job_id)
    outputs = {output.get("index"): output for output in job.outputs or ()}
    if body.index not in outputs:
        raise field_error(["body", "index"], f"the job has {len(outputs)} image(s); give "
                          f"an index from 0 to {len(outputs) - 1}", body.index)
    idempotency = Idempotency.of(idempotency_key, database, settings, caller,
                                 f"upscale:{job_id}", body)

    async def work(guard: Idempotency) -> JSONResponse:
        # 2.-3. Its image and record as the new job's input; checked, admitted, queued.
        new_id = await run_in_threadpool(_submit_upscale, job, outputs[body.index], body,
                                         Submission(database, storage, queue), settings,
                                         caller, guard)
        # 4. Wait for the image, up to the Prefer header's patience.
        respond_async, wait = _prefer(prefer, settings.sync_timeout)
        done = await wait_for_job(database, new_id, 0 if respond_async else wait, finished,
                                  just_queued=True)
        return _answer(done, new_id, request, settings, storage, respond_async)

    return await idempotency.run(work)


def _submit_upscale(job: Job, output: dict[str, Any], body: UpscaleBody,
                    submission: Submission, settings: Settings, caller: Caller,
                    guard: Idempotency) -> str:
    """The new job's id. Blocking."""
    generation = GenerationRequest(
        input_type="upscale", prompt=body.prompt, strength=body.strength, scale=body.scale,
        seed=body.seed if body.seed is not None else secrets.randbelow(MAX_SEED + 1),
        model=job.model or None)
    try:
        check_request(generation, has_image=True)
    except InvalidRequestError as exc:
        raise invalid_request(exc) from None
    try:
        data = submission.storage.get(output["key"])
    except StorageError as exc:
        raise ApiError(503, "image storage is unavailable; try again later",
                       headers={"Retry-After": "10"}, job_id=job.id) from exc
    try:
        image = load_image(data)
        check_upscale(image.size, generation.scale or 2)
    except InvalidRequestError as exc:
        raise invalid_request(exc) from None
    # The job's stored record (its PNG may be a WebP or JPEG without one) goes with the
    # input, so the engine can draw that scene again at the new size.
    record = parse_record(output.get("record"))
    if record is not None:
        attach_record(image, record)
    new_id = submission.submit(generation, image, body.output_format or job.output_format,
                               caller.owner, admission=settings)
    guard.attach_blocking(new_id)
    return new_id


def _answer(job: Job | None, job_id: str, request: Request, settings: Settings,
            storage: Storage, respond_async: bool) -> JSONResponse:
    if job is None:  # deleted under us; nothing sensible to show
        raise ApiError(404, "job not found", job_id=job_id)
    urls = UrlMaker(storage, settings, request)
    shown = job_out(job, urls)
    status = JobStatus(job.status)
    if status is JobStatus.SUCCEEDED:
        result = GenerateResult(job_id=job_id, image_url=shown.outputs[0].url,
                                image_urls=[out.url for out in shown.outputs],
                                thumbnail_url=shown.outputs[0].thumbnail_url,
                                thumbnail_urls=[out.thumbnail_url for out in shown.outputs],
                                seed=shown.outputs[0].seed,
                                seeds=[out.seed for out in shown.outputs], job=shown)
        return JSONResponse(result.model_dump(mode="json"))
    extra = {"job_id": job_id, "job": shown.model_dump(mode="json")}
    if status is JobStatus.FAILED:
        raise job_failure(job, settings.model, extra)
    if status is JobStatus.CANCELLED:
        raise ApiError(409, "the job was cancelled", **extra)
    headers = {"Location": shown.links["self"]}
    if respond_async:
        headers["Preference-Applied"] = "respond-async"
    return JSONResponse(shown.model_dump(mode="json"), status_code=202, headers=headers)
