"""The OpenAI Images API on the same jobs: POST /v1/images/generations and /v1/images/edits.

Each call is one job, made exactly as POST /generate makes it (the same checks, key quota,
queue admission, Idempotency-Key, storage and worker), then waited for up to the server's
``sync_timeout``. Answers and errors take OpenAI's shapes (api/openai_errors.py); ``data``
holds signed URLs or, for ``response_format=b64_json``, the stored files themselves. A render
still running when that wait ends answers 202 with ``data: []``, its ``job_id`` and a
``Location``: follow it at GET /jobs/{job_id}.

An edit's ``mask`` is OpenAI's: a PNG with an alpha channel, the image's size, whose fully
transparent pixels are repainted; the rest of the image is kept pixel for pixel (outside the
mask's feathered edge). Anything else is a 400 naming ``mask``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.auth import Caller, CallerDep
from api.deps import DatabaseDep, FinishedDep, QueueDep, SettingsDep, StorageDep, StylesDep
from api.errors import ApiError, field_error
from api.generation import Submission, enqueue, job_failure, json_form_field
from api.idempotency import HEADER as IDEMPOTENCY_HEADER
from api.idempotency import Idempotency
from api.jobview import UrlMaker, utc
from api.jsonbody import JsonRoute
from api.jsonparse import UPLOAD_PREFIX
from api.limits import MAX_BODY_BYTES, MAX_FORM_FIELDS
from api.openai_errors import ERROR_RESPONSES
from api.openai_mapping import openai_mask, to_generate_body
from api.openai_schemas import ImageData, ImageEditBody, ImageGenerationBody, ImagesResponse
from api.polling import wait_for_job
from api.styles import CallerStyles
from workers.db import Database, Job, JobStatus
from workers.finish_signals import FinishListener
from workers.settings import Settings
from workers.storage import Storage
from workers.task_queue import TaskQueue

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["openai"], route_class=JsonRoute)

IMAGE_FIELDS = ("image", "image[]")  # the SDKs send one image as `image`, a list as `image[]`
MAX_EDIT_FILES = 16  # as many as OpenAI takes, so more than one gets a clear message
IdempotencyHeader = Annotated[str | None, Header(
    alias=IDEMPOTENCY_HEADER, description="Retry safely: the same key and body replay the "
                                          "first response.")]


@dataclass
class _Service:
    request: Request
    settings: Settings
    database: Database
    storage: Storage
    queue: TaskQueue
    styles: CallerStyles
    caller: Caller
    finished: FinishListener


def _form_field(schema: dict[str, Any]) -> dict[str, Any]:
    """A form part is there or not: it cannot be null, so the schema says no null."""
    if "anyOf" not in schema:
        return schema
    options = [option for option in schema["anyOf"] if option.get("type") != "null"]
    field = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
    return {**options[0], **field} if len(options) == 1 else {**field, "anyOf": options}


def _edit_docs() -> dict[str, Any]:
    schema = ImageEditBody.model_json_schema()
    binary = {"type": "string", "format": "binary"}
    fields = {name: _form_field(field) for name, field in schema["properties"].items()}
    form = {**schema, "required": ["image"],
            "properties": {"image": {**binary, "description": "The input image (PNG, JPEG or "
                                                               "WEBP); `image[]` also works."},
                           **fields,
                           "mask": {**binary, "description": "Inpainting: a PNG with an "
                                    "alpha channel, the image's size; its fully transparent "
                                    "pixels are edited, the rest kept."}}}
    return {"requestBody": {"required": True,
                            "content": {"multipart/form-data": {"schema": form}}}}


RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": ImagesResponse, "description": "Still rendering when the server's wait "
                                                  "ended: `data` is empty; see `job_id`."},
    **ERROR_RESPONSES}


@router.post("/images/generations", response_model=ImagesResponse, responses=RESPONSES)
async def create_image(body: ImageGenerationBody, request: Request, settings: SettingsDep,
                       database: DatabaseDep, storage: StorageDep, queue: QueueDep,
                       styles: StylesDep, caller: CallerDep, finished: FinishedDep,
                       idempotency_key: IdempotencyHeader = None) -> JSONResponse:
    """Text-to-image, as OpenAI's `images.generate`."""
    service = _Service(request, settings, database, storage, queue, styles, caller, finished)
    generate = to_generate_body(body, settings)
    return await _render(service, "openai-generations", body, generate, None,
                         idempotency_key, body.response_format)


@router.post("/images/edits", response_model=ImagesResponse, openapi_extra=_edit_docs(),
             responses=RESPONSES)
async def edit_image(request: Request, settings: SettingsDep, database: DatabaseDep,
                     storage: StorageDep, queue: QueueDep, styles: StylesDep,
                     caller: CallerDep, finished: FinishedDep,
                     idempotency_key: IdempotencyHeader = None) -> JSONResponse:
    """Image-to-image (hybrid with a prompt), as OpenAI's `images.edit`; multipart only. With
    a `mask`, only its transparent area is edited."""
    body, upload, mask = await _read_edit(request)
    service = _Service(request, settings, database, storage, queue, styles, caller, finished)
    generate = to_generate_body(body, settings, has_image=True)
    if mask is not None:
        # As a POST /generate mask file part: its bytes named in `files`, decoded with the
        # image by build_request (which compares their sizes).
        content = await run_in_threadpool(openai_mask, mask)
        generate.mask = body.mask
        generate.files[body.mask] = content
    return await _render(service, "openai-edits", body, generate, upload, idempotency_key,
                         body.response_format)


