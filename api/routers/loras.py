"""LoRA files: list the server's LoRA folder, and (operator keys) add or remove one.

The folder (SPEC2FRACTAL_LORA_DIR) is shared by the API and the workers: a file dropped in
it, or uploaded here, is usable by name in the next request. Files are safetensors only: a
pickled checkpoint could run code when loaded, so it is refused unread.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.auth import Caller, CallerDep
from api.deps import SettingsDep
from api.errors import ApiError, field_error
from api.lora_upload import FILE_FIELD, Upload, receive_upload
from fractal import InvalidRequestError
from fractal.loras import LORA_SUFFIX, LoraFile, check_lora_name, inspect_lora, list_loras
from workers.settings import Settings

__all__ = ["LoraInfo", "LoraList", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/loras", tags=["loras"])

ADMIN_ONLY = {403: {"description": "Not an operator key (keys create --admin)."}}
NO_FOLDER = {501: {"description": "This server has no LoRA folder (SPEC2FRACTAL_LORA_DIR)."}}


class LoraInfo(BaseModel):
    name: str = Field(description="What requests name it by (`loras`, `<lora:name:w>`).")
    family: str | None = Field(description="The model family it was trained for (sd15, sd2, "
                               "sdxl, sd3, flux), when its shapes tell; else null.")
    format: str = Field(description="`diffusers`, `kohya` (kohya-ss and Civitai's keys) or "
                                    "`unknown`.")
    size: int = Field(description="Bytes.")
    hash: str = Field(description="AUTOMATIC1111's short hash (Civitai's AutoV3), as images' "
                                  "records name it.")


class LoraList(BaseModel):
    loras: list[LoraInfo]


def _info(lora: LoraFile) -> LoraInfo:
    return LoraInfo(name=lora.name, family=lora.family, format=lora.format, size=lora.size,
                    hash=lora.short_hash)


def _folder(settings: Settings) -> Path:
    if settings.lora_dir is None:
        raise ApiError(501, "this server has no LoRA folder (SPEC2FRACTAL_LORA_DIR)")
    return settings.lora_dir


def _require_admin(settings: Settings, caller: Caller) -> None:
    if settings.auth_required and not caller.admin:
        raise ApiError(403, "changing the LoRA folder needs an operator key "
                       "(`spec2fractal keys create --name NAME --admin`)")


@router.get("", response_model=LoraList)
async def get_loras(settings: SettingsDep) -> LoraList:
    """The LoRA folder's files, by name (hashing reads each file once; then cached)."""
    if settings.lora_dir is None:
        return LoraList(loras=[])
    found = await run_in_threadpool(list_loras, settings.lora_dir)
    return LoraList(loras=[_info(lora) for lora in found])


@router.post("", response_model=LoraInfo, status_code=201,
             responses={**ADMIN_ONLY, **NO_FOLDER,
                        409: {"description": "A LoRA by that name exists."},
                        413: {"description": "Over the upload cap."},
                        415: {"description": "Not multipart/form-data."},
                        422: {"description": "Not a safetensors file (`file`), or a bad "
                                             "`name`."}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "multipart/form-data": {"schema": {
                     "type": "object", "required": [FILE_FIELD],
                     "properties": {
                         FILE_FIELD: {"type": "string", "format": "binary",
                                      "description": "A .safetensors LoRA file."},
                         "name": {"type": "string", "description": "Its name; default: "
                                  "the file's name without .safetensors."}}}}}}})
async def upload_lora(request: Request, response: Response, settings: SettingsDep,
                      caller: CallerDep) -> LoraInfo:
    """Add a LoRA file to the folder (operator keys only; anyone when auth is off)."""
    _require_admin(settings, caller)
    folder = _folder(settings)
    try:
        await run_in_threadpool(folder.mkdir, parents=True, exist_ok=True)
    except OSError as exc:
        logger.error("LoRA folder %s cannot be created: %s", folder, exc)
        raise ApiError(503, "the LoRA folder is not writable") from None
    upload = await receive_upload(request, folder, int(settings.lora_upload_max_bytes))
    try:
        lora = await run_in_threadpool(_install, upload, folder)
    finally:
        upload.discard()
    response.headers["Location"] = "/loras"
    return _info(lora)


def _install(upload: Upload, folder: Path) -> LoraFile:
    """Check the uploaded file and move it into place under its name. Blocking."""
    assert upload.path is not None
    given = upload.fields.get("name")
    field = "name" if given is not None else FILE_FIELD
    raw = given if given is not None else (upload.filename or "")
    raw = raw.rsplit("/", 1)[-1].rsplit("\\", 1)[-1] if given is None else raw
    if given is None and not raw.lower().endswith(LORA_SUFFIX):
        raise field_error(["body", FILE_FIELD], "must be a .safetensors file (pickled "
                          "checkpoints, .ckpt/.pt/.bin, are refused: loading one can run "
                          "code)", raw[:200])
    try:
        name = check_lora_name(raw, field)
    except InvalidRequestError as exc:
        raise field_error(["body", field], exc.reason, raw[:200]) from None
    if "/" in name:
        raise field_error(["body", field], "must be a file name, not a hub id", name)
    try:
        lora = inspect_lora(upload.path, name=name)
    except InvalidRequestError as exc:
        raise field_error(["body", FILE_FIELD], f"{exc.reason} (only .safetensors LoRA "
                          "files are taken)", upload.filename) from None
    target = folder / f"{name}{LORA_SUFFIX}"
    existing = {path.name.casefold() for path in folder.iterdir()}
    if target.name.casefold() in existing:
        raise ApiError(409, f"a LoRA named {name!r} exists already; DELETE /loras/{{name}} "
                       "first, or upload it under another `name`", name=name)
    try:
        os.link(upload.path, target)  # fails if the name appeared meanwhile: no overwrite
    except FileExistsError:
        raise ApiError(409, f"a LoRA named {name!r} exists already", name=name) from None
    except OSError:  # a filesystem without hard links: checked above, rename in place
        os.replace(upload.path, target)
    upload.discard()
    return replace(lora, path=target)  # the same bytes: not hashed again


@router.delete("/{name}", status_code=204,
               responses={**ADMIN_ONLY, 404: {"description": "No such LoRA."}})
async def delete_lora(name: Annotated[str, PathParam(max_length=400)], settings: SettingsDep,
                      caller: CallerDep) -> Response:
    """Remove a LoRA file (operator keys only). Workers that loaded it keep it until they
    unload the model."""
    _require_admin(settings, caller)
    folder = _folder(settings)

    def remove() -> None:
        try:
            stem = check_lora_name(name, "name")
        except InvalidRequestError:
            stem = None
        found = None
        if stem is not None and "/" not in stem:
            with contextlib.suppress(OSError):
                found = next((path for path in folder.iterdir()
                              if path.name.endswith(LORA_SUFFIX) and
                              path.name.removesuffix(LORA_SUFFIX).casefold()
                              == stem.casefold()), None)
        if found is None:
            raise ApiError(404, "LoRA not found", name=name)
        found.unlink(missing_ok=True)

    await run_in_threadpool(remove)
    return Response(status_code=204)
