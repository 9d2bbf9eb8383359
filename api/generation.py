"""POST /generate's work before the queue: read the body (JSON or multipart), check it
exactly as the library would, and turn it into a stored input image plus a job row."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import secrets
from dataclasses import replace
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.auth import Caller
from api.capabilities import check_capabilities, check_lora_support
from api.errors import JOB_ERROR_STATUS, ApiError, field_error, invalid_request, job_error_entry
from api.idempotency import Idempotency
from api.jsonbody import is_json, read_json
from api.jsonparse import UPLOAD_PREFIX, JsonRefused, parse_json
from api.limits import MAX_BODY_BYTES, MAX_FORM_FIELDS, QUEUE_FULL_RETRY_AFTER, QUOTA_RETRY_AFTER
from api.model_access import resolve_model
from api.references import DecodeCache, References, check_mask_size, decode_references
from api.routing import check_served
from api.schemas import GenerateBody, HiresOptions
from api.styles import CallerStyles
from fractal import GenerationRequest, InvalidRequestError
from fractal.images import MAX_IMAGE_BYTES, image_bytes, load_image
from fractal.record import attach_record, record_from_png
from fractal.references import MAX_CONTROLS
from fractal.validation import MAX_SEED, check_request, check_upscale
from workers import job_errors, netguard
from workers.db import Database, Job, JobStatus
from workers.db import jobs as job_store
from workers.job_errors import NOT_QUEUED, JobError
from workers.references import store_references
from workers.runner import input_key
from workers.settings import Settings
from workers.storage import Storage, StorageError
from workers.task_queue import TaskQueue

__all__ = ["Submission", "admit", "build_request", "check_webhook", "enqueue",
           "fetch_image", "input_image", "job_failure", "json_form_field", "read_body"]

logger = logging.getLogger(__name__)

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
CONTROL_FILE_PART = "control_image"  # multipart: control images, in the units' order
FILE_FIELDS = ("style_image", "mask")  # multipart: one file part each, or a data URL as text


async def read_body(request: Request) -> tuple[GenerateBody, bytes | None]:
    """The body as a GenerateBody (its reference images' bytes in ``files``), and the bytes
    of an uploaded image file if there was one."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    upload: bytes | None = None
    strict = True  # JSON has numbers: "64" is not one (as OpenAI's API has it)
    if is_json(request):
        # A data URL arrives as the file's bytes, as a file part does; so do references.
        data, upload, files = await read_json(request, image_field="image")
    elif media in FORM_TYPES:
        data, upload, files = await _read_form(request)
        strict = False  # every form field is text
    else:
        raise ApiError(415, "send application/json or multipart/form-data")
    try:
        body = GenerateBody.model_validate(data, strict=strict)
    except ValidationError as exc:
        errors = [dict(error, loc=("body", *error["loc"])) for error in exc.errors()]
        raise RequestValidationError(errors) from None
    body.files.update(files)
    return body, upload


async def _read_form(request: Request
                     ) -> tuple[dict[str, Any], bytes | None, dict[str, bytes]]:
    # The input image, a style reference, a mask and one control image per control unit.
    form = await request.form(max_files=3 + MAX_CONTROLS, max_fields=MAX_FORM_FIELDS,
                              max_part_size=MAX_BODY_BYTES)
    data: dict[str, Any] = {}
    upload: bytes | None = None
    files: dict[str, bytes] = {}
    control_files: list[str] = []
    for key in set(form.keys()):
        values = form.getlist(key)
        if key in ("image", *FILE_FIELDS) and len(values) > 1:
            raise field_error(["body", key], "give one image, not several",
                              f"<{len(values)} parts>")
        if key == "image" and isinstance(values[-1], UploadFile):
            upload = await values[-1].read()
            continue
        if key in FILE_FIELDS and isinstance(values[-1], UploadFile):
            data[key] = await _file_part(values[-1], files)
            continue
        if key == CONTROL_FILE_PART:
            for value in values:
                if not isinstance(value, UploadFile):
                    raise field_error(["body", key], "must be a file part", "<text>")
                control_files.append(await _file_part(value, files))
            continue
        if any(isinstance(value, UploadFile) for value in values):
            raise field_error(["body", key], "must be a form field, not a file", "<file>")
        texts = [value for value in values if isinstance(value, str) and value != ""]
        if not texts:
            continue  # an empty form field means "not given", as browsers send them
        data[key] = texts if key == "colors" and len(texts) > 1 else texts[-1]
    for key in ("control", "expand", "loras"):  # JSON text in a form
        if isinstance(data.get(key), str):
            data[key] = await asyncio.to_thread(json_form_field, key, data[key])
    if control_files:
        _fill_controls(data, control_files)
    return data, upload, files


async def _file_part(part: UploadFile, files: dict[str, bytes]) -> str:
    """A reference image's file part: its bytes kept in ``files``, under the name the body
    holds instead (as a JSON body's reference decoded by api.jsonparse)."""
    content = await part.read()
    name = UPLOAD_PREFIX + await asyncio.to_thread(lambda: hashlib.sha256(content).hexdigest())
    files[name] = content
    return name


def json_form_field(key: str, text: str) -> Any:
    """A form field that holds JSON text (``control``'s units, ``expand``'s sides, ``loras``),
    read as a JSON body is."""
    try:
        data, _, _ = parse_json(text.encode("utf-8", "surrogatepass"))
    except JsonRefused as exc:
        raise RequestValidationError([{"loc": ["body", key, *exc.loc], "msg": exc.msg,
                                       "type": exc.kind, "input": exc.value}]) from None
    return data


def _fill_controls(data: dict[str, Any], files: list[str]) -> None:
    """``control_image`` file parts fill, in order, the control units that have no image."""
    units = data.get("control")
    empty = [unit for unit in units if isinstance(unit, dict) and unit.get("image") is None] \
        if isinstance(units, list) else []
    if len(files) > len(empty):
        raise field_error(["body", CONTROL_FILE_PART], f"{len(files)} control image file(s) "
                          f"for {len(empty)} control unit(s) without an image: give each "
                          "unit in `control` (JSON text) and one file per unit",
                          f"<{len(files)} files>")
    for unit, name in zip(empty, files, strict=False):
        unit["image"] = name


def build_request(body: GenerateBody, upload: bytes | None, settings: Settings,
                  styles: CallerStyles, decoded: DecodeCache | None = None,
                  image_size: tuple[int, int] | None = None
                  ) -> tuple[GenerationRequest, Image.Image | None, References]:
    """The library's request, checked by the library (and against what its model takes); the
    decoded input image; its reference images and mask, decoded and named by hash
    (``decoded``: a cache shared by a batch's items; ``image_size``: the size of the image a
    batch item's placeholder stands for, which its mask must have). Blocking."""
    prompt_field = "content" if body.content is not None else "prompt"
    if body.content is not None and body.prompt is not None and body.content != body.prompt:
        raise field_error(["body", "prompt"], "give the prompt as `content` or `prompt`, "
                          "not both", body.prompt)
    if body.image is not None and upload is not None:
        raise field_error(["body", "image"], "give the image as a file or as a data URL, "
                          "not both", "<image>")
    if body.image_url is not None:
        if body.image is not None or upload is not None:
            raise field_error(["body", "image_url"], "give one image: `image`, a file or "
                              "`image_url`", body.image_url)
        _check_image_url(body.image_url, settings)
    if body.webhook is not None:
        _check_url_syntax("webhook", body.webhook)
    has_image = body.image is not None or upload is not None or body.image_url is not None
    # The API picks the seed, so the stored request is reproducible and a retry is identical.
    seed = body.seed if body.seed is not None else secrets.randbelow(MAX_SEED + 1)
    rename = {"prompt": prompt_field}
    if body.image_url is not None:
        rename["image"] = "image_url"
    try:
        request = GenerationRequest(
            input_type=body.input_type,
            prompt=body.content if body.content is not None else body.prompt,
            negative_prompt=body.negative_prompt, width=body.width, height=body.height,
            steps=body.steps, guidance=body.guidance, seed=seed, scheduler=body.scheduler,
            style=body.style, lighting=body.lighting, colors=body.colors,
            texture=body.texture, strength=body.strength, n=body.n,
            model=resolve_model(body.model, settings), scale=body.scale,
            hires=body.hires.model_dump(exclude_none=True)
            if isinstance(body.hires, HiresOptions) else body.hires,
            style_image=body.style_image, style_strength=body.style_strength,
            style_mode=body.style_mode,
            control=None if body.control is None else
            [unit.model_dump(exclude_none=True) for unit in body.control],
            mask=body.mask, mask_blur=body.mask_blur, inpaint_area=body.inpaint_area,
            padding=body.padding, expand=body.expand,
            loras=None if body.loras is None else [lora.model_dump() for lora in body.loras],
        )
        check_request(request, has_image=has_image)
        check_capabilities(request, settings)
        style = None
        if isinstance(request.style, str):
            # Unknown: a 422 listing the valid names. A caller's own style travels inline.
            style = styles.get(request.style)
            request = replace(request, style=styles.for_request(request.style))
        check_lora_support(request, settings, style, prompt_field)
        if body.webhook is not None:
            check_webhook(["body", "webhook"], body.webhook, settings)
        upscale = request.input_type == "upscale"
        image = None
        if body.image is not None:
            image = input_image(image_bytes(body.image), upscale)
        elif upload is not None:
            image = input_image(upload, upscale)
        elif body.image_url is not None:
            image = fetch_image(body.image_url, settings, upscale)
        if image is not None and upscale:
            check_upscale(image.size, request.scale or 2)
        references = decode_references(request, decoded, body.files)
        check_mask_size(references, image_size or (image.size if image is not None else None))
    except InvalidRequestError as exc:
        raise invalid_request(exc, rename=rename) from None
    return request, image, references


def input_image(data: bytes, upscale: bool = False, argument: str = "image") -> Image.Image:
    """A caller's image file, decoded safely (no metadata survives). The input of an upscale
    keeps one thing: the record of an image this library made, parsed and written anew, so
    the worker's engine can draw that scene again larger (the stored input is a PNG)."""
    image = load_image(data, argument)
    record = record_from_png(data) if upscale else None
    return attach_record(image, record) if record is not None else image


def _check_url_syntax(field: str, url: str) -> None:
    try:
        netguard.check_url(url)
    except netguard.UnsafeUrlError as exc:
        raise field_error(["body", field], f"is refused: {exc}", url) from None


def _check_image_url(url: str, settings: Settings) -> None:
    if not settings.allow_image_urls:
        raise field_error(["body", "image_url"], "image URLs are disabled on this server; "
                          "send the image as a data URL or a file", url)
    _check_url_syntax("image_url", url)


def check_webhook(loc: list[str | int], url: str, settings: Settings) -> None:
    """A 422 at ``loc`` unless ``url`` passes the address rules (its host is resolved)."""
    try:
        netguard.vet_url(url, allow_private=settings.webhook_allow_private)
    except netguard.UnsafeUrlError as exc:
        raise field_error(loc, f"is refused: {exc}", url) from None
    except netguard.FetchError as exc:
        raise field_error(loc, f"cannot be reached: {exc}", url) from None


def fetch_image(url: str, settings: Settings, upscale: bool = False) -> Image.Image:
    """The image behind an ``image_url``, fetched under the address rules and decoded by the
    library's safe decoder; a 422 naming ``image_url`` if anything is wrong."""
    try:
        result = netguard.fetch(url, max_bytes=MAX_IMAGE_BYTES, timeout=settings.fetch_timeout,
                                allow_private=settings.webhook_allow_private,
                                headers={"Accept": "image/png, image/jpeg, image/webp"})
    except netguard.UnsafeUrlError as exc:
        raise field_error(["body", "image_url"], f"is refused: {exc}", url) from None
    except netguard.FetchError as exc:
        raise field_error(["body", "image_url"], f"could not be fetched: {exc}", url) from None
    # Bytes, never the URL string: load_image reads a str as a local path.
    return input_image(result.content, upscale, argument="image_url")


class Submission:
    """A checked request on its way to the queue: input image, then row, then the message.

    The input is stored before the row exists: a queued row is claimable at once (by its own
    message, as another job's batch partner, by the reconciler's re-send), so its input must
    already be there. The input's key derives from the job id, which is chosen first.
    """

    def __init__(self, database: Database, storage: Storage, queue: TaskQueue) -> None:
        self.database = database
        self.storage = storage
        self.queue = queue

    def submit(self, request: GenerationRequest, image: Image.Image | None,
               output_format: str, owner: str | None = None,
               webhook_url: str | None = None, admission: Settings | None = None,
               references: References | None = None) -> str:
        """Input image and reference images, row, message; the new job's id. Blocking.

        ``webhook_url`` must have passed ``check_webhook`` (``build_request`` does). With
        ``admission``, its limits are checked first (see :func:`admit`), in the same unit of
        work as the insert: one round of the database, not three.
        """
        job_id = job_store.new_job_id()
        key = input_key(job_id) if image is not None else None
        references = references or References()
        if image is not None or references.images:
            if admission is not None:
                # A caller over its limits is refused before its image costs an upload.
                with self.database.session() as session:
                    admit(session, admission, owner)
                    check_served(session, admission, [request.model or ""])
            if image is not None and key is not None:
                self._store_input(job_id, key, image)
            self._store_references(job_id, references)
        stored = references.stored(request)  # image bytes live in storage, never in the row
        with self.database.session() as session:
            if admission is not None:
                # Again for an image job: others may have been admitted during its upload.
                try:
                    admit(session, admission, owner)
                except ApiError:
                    if key is not None:
                        logger.info("job %s refused after its input was stored: %s is "
                                    "unused", job_id, key)
                    raise
                check_served(session, admission, [request.model or ""])
            job_store.create_job(session, job_id=job_id, model=request.model or "",
                                 request=stored, input_key=key, output_format=output_format,
                                 owner=owner, webhook_url=webhook_url)
        try:
            self.queue.enqueue_render(job_id, model=request.model or "")
        except Exception as exc:  # kombu/redis errors: the broker is down or refused
            logger.error("job %s: not queued: %s", job_id, exc)
            self._fail(job_id, NOT_QUEUED)
            raise ApiError(503, "the job queue is unavailable; try again later",
                           headers={"Retry-After": "10"}, job_id=job_id) from None
        return job_id

    def _store_input(self, job_id: str, key: str, image: Image.Image) -> None:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        try:
            self.storage.put(key, buffer.getvalue(), "image/png")
        except StorageError as exc:
            # No row was written: there is no job to fail, and the caller may simply retry.
            logger.error("job %s: input image not stored: %s", job_id, exc)
            raise ApiError(503, "image storage is unavailable; try again later",
                           headers={"Retry-After": "10"}) from None

    def _store_references(self, job_id: str, references: References) -> None:
        try:
            store_references(self.storage, references.images)
        except StorageError as exc:
            logger.error("job %s: reference images not stored: %s", job_id, exc)
            raise ApiError(503, "image storage is unavailable; try again later",
                           headers={"Retry-After": "10"}) from None

    def _fail(self, job_id: str, error: JobError) -> None:
        with self.database.session() as session:
            job_store.finish_job(session, job_id, JobStatus.FAILED, error=error)


def admit(session: Session, settings: Settings, owner: str | None) -> None:
    """The caller's own quota (429), then the whole queue's (503), each with Retry-After."""
    # Counted before the insert, so a burst may overshoot by a few jobs: soft limits.
    if owner is not None:
        mine = job_store.count_unfinished(session, owner)
        if mine >= settings.max_jobs_per_key:
            raise ApiError(429, f"this key already has {mine} unfinished jobs, the most "
                           f"allowed; wait for one to finish",
                           headers={"Retry-After": str(QUOTA_RETRY_AFTER)}, unfinished=mine)
    queued = job_store.count_queued(session)
    if queued >= settings.max_queued_jobs:
        raise ApiError(503, "the render queue is full; try again later",
                       headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER)}, queued=queued)


