"""POST /controls/preview: what a control unit's image becomes before a model sees it (the
dashboard's live Canny preview), through the same fractal.preprocess.prepare_control every
backend uses, so the edges a user previews are the edges a render follows."""

from __future__ import annotations

import io
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from api.auth import CallerDep
from api.errors import ApiError, invalid_request
from api.jsonbody import JsonRoute, is_json, read_json
from fractal import InvalidRequestError
from fractal.images import load_image
from fractal.preprocess import prepare_control
from fractal.references import (
    CONTROL_TYPES,
    PREPROCESSORS,
    ControlUnit,
    check_controls,
    pixel_hash,
)

__all__ = ["MAX_PREVIEW_SIDE", "ControlPreviewBody", "preview_png", "router"]

router = APIRouter(prefix="/controls", tags=["controls"], route_class=JsonRoute)

# The preview is for eyes: never more work per call than a 768 px image's edges.
MAX_PREVIEW_SIDE = 768


class ControlPreviewBody(BaseModel):
    """One control unit's type and image, as in POST /generate's ``control`` list."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: str = Field(description="The control type.",
                      json_schema_extra={"enum": list(CONTROL_TYPES)})
    image: str = Field(description="The control image as base64 or a data:image/...;base64 "
                                   "URL (PNG, JPEG or WEBP; the same limits as every input "
                                   "image).")
    preprocess: bool | None = Field(
        default=None, description="Run the type's built-in preprocessor (only "
        f"{', '.join(PREPROCESSORS)} has one); unset: on where there is one.")


def _preview_size(size: tuple[int, int]) -> tuple[int, int]:
    """The image's own size, scaled down (never up) to MAX_PREVIEW_SIDE on its long side."""
    width, height = size
    ratio = min(1.0, MAX_PREVIEW_SIDE / max(width, height))
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def preview_png(body: ControlPreviewBody, data: bytes) -> bytes:
    """The prepared control image as PNG bytes, from the image file's ``data``. Blocking
    (decode, resize, preprocess)."""
    unit: dict[str, Any] = {"type": body.type, "image": body.image}
    if body.preprocess is not None:
        unit["preprocess"] = body.preprocess
    try:
        # The library's own rules, its `control[0].key` names read as this body's keys.
        try:
            check_controls([unit], "text")
        except InvalidRequestError as exc:
            key = exc.argument.rpartition(".")[2]
            raise InvalidRequestError(key, exc.value, exc.reason,
                                      choices=exc.choices) from None
        image = load_image(data, "image")
    except InvalidRequestError as exc:
        raise invalid_request(exc) from None
    width, height = _preview_size(image.size)
    # Scaled first: preprocessing runs on the preview's pixels, never on a 25-megapixel input.
    small = image.convert("RGB").resize((width, height), resample=Image.Resampling.LANCZOS) \
        if (width, height) != image.size else image
    preprocess = body.type in PREPROCESSORS if body.preprocess is None else body.preprocess
    control = ControlUnit(type=body.type, image=small, sha256=pixel_hash(small), scale=1.0,
                          start=0.0, end=1.0, preprocess=preprocess)
    prepared = prepare_control(control, width, height)
    buffer = io.BytesIO()
    prepared.save(buffer, "PNG")
    return buffer.getvalue()


async def _read_body(request: Request) -> tuple[ControlPreviewBody, bytes]:
    """The body, its image's base64 decoded by the app's guarded JSON parser (in its child
    process for a large body, as POST /generate's image is): no big decode in this process."""
    if not is_json(request):
        raise ApiError(415, "send application/json, the image as a data URL")
    data, image, _ = await read_json(request, image_field="image")
    if image is not None:  # decoded: the schema sees that there was one
        data = {**data, "image": "<decoded>"}
    try:
        body = ControlPreviewBody.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [dict(error, loc=("body", *error["loc"])) for error in exc.errors()]) from None
    assert image is not None  # the schema requires a text image, which the parser decoded
    return body, image


@router.post(
    "/preview", response_class=Response,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": ControlPreviewBody.model_json_schema()}}}},
    responses={200: {"description": "The control image a model is given, as PNG.",
                     "content": {"image/png": {"schema": {"type": "string",
                                                          "format": "binary"}}}},
               415: {"description": "Not JSON."},
               422: {"description": "A bad type, image or preprocess, named in `loc`.",
                     "content": {"application/json": {"schema": {
                         "$ref": "#/components/schemas/HTTPValidationError"}}}}},
)
async def preview_control(request: Request, caller: CallerDep) -> Response:
    """Preview a control image: for ``canny``, white edges on black, as a render would use
    them; at the image's own size, at most 768 px on its longest side."""
    del caller  # the Gatekeeper has checked the key and its rate limit
    body, image = await _read_body(request)
    png = await run_in_threadpool(preview_png, body, image)
    return Response(png, media_type="image/png")
