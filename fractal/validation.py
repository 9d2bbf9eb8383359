"""``check_request``: every argument checked before any work, in diffusers' manner.

Each failure is an :class:`~fractal.errors.InvalidRequestError` naming the argument and value.
"""

from __future__ import annotations

import math
from typing import Any

from fractal.controls import normalise_lighting, parse_colors
from fractal.errors import InvalidRequestError
from fractal.loras import check_loras, parse_prompt_loras
from fractal.masks_check import check_inpaint
from fractal.references import check_controls, check_style_reference
from fractal.request import INPUT_TYPES, UPSCALE_FACTORS, GenerationRequest
from fractal.schedulers import check_scheduler

__all__ = [
    "HIRES_MODES",
    "MAX_N",
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "MAX_SIDE",
    "MAX_STEPS",
    "check_hires",
    "check_request",
    "check_tiling",
    "check_upscale",
]

MAX_SIDE = 4096
MAX_STEPS = 150
MAX_N = 16
MAX_PROMPT_CHARS = 4000
MAX_SEED = 2**32 - 1


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def check_int(name: str, value: Any, low: int, high: int) -> None:
    if value is None:
        return
    if not _is_int(value):
        raise InvalidRequestError(name, value, "must be a whole number")
    if not low <= value <= high:
        raise InvalidRequestError(name, value, f"must be between {low} and {high}")


def check_float(name: str, value: Any, low: float, high: float) -> None:
    if value is None:
        return
    if not _is_number(value):
        raise InvalidRequestError(name, value, "must be a finite number")
    if not low <= value <= high:
        raise InvalidRequestError(name, value, f"must be between {low:g} and {high:g}")


def check_side(name: str, value: Any) -> None:
    if value is None:
        return
    if not _is_int(value):
        raise InvalidRequestError(name, value, "must be a whole number of pixels")
    if value <= 0 or value % 8:
        raise InvalidRequestError(name, value, "must be a positive multiple of 8")
    if value > MAX_SIDE:
        raise InvalidRequestError(name, value, f"must be at most {MAX_SIDE}")


