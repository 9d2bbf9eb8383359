"""Request and response bodies. Ranges are checked by the library (``check_request``), so
the API and the CLI refuse exactly the same requests; pydantic checks only types."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from api.style_schemas import LoraRef, StyleInfo, StyleList, no_bools
from fractal.loras import MAX_LORAS
from fractal.masks_check import (
    DEFAULT_MASK_BLUR,
    DEFAULT_PADDING,
    EXPAND_SIDES,
    INPAINT_AREAS,
    MAX_MASK_BLUR,
    MAX_PADDING,
)
from fractal.references import (
    CONTROL_TYPES,
    DEFAULT_STYLE_MODE,
    DEFAULT_STYLE_STRENGTH,
    MAX_CONTROL_SCALE,
    MAX_CONTROLS,
    STYLE_MODES,
)
from workers.encoding import OUTPUT_FORMATS

__all__ = [
    "BatchBody",
    "BatchCountsOut",
    "BatchItemResult",
    "BatchList",
    "BatchOut",
    "ControlUnitBody",
    "ErrorDetail",
    "GenerateBody",
    "GenerateResult",
    "HiresOptions",
    "JobList",
    "JobOut",
    "LoraRef",
    "ModelInfo",
    "ModelList",
    "OutputOut",
    "Progress",
    "StyleInfo",
    "StyleList",
    "Timings",
    "UpscaleBody",
]

OutputFormat = Literal["png", "webp", "jpeg"]
assert set(OUTPUT_FORMATS) == {"png", "webp", "jpeg"}  # kept in step with the workers


class HiresOptions(BaseModel):
    """Two-pass high resolution forced on, with these refine settings."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    strength: float | None = Field(default=None, description="0.01..1; default 0.35.")
    steps: int | None = Field(default=None, description="Refine steps actually run.")

    @field_validator("strength", "steps", mode="before")
    @classmethod
    def _no_bools(cls, value: Any) -> Any:
        return no_bools(value)


InpaintArea = Literal["whole", "masked"]
assert set(INPAINT_AREAS) == set(InpaintArea.__args__)  # kept in step with the library
ControlType = Literal["canny", "depth", "pose", "lineart", "tile", "image"]
StyleMode = Literal["style", "composition", "both"]
assert set(CONTROL_TYPES) == set(ControlType.__args__)  # kept in step with the library
assert set(STYLE_MODES) == set(StyleMode.__args__)