async def _read_edit(request: Request) -> tuple[ImageEditBody, bytes, bytes | None]:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise ApiError(415, "send multipart/form-data with the image as a file part")
    form = await request.form(max_files=MAX_EDIT_FILES + 2, max_fields=MAX_FORM_FIELDS,
                              max_part_size=MAX_BODY_BYTES)
    masks = form.getlist("mask")
    if masks and (len(masks) > 1 or not isinstance(masks[0], UploadFile)):
        raise field_error(["body", "mask"], "must be one PNG file part",
                          f"<{len(masks)} parts>")
    mask = await masks[0].read() if masks else None
    images = [value for name in IMAGE_FIELDS for value in form.getlist(name)]
    files = [value for value in images if isinstance(value, UploadFile)]
    if len(images) != 1 or len(files) != 1:
        problem = "is required" if not images else \
            "must be one file part" if len(images) == 1 else "takes one image, not several"
        raise field_error(["body", "image"], f"`image` {problem}", "<image>",
                          kind="missing" if not images else "value_error")
    fields: dict[str, Any] = {}
    for key in set(form.keys()) - {*IMAGE_FIELDS, "mask"}:
        values = form.getlist(key)
        if any(isinstance(value, UploadFile) for value in values):
            raise field_error(["body", key], "must be a form field, not a file", "<file>")
        texts = [value for value in values if isinstance(value, str) and value != ""]
        if texts:
            fields[key] = texts if key == "colors" and len(texts) > 1 else texts[-1]
    if isinstance(fields.get("loras"), str):  # JSON text in a form, as POST /generate's
        fields["loras"] = await asyncio.to_thread(json_form_field, "loras", fields["loras"])
    try:
        body = ImageEditBody.model_validate(fields, strict=False)
    except ValidationError as exc:
        errors = [dict(error, loc=("body", *error["loc"])) for error in exc.errors()]
        raise RequestValidationError(errors) from None
    if mask is not None:
        body.mask = UPLOAD_PREFIX + hashlib.sha256(mask).hexdigest()
    return body, await files[0].read(), mask


async def _render(service: _Service, endpoint: str, body: ImageGenerationBody | ImageEditBody,
                  generate: Any, upload: bytes | None, idempotency_key: str | None,
                  response_format: str | None) -> JSONResponse:
    settings = service.settings
    idempotency = Idempotency.of(idempotency_key, service.database, settings, service.caller,
                                 endpoint, body, upload)

    async def work(guard: Idempotency) -> JSONResponse:
        submission = Submission(service.database, service.storage, service.queue)
        job_id = await enqueue(generate, upload, submission, settings, service.styles,
                               service.caller, guard)
        job = await wait_for_job(service.database, job_id, settings.sync_timeout,
                                 service.finished, just_queued=True)
        return await _answer(service, job, job_id, response_format == "b64_json")

    return await idempotency.run(work)


async def _answer(service: _Service, job: Job | None, job_id: str,
                  inline: bool) -> JSONResponse:
    if job is None:  # deleted under us
        raise ApiError(404, "job not found", job_id=job_id)
    status = JobStatus(job.status)
    if status is JobStatus.FAILED:
        raise job_failure(job, service.settings.model, {"job_id": job_id})
    if status is JobStatus.CANCELLED:
        raise ApiError(409, "the job was cancelled", job_id=job_id)
    urls = UrlMaker(service.storage, service.settings, service.request)
    created = utc(job.created_at)
    assert created is not None
    if status is not JobStatus.SUCCEEDED:
        # Still rendering when the server's wait ran out: as POST /generate, a 202 naming the
        # job (no 5xx: nothing failed, and a client retrying it would render twice).
        pending = ImagesResponse(created=int(created.timestamp()), data=[],
                                 output_format=job.output_format, size="", job_id=job_id)
        return JSONResponse(pending.model_dump(mode="json"), status_code=202,
                            headers={"Location": urls.job(job_id)})
    data = []
    outputs = sorted(job.outputs or [], key=lambda out: out["index"])
    for out in outputs:
        revised = (out.get("record") or {}).get("prompt")
        if inline:
            raw = await run_in_threadpool(service.storage.get, out["key"])
            data.append(ImageData(b64_json=base64.b64encode(raw).decode("ascii"),
                                  revised_prompt=revised))
        else:
            data.append(ImageData(url=urls.object(out["key"]), revised_prompt=revised))
    first = outputs[0] if outputs else {"width": 0, "height": 0}
    answer = ImagesResponse(created=int(created.timestamp()), data=data,
                            output_format=job.output_format,
                            size=f"{first['width']}x{first['height']}", job_id=job_id)
    return JSONResponse(answer.model_dump(mode="json", exclude_none=True))