def check_text(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidRequestError(name, value, "must be text")
    if len(value) > MAX_PROMPT_CHARS:
        raise InvalidRequestError(name, value, f"must be at most {MAX_PROMPT_CHARS} characters")


HIRES_MODES = ("auto", "off")


def check_hires(hires: Any, input_type: str) -> None:
    """``"auto"``, ``"off"``, or ``{"strength": 0..1, "steps": n}`` (text-to-image only)."""
    if hires is None or hires in HIRES_MODES:
        return
    if isinstance(hires, str):
        raise InvalidRequestError("hires", hires, "must be 'auto', 'off' or an object with "
                                  "strength and steps", choices=HIRES_MODES)
    if not isinstance(hires, dict):
        raise InvalidRequestError("hires", hires, "must be 'auto', 'off' or an object with "
                                  "strength and steps")
    for key in hires:
        if key not in ("strength", "steps"):
            raise InvalidRequestError(f"hires.{key}", hires[key], "is not a hires option",
                                      choices=("strength", "steps"))
    if input_type != "text":
        raise InvalidRequestError("hires", hires, "applies only to input_type 'text'")
    check_float("hires.strength", hires.get("strength"), 0.01, 1.0)
    check_int("hires.steps", hires.get("steps"), 1, MAX_STEPS)


def check_upscale(size: tuple[int, int], scale: int) -> tuple[int, int]:
    """The size of an upscale of an image of ``size`` by ``scale``; a result with a side
    over MAX_SIDE is refused, naming ``scale`` and the largest that fits."""
    width, height = size[0] * scale, size[1] * scale
    if max(width, height) > MAX_SIDE:
        fitting = [factor for factor in UPSCALE_FACTORS if max(size) * factor <= MAX_SIDE]
        raise InvalidRequestError(
            "scale", scale, f"would make a {width}x{height} image; sides are at most "
            f"{MAX_SIDE}" + (f" (the largest scale for this image is {max(fitting)})"
                             if fitting else " (this image is too large to upscale)"))
    return width, height


def check_tiling(tile_size: Any, tile_overlap: Any) -> None:
    """The tile budget of large passes, in pixels: a tile side (a multiple of 8 up to
    MAX_SIDE) and the overlap of neighbouring tiles (a multiple of 8, at least 8, at most
    half the tile). None: the model's native size and a quarter of it."""
    check_side("tile_size", tile_size)
    if tile_size is not None and tile_size < 16:
        raise InvalidRequestError("tile_size", tile_size, "must be at least 16")
    if tile_overlap is None:
        return
    check_side("tile_overlap", tile_overlap)
    if tile_size is not None and tile_overlap * 2 > tile_size:
        raise InvalidRequestError("tile_overlap", tile_overlap,
                                  f"must be at most half of tile_size ({tile_size})")


def check_request(request: GenerationRequest, *, has_image: bool | None = None) -> None:
    """Fail fast on the first invalid argument. ``has_image`` overrides ``request.image``."""
    if request.input_type not in INPUT_TYPES:
        raise InvalidRequestError("input_type", request.input_type, "is not an input type",
                                  choices=INPUT_TYPES)
    check_text("prompt", request.prompt)
    check_text("negative_prompt", request.negative_prompt)
    has_prompt = bool(request.prompt and request.prompt.strip())
    image_given = request.image is not None if has_image is None else has_image
    if request.input_type in ("text", "hybrid") and not has_prompt:
        raise InvalidRequestError("prompt", request.prompt,
                                  f"is required for input_type {request.input_type!r}")
    if request.input_type in ("image", "hybrid", "upscale") and not image_given:
        raise InvalidRequestError("image", None,
                                  f"is required for input_type {request.input_type!r}")
    if request.input_type == "text" and image_given:
        raise InvalidRequestError("image", "<image>",
                                  "is not used by input_type 'text' (use 'image' or 'hybrid')")
    if request.input_type == "upscale":
        for name in ("width", "height"):
            if getattr(request, name) is not None:
                raise InvalidRequestError(name, getattr(request, name),
                                          "is not used by input_type 'upscale': the result is "
                                          "'scale' times the image's size")
    if request.scale is not None:
        if request.input_type != "upscale":
            raise InvalidRequestError("scale", request.scale,
                                      "applies only to input_type 'upscale'")
        if not _is_int(request.scale) or request.scale not in UPSCALE_FACTORS:
            raise InvalidRequestError("scale", request.scale, "must be 2 or 4",
                                      choices=[str(f) for f in UPSCALE_FACTORS])
    check_hires(request.hires, request.input_type)
    check_side("width", request.width)
    check_side("height", request.height)
    check_int("steps", request.steps, 1, MAX_STEPS)
    check_float("guidance", request.guidance, 0.0, 100.0)
    check_int("seed", request.seed, 0, MAX_SEED)
    if request.n is None:
        raise InvalidRequestError("n", None, "must be a whole number")
    check_int("n", request.n, 1, MAX_N)
    check_float("strength", request.strength, 0.0, 1.0)
    check_float("texture", request.texture, 0.0, 1.0)
    if request.strength is not None and request.input_type == "text":
        raise InvalidRequestError("strength", request.strength, "applies only to "
                                  "image-to-image (input_type 'image', 'hybrid' or 'upscale')")
    check_scheduler(request.scheduler)
    normalise_lighting(request.lighting)
    parse_colors(request.colors)
    if isinstance(request.style, dict):
        from fractal.styles import Style

        Style.inline(request.style)
    elif request.style is not None and not isinstance(request.style, str):
        raise InvalidRequestError("style", request.style, "must be a style name or object")
    check_loras(request.loras)
    parse_prompt_loras(request.prompt)
    if request.model is not None and not isinstance(request.model, str):
        raise InvalidRequestError("model", request.model, "must be a model name")
    check_style_reference(request.style_image, request.style_strength, request.style_mode,
                          request.input_type)
    check_controls(request.control, request.input_type)
    check_inpaint(request, image_given, MAX_SIDE)