class ControlUnitBody(BaseModel):
    """One structural control: keep this image's structure (edges, depth, pose...)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    type: ControlType = Field(description="How the image is read: `canny` edges (drawn from "
                              "any picture here), or a prepared `depth` map, `pose` skeleton, "
                              "`lineart`, `tile` or `image`. GET /models lists the types each "
                              "model takes.")
    image: str | None = Field(default=None, description="The control image as base64 or a "
                              "data:image/...;base64 URL. In multipart/form-data it may come "
                              "as a `control_image` file part instead: those parts fill, in "
                              "order, the units without an image.")
    scale: float | None = Field(default=None, description=f"0..{MAX_CONTROL_SCALE:g}: how "
                                "strongly the structure is kept; 0 is no control. Default 1.")
    start: float | None = Field(default=None, description="0..1: the fraction of the steps "
                                "where the control starts. Default 0.")
    end: float | None = Field(default=None, description="0..1, above `start`: where it stops. "
                              "Default 1.")
    preprocess: bool | None = Field(default=None, description="Draw the control map from the "
                                    "image (built in for `canny`); false: the image already is "
                                    "one. Default: true where a preprocessor is built in.")

    @field_validator("scale", "start", "end", mode="before")
    @classmethod
    def _no_bools(cls, value: Any) -> Any:
        return no_bools(value)


class GenerateBody(BaseModel):
    """POST /generate: the product README's ``{"input_type", "content"}`` plus every option."""

    # JSON bodies are read strictly (no "64" for 64) and forms laxly, by model_validate's
    # `strict`; FastAPI-read bodies take this config's.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    input_type: Literal["text", "image", "hybrid", "upscale"] = "text"
    content: str | None = Field(default=None, description="The prompt (README name).")
    prompt: str | None = Field(default=None, description="The prompt; alias of `content`.")
    image: str | None = Field(default=None,
                              description="Input image as base64 or a data:image/...;base64 URL; "
                                          "or a file part in multipart/form-data.")
    image_url: str | None = Field(
        default=None, max_length=2048,
        description="Input image fetched from a public http(s) URL (PNG, JPEG or WEBP). Off "
                    "unless the server sets SPEC2FRACTAL_ALLOW_IMAGE_URLS.")
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = Field(default=None, description="Unset: a random seed, returned.")
    scheduler: str | None = None
    style: str | dict[str, Any] | None = Field(
        default=None, description="A style's name (GET /styles: the server's and this key's "
        "own), or a style object as POST /styles takes it (`name`, `prompt` with "
        "`{prompt}`, ...).")
    lighting: str | None = None
    colors: list[str] | str | None = Field(default=None,
                                           description="Colour names or hex codes.")
    texture: float | None = None
    strength: float | None = None
    n: int = 1
    model: str | None = Field(default=None, min_length=1, max_length=255)
    scale: int | None = Field(default=None, description="input_type `upscale`: the result is "
                              "`scale` (2 or 4) times the image; default 2.")
    hires: Literal["auto", "off"] | HiresOptions | None = Field(
        default=None, description="Text-to-image beyond the model's native size: `auto` "
        "(the default) renders at the native size, upscales and refines; `off` renders in "
        "one pass; an object forces two passes with these refine settings.")
    style_image: str | None = Field(
        default=None, description="A style reference: render in the style of this image "
        "(base64 or a data:image/...;base64 URL; or a `style_image` file part in "
        "multipart/form-data). Needs a model that takes one (GET /models: "
        "`style_reference`).")
    style_strength: float | None = Field(
        default=None, description=f"0..1: how much of the reference's style; default "
        f"{DEFAULT_STYLE_STRENGTH:g}. Only with `style_image`.")
    style_mode: StyleMode | None = Field(
        default=None, description=f"`style` (colours, brushwork, texture), `composition` or "
        f"`both`; default `{DEFAULT_STYLE_MODE}`. Only with `style_image`.")
    control: list[ControlUnitBody] | None = Field(
        default=None, max_length=MAX_CONTROLS,
        description=f"Structural control: up to {MAX_CONTROLS} units, applied together. In "
                    "multipart/form-data: this list as JSON text.")
    mask: str | None = Field(
        default=None, description="Inpainting: the area of `image` to repaint, the image's "
        "size: white repaints, black keeps (grayscale or 1-bit); or an image with "
        "transparency, whose transparent pixels are repainted (OpenAI's meaning). Base64 or a "
        "data:image/...;base64 URL; or a `mask` file part in multipart/form-data. Needs "
        "input_type `image` or `hybrid`.")
    mask_blur: int | None = Field(
        default=None, description=f"0..{MAX_MASK_BLUR}: pixels of feathering at the mask's "
        f"edge; default {DEFAULT_MASK_BLUR}. Only with `mask` or `expand`.")
    inpaint_area: InpaintArea | None = Field(
        default=None, description="`whole` (the default) renders the whole picture; "
        "`masked` renders only the masked region plus `padding` at the model's working size "
        "and pastes it back (finer detail in a small area).")
    padding: int | None = Field(
        default=None, description=f"0..{MAX_PADDING}: pixels around the masked region that "
        f"`inpaint_area` `masked` renders too; default {DEFAULT_PADDING}.")
    expand: dict[str, Any] | None = Field(
        default=None, description="Outpainting: pixels added on each side "
        f"({', '.join(EXPAND_SIDES)}; multiples of 8), filled to match the image, e.g. "
        '`{"left": 64, "right": 64}`. In multipart/form-data: this object as JSON text. '
        "Needs input_type `image` or `hybrid`.",
        json_schema_extra={"propertyNames": {"enum": list(EXPAND_SIDES)},
                           "additionalProperties": {"type": "integer", "multipleOf": 8,
                                                    "minimum": 0}})
    loras: list[LoraRef] | None = Field(
        default=None, max_length=MAX_LORAS,
        description=f"LoRA adapters to apply (up to {MAX_LORAS}, a style's included), by name "
                    "from GET /loras with a weight; `<lora:name:weight>` tags in the prompt "
                    "work too. Needs a model that takes LoRAs (GET /models: `loras`). In "
                    "multipart/form-data: this list as JSON text.")
    output_format: OutputFormat = "png"
    webhook: str | None = Field(
        default=None, max_length=2048,
        description="A public http(s) URL that receives a signed `job.succeeded`, "
                    "`job.failed` or `job.cancelled` event (Standard Webhooks) when the job "
                    "ends; see docs/webhooks.md.")

    # Reference images read from the body before validation (JSON decoded off the event
    # loop, multipart file parts): the field holds api.jsonparse.UPLOAD_PREFIX + the file's
    # SHA-256, this maps that name to the file's bytes.
    _files: dict[str, bytes] = PrivateAttr(default_factory=dict)

    @property
    def files(self) -> dict[str, bytes]:
        return self._files

    @field_validator("expand", mode="before")
    @classmethod
    def _few_short_sides(cls, value: Any) -> Any:
        # The library names a bad side (`expand.middle`); a key too long to echo, or more
        # keys than sides, is refused here whole.
        if isinstance(value, dict) and (len(value) > len(EXPAND_SIDES) or any(
                isinstance(key, str) and len(key) > 32 for key in value)):
            raise ValueError(f"must be an object of at most {len(EXPAND_SIDES)} sides: "
                             f"{', '.join(EXPAND_SIDES)}")
        return value

    @field_validator("width", "height", "steps", "seed", "n", "guidance", "texture", "strength",
                     "scale", "style_strength", "mask_blur", "padding", mode="before")
    @classmethod
    def _no_bools(cls, value: Any) -> Any:
        return no_bools(value)


