"""Bodies of the OpenAI-compatible Images API (``/v1/images/...``), as OpenAI names them.

Every OpenAI parameter is accepted; the ones this server cannot honour are refused by name
(a transparent background) or documented as ignored (``user``, ``moderation``,
``output_compression``). A few Spec-2-Fractal options ride along for clients that want them
(the OpenAI SDK sends them with ``extra_body``): ``negative_prompt``, ``seed``, ``steps``,
``guidance``, ``strength``, ``mask_blur``, ``inpaint_area`` and ``padding`` (edits),
``lighting``, ``colors``, ``texture``, ``loras`` (a JSON list in the edits form).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.schemas import LoraRef, no_bools
from fractal.loras import MAX_LORAS

__all__ = ["ImageData", "ImageEditBody", "ImageGenerationBody", "ImagesResponse"]


class _ImageOptions(BaseModel):
    # Strict for JSON (ImageGenerationBody, read by FastAPI); the edits form is validated
    # with strict=False, since every form field is text.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    n: int = Field(default=1, description="How many images (the server caps it).")
    size: str | None = Field(default=None, description="`WIDTHxHEIGHT` (e.g. 1024x1024), or "
                                                       "`auto` for the model's size.")
    response_format: Literal["url", "b64_json"] | None = Field(
        default=None, description="`url` (default): a signed URL; `b64_json`: the file.")
    model: str | None = Field(default=None, max_length=255, description=(
        "OpenAI's names (dall-e-*, gpt-image-*) mean this server's default model; else one "
        "of GET /models."))
    quality: Literal["auto", "standard", "low", "medium", "high", "hd"] | None = Field(
        default=None, description="`hd`/`high`: more denoising steps; the others: the "
                                  "model's default.")
    style: str | None = Field(default=None, max_length=255, description=(
        "`vivid` (the Cinematic style) or `natural` (no style), or any name from GET /styles."))
    output_format: Literal["png", "jpeg", "webp"] | None = None
    background: Literal["auto", "opaque"] | None = Field(
        default=None, description="Transparent backgrounds are not supported.")
    output_compression: int | None = Field(default=None, description="Accepted, ignored.")
    moderation: str | None = Field(default=None, description="Accepted, ignored.")
    user: str | None = Field(default=None, max_length=255, description="Accepted, ignored.")
    # Spec-2-Fractal's own options.
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    lighting: str | None = None
    colors: list[str] | str | None = None
    texture: float | None = None
    loras: list[LoraRef] | None = Field(
        default=None, max_length=MAX_LORAS, description="LoRAs from GET /loras with their "
        "weights, as POST /generate takes them (`<lora:name:weight>` tags in the prompt work "
        "too); in the edits form, as JSON text.")

    @field_validator("n", "seed", "steps", "guidance", "texture", "output_compression",
                     mode="before")
    @classmethod
    def _no_bools(cls, value: Any) -> Any:
        return no_bools(value)


class ImageGenerationBody(_ImageOptions):
    """POST /v1/images/generations."""

    prompt: str = Field(description="What to render.")


class ImageEditBody(_ImageOptions):
    """The fields of POST /v1/images/edits (multipart/form-data; the image is a file part)."""

    prompt: str | None = Field(default=None, description="Unset or empty: image-to-image "
                                                         "alone; else hybrid.")
    strength: float | None = Field(default=None, description="0 keeps the image, 1 repaints "
                                                             "it; default 0.6 or the style's.")
    mask_blur: int | None = Field(default=None, description="With `mask`: pixels of "
                                  "feathering at its edge; default 4.")
    inpaint_area: Literal["whole", "masked"] | None = Field(
        default=None, description="With `mask`: `masked` renders only the masked area (plus "
        "`padding`) at the model's size, for finer detail.")
    padding: int | None = Field(default=None, description="With `inpaint_area` `masked`: "
                                "pixels around the area rendered too; default 32.")
    # Set by the route from the `mask` file part (the name of its bytes), never by a form
    # field: the request's fingerprint (Idempotency-Key) covers the mask too.
    mask: str | None = Field(default=None, description="A PNG file part (see the form).")

    @field_validator("strength", "mask_blur", "padding", mode="before")
    @classmethod
    def _no_bool_strength(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        return value


class ImageData(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = Field(default=None, description="The prompt as the model "
                                                                  "saw it (style applied).")


class ImagesResponse(BaseModel):
    created: int = Field(description="Unix time the job was created.")
    data: list[ImageData]
    output_format: str
    size: str
    job_id: str = Field(description="The job behind the images (GET /jobs/{job_id}).")