def _check_and_submit(body: GenerateBody, upload: bytes | None, submission: Submission,
                      settings: Settings, styles: CallerStyles, caller: Caller,
                      guard: Idempotency) -> str:
    generation, image, references = build_request(body, upload, settings, styles)
    job_id = submission.submit(generation, image, body.output_format, caller.owner,
                               webhook_url=body.webhook, admission=settings,
                               references=references)
    guard.attach_blocking(job_id)
    return job_id


async def enqueue(body: GenerateBody, upload: bytes | None, submission: Submission,
                  settings: Settings, styles: CallerStyles, caller: Caller,
                  guard: Idempotency) -> str:
    """Check a body exactly as the library would, admit it, queue it; the new job's id.

    The job is named to the request's Idempotency-Key as soon as it exists. Shared by every
    route that renders one request (POST /generate, the OpenAI-compatible /v1/images).
    All of it is blocking work, done in one trip to a worker thread: each trip costs time
    that a sync request waits for."""
    return await run_in_threadpool(_check_and_submit, body, upload, submission, settings,
                                   styles, caller, guard)


def job_failure(job: Job, settings_model: str, body: dict[str, Any]) -> ApiError:
    """A failed job as an HTTP error, its status chosen by its error's code
    (:data:`api.errors.JOB_ERROR_STATUS`): a 422 names the field the request got wrong."""
    error = JobError.from_dict(job.error_detail) if job.error_detail else \
        JobError(job_errors.INTERNAL, job.error or "the render failed")
    if error.code == job_errors.MODEL_UNAVAILABLE and job.model != settings_model:
        # The caller chose a model this server cannot load; the default failing is ours.
        error = replace(error, code=job_errors.INVALID_REQUEST, field="model",
                        value=job.model)
    status, headers = JOB_ERROR_STATUS.get(error.code, (502, None))
    if status == 422:
        return ApiError(422, [job_error_entry(error)], **body)
    return ApiError(status, error.message, headers=headers, code=error.code, **body)