class UpscaleBody(BaseModel):
    """POST /jobs/{id}/upscale: one of a finished job's images, made larger."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    index: int = Field(default=0, description="Which of the job's images (`outputs[].index`).")
    scale: int = Field(default=2, description="2 or 4: the result is `scale` times the image.")
    prompt: str | None = Field(default=None, description="Guides a diffusion model's detail "
                               "pass; unset: none.")
    strength: float | None = Field(default=None, description="0..1: how much a diffusion "
                                   "model repaints; default 0.3.")
    seed: int | None = Field(default=None, description="Unset: a random seed, returned.")
    output_format: OutputFormat | None = Field(default=None,
                                               description="Default: the job's own.")

    @field_validator("index", "scale", "strength", "seed", mode="before")
    @classmethod
    def _no_bools(cls, value: Any) -> Any:
        return no_bools(value)


class Progress(BaseModel):
    step: int
    total: int
    preview: str | None = Field(default=None, description="Small JPEG data URL while running.")


class Timings(BaseModel):
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue_seconds: float | None
    render_seconds: float | None


THUMBNAIL_DOC = ("A WebP of the image, at most 512 px on its longest side, for galleries and "
                 "previews. Images stored before thumbnails existed have none: this is then "
                 "the full image's URL, so it can always be shown.")


class OutputOut(BaseModel):
    index: int
    url: str
    thumbnail_url: str = Field(description=THUMBNAIL_DOC)
    record_url: str | None
    seed: int | None
    width: int
    height: int
    format: str
    record: dict[str, Any]


class ErrorDetail(BaseModel):
    """Why a job failed, as data (the same as ``error``, which is its ``message``)."""

    code: str = Field(description="invalid_request, model_unavailable, render_failed, "
                                  "timeout, input_missing, input_unavailable, "
                                  "storage_unavailable, queue_unavailable, worker_lost or "
                                  "internal.")
    message: str
    field: str | None = Field(default=None, description="The request field at fault.")
    value: Any = Field(default=None, description="What that field held (shortened).")
    choices: list[str] | None = Field(default=None, description="Its valid values.")
    reason: str | None = Field(default=None, description="The message without the field "
                                                         "and the value.")


class JobOut(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    model: str
    output_format: str
    request: dict[str, Any]
    progress: Progress
    timings: Timings
    outputs: list[OutputOut]
    error: str | None
    error_detail: ErrorDetail | None = None
    attempts: int
    cancel_requested: bool
    links: dict[str, str]


class JobList(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None


class GenerateResult(BaseModel):
    status: Literal["success"] = "success"
    job_id: str
    image_url: str
    image_urls: list[str]
    thumbnail_url: str = Field(description=THUMBNAIL_DOC)
    thumbnail_urls: list[str] = Field(description="One per image, beside `image_urls`.")
    seed: int | None
    seeds: list[int | None]
    job: JobOut


class ModelWorker(BaseModel):
    """A live worker serving the model (issue #22's routing)."""

    name: str
    warm: bool = Field(description="Its models were loaded before it took a job.")
    loaded: bool = Field(description="It holds this model loaded now.")
    speed: dict[str, Any] | None = Field(
        default=None, description="While it holds the model: the speed options as it applied "
        "them (`offload` says what `auto` chose), with `compiled_graphs` and "
        "`recompilations` (graphs compiled after the warm-up).")


class ModelInfo(BaseModel):
    id: str
    family: str = Field(description="The model's kind, as people name it (`SD 2.1 turbo`).")
    size: str
    notes: str
    default: bool
    adapter_family: str | None = Field(
        default=None, description="The family adapters are configured for (`sd15`, `sd2`, "
        "`sdxl`, `sd3`, `flux`), read from the model's configs; null for the built-in "
        "engine, and where this server cannot read it (a model only its workers hold): "
        "such a model's workers decide, and refuse what they cannot take.")
    style_reference: bool = Field(
        default=False, description="Whether requests may give a `style_image` (the engine: "
        "always; a diffusion model: when its family has an IP-Adapter configured).")
    controls: list[str] = Field(
        default_factory=list, description="The `control` types requests may use.")
    loras: bool = Field(default=False, description="Whether requests may apply LoRAs "
                        "(`loras`, `<lora:...>` tags); a style's LoRAs are skipped where not.")
    speed: dict[str, Any] | None = Field(
        default=None, description="The workers' speed options and memory mode for this "
        "diffusion model (`dtype`, `compile`, `channels_last`, `fuse_qkv`, `vae`, "
        "`step_cache` with its threshold or interval, `offload`, `warmup`), as configured "
        "(docs/deploy.md); null for the built-in engine. Each image's record says how it "
        "was rendered.")
    workers: list[ModelWorker] = Field(
        default_factory=list, description="The live workers that serve it (with a broker, "
        "none: POST /generate answers 503). In the embedded mode, its workers.")
    queued: int = Field(default=0, description="Its jobs waiting for a worker.")


class ModelList(BaseModel):
    default: str
    models: list[ModelInfo]


GridValues = Annotated[list[Any], Field(min_length=1)]


class BatchBody(BaseModel):
    """POST /batches: ``items`` (each a POST /generate body), or ``template`` plus ``grid``."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    name: str | None = Field(default=None, max_length=255)
    output_format: OutputFormat | None = Field(
        default=None, description="For items that do not choose their own; default png.")
    items: list[GenerateBody] | None = Field(
        default=None, description="Each item the same as a POST /generate JSON body.")
    template: GenerateBody | None = Field(
        default=None, description="What every grid item shares; grid values override it.")
    grid: dict[str, GridValues] | None = Field(
        default=None, description="Field name → values; one item per combination, in the "
                                  "order the keys are given (the last key varies fastest).")
    webhook: str | None = Field(
        default=None, max_length=2048,
        description="A public http(s) URL that receives one signed `batch.completed` event "
                    "(Standard Webhooks) when the last item ends; see docs/webhooks.md.")


class BatchCountsOut(BaseModel):
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class BatchOut(BaseModel):
    id: str
    name: str | None
    status: Literal["running", "finished", "cancelled"]
    created_at: datetime
    output_format: str
    total: int
    counts: BatchCountsOut
    finished: int
    progress: float = Field(description="finished / total, from 0 to 1.")
    images: int = Field(description="Images rendered so far.")
    eta_seconds: float | None = Field(
        description="Mean render time of the finished items × items left; null until one "
                    "has finished.")
    cancel_requested: bool
    links: dict[str, str]


class BatchList(BaseModel):
    batches: list[BatchOut]
    next_cursor: str | None


class BatchItemResult(BaseModel):
    """One line of GET /batches/{id}/results."""

    index: int
    job_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    parameters: dict[str, Any]
    seed: int | None
    seeds: list[int | None]
    urls: list[str]
    thumbnail_urls: list[str] = Field(description="One per URL in `urls`: " + THUMBNAIL_DOC)
    error: str | None
    error_detail: ErrorDetail | None = None
    job_url: str
