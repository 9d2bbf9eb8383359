"""OpenAI's image parameters in this server's terms: a POST /generate body.

- ``model``: OpenAI's own names (``dall-e-2``, ``dall-e-3``, ``gpt-image-1`` ...) mean the
  server's default model, so tools that hard-code them work; any other name must be one this
  server serves (api/model_access.py), else a 400 naming ``model``.
- ``size``: ``WxH`` or ``auto`` (the model's size); the library checks the range.
- ``style``: ``vivid`` is the Cinematic style (contrast, a dramatic grade), ``natural`` no
  style at all; any of the server's style names (GET /styles) is used as is.
- ``quality``: ``hd``/``high`` render with more denoising steps (HD_STEPS), except on
  few-step models (turbo, lightning ...), which more steps would spoil; the others keep the
  model's default.
- ``mask`` (edits): a PNG with an alpha channel, the image's size, whose fully transparent
  pixels are edited (OpenAI's meaning); it becomes the "L" mask POST /generate takes
  (:func:`openai_mask`).
"""

from __future__ import annotations

import io
import re

from PIL import Image, UnidentifiedImageError

from api.errors import field_error
from api.model_access import resolve_model
from api.openai_schemas import ImageEditBody, ImageGenerationBody
from api.schemas import GenerateBody
from fractal import InvalidRequestError
from fractal.images import load_mask
from workers.settings import Settings

__all__ = ["HD_STEPS", "OPENAI_MODEL", "STYLE_PRESETS", "openai_mask", "to_generate_body"]

OPENAI_MODEL = re.compile(r"^(dall-e|gpt-image|chatgpt-image)", re.IGNORECASE)
STYLE_PRESETS: dict[str, str | None] = {"vivid": "Cinematic", "natural": None}
HD_STEPS = 50
HD_QUALITIES = frozenset({"hd", "high"})
FEW_STEP_MARKERS = ("turbo", "lightning", "hyper", "schnell", "lcm")
_SIZE = re.compile(r"^\s*(\d{1,6})\s*[x×]\s*(\d{1,6})\s*$", re.IGNORECASE)


def _size(size: str | None) -> tuple[int | None, int | None]:
    if size is None or size.strip().lower() in ("", "auto"):
        return None, None
    match = _SIZE.match(size)
    if match is None:
        raise field_error(["body", "size"], "must be WIDTHxHEIGHT (e.g. 1024x1024) or auto",
                          size)
    return int(match[1]), int(match[2])


def _model(name: str | None, settings: Settings) -> str | None:
    if name is None or not name.strip() or OPENAI_MODEL.match(name.strip()):
        return None  # the server's default
    resolve_model(name, settings)  # a 400 naming `model` for one this server does not serve
    return name


def _steps(body: ImageGenerationBody | ImageEditBody, model: str | None,
           settings: Settings) -> int | None:
    if body.steps is not None or body.quality not in HD_QUALITIES:
        return body.steps
    chosen = resolve_model(model, settings)
    if any(marker in chosen.lower() for marker in FEW_STEP_MARKERS):
        return None
    return HD_STEPS


def _style(style: str | None) -> str | None:
    if style is None or not style.strip():
        return None
    return STYLE_PRESETS.get(style.strip().lower(), style)


def to_generate_body(body: ImageGenerationBody | ImageEditBody, settings: Settings, *,
                     has_image: bool = False) -> GenerateBody:
    """The same request as POST /generate would take; checked later by ``build_request``."""
    width, height = _size(body.size)
    model = _model(body.model, settings)
    prompt = body.prompt if body.prompt and body.prompt.strip() else None
    input_type = ("hybrid" if prompt else "image") if has_image else "text"
    edit = body if isinstance(body, ImageEditBody) else None
    strength = edit.strength if edit is not None else None
    return GenerateBody(
        input_type=input_type, prompt=prompt if has_image else body.prompt,
        negative_prompt=body.negative_prompt, width=width, height=height,
        steps=_steps(body, model, settings), guidance=body.guidance, seed=body.seed,
        style=_style(body.style), lighting=body.lighting, colors=body.colors,
        texture=body.texture, strength=strength, n=body.n, model=model,
        output_format=body.output_format or "png",
        mask_blur=edit and edit.mask_blur, inpaint_area=edit and edit.inpaint_area,
        padding=edit and edit.padding, loras=body.loras,
    )


def _has_alpha(data: bytes) -> bool:
    """Whether the file is a PNG with an alpha channel, from its header alone (no pixels are
    decoded here: the library's safe decoder reads them)."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            return image.mode in ("RGBA", "LA", "PA") or (
                image.mode == "P" and "transparency" in image.info)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return False


def openai_mask(data: bytes) -> bytes:
    """An edit's ``mask`` file as the PNG of an "L" mask (255 repaints): a PNG with alpha,
    read by the library's safe decoder (transparent pixels are repainted); a fully opaque one
    edits nothing, as at OpenAI. A 400 naming ``mask`` otherwise. Blocking."""
    if not _has_alpha(data):
        raise field_error(["body", "mask"], "must be a PNG with an alpha channel: its fully "
                          "transparent pixels are edited", f"<{len(data)} bytes>")
    try:
        mask = load_mask(data, "mask")
    except InvalidRequestError as exc:
        raise field_error(["body", "mask"], exc.reason, f"<{len(data)} bytes>") from None
    with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
        # load_mask reads an all-opaque image by lightness; OpenAI reads alpha alone.
        opaque = image.convert("RGBA").getchannel("A").getextrema() == (255, 255)
    if opaque:
        mask = Image.new("L", mask.size, 0)
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()
