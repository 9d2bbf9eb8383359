"""The inpainting and outpainting arguments of a request, checked before any image is decoded
(:func:`check_inpaint`), in the manner of fractal.validation."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fractal.errors import InvalidRequestError

__all__ = ["DEFAULT_MASK_BLUR", "DEFAULT_PADDING", "EXPAND_SIDES", "INPAINT_AREAS",
           "MAX_MASK_BLUR", "MAX_PADDING", "check_inpaint"]

INPAINT_AREAS = ("whole", "masked")  # A1111's "Whole picture" and "Only masked"
EXPAND_SIDES = ("left", "right", "top", "bottom")
DEFAULT_MASK_BLUR = 4  # A1111's default mask blur
MAX_MASK_BLUR = 256
DEFAULT_PADDING = 32  # A1111's default "only masked" padding
MAX_PADDING = 1024


def _whole(name: str, value: Any, low: int, high: int, multiple: int = 1) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidRequestError(name, value, "must be a finite whole number")
        raise InvalidRequestError(name, value, "must be a whole number of pixels")
    if not low <= value <= high:
        raise InvalidRequestError(name, value, f"must be between {low} and {high}")
    if value % multiple:
        raise InvalidRequestError(name, value, f"must be a multiple of {multiple}")


def check_inpaint(request: Any, image_given: bool, max_side: int) -> None:
    """``mask`` (an image: white repaints, black keeps; or RGBA whose transparent pixels are
    repainted), ``mask_blur``, ``inpaint_area``, ``padding`` and ``expand`` (outpainting:
    pixels added on each side, multiples of 8)."""
    mask, expand = request.mask, request.expand
    if mask is not None and not isinstance(mask, str):
        raise InvalidRequestError("mask", "<not text>", "must be base64 image data or a data URL")
    _whole("mask_blur", request.mask_blur, 0, MAX_MASK_BLUR)
    _whole("padding", request.padding, 0, MAX_PADDING)
    if request.inpaint_area is not None and request.inpaint_area not in INPAINT_AREAS:
        raise InvalidRequestError("inpaint_area", request.inpaint_area, "is not an inpaint area",
                                  choices=INPAINT_AREAS)
    if expand is not None:
        if not isinstance(expand, Mapping):
            raise InvalidRequestError("expand", expand, "must be an object of sides "
                                      "(left, right, top, bottom) and pixels")
        for side, pixels in expand.items():
            if side not in EXPAND_SIDES:
                raise InvalidRequestError(f"expand.{side}", pixels, "is not a side",
                                          choices=EXPAND_SIDES)
            _whole(f"expand.{side}", pixels, 0, max_side, multiple=8)
        if not any(expand.values()):
            raise InvalidRequestError("expand", dict(expand), "must add pixels on one side "
                                      "at least")
    editing = mask is not None or expand is not None
    for name in ("mask_blur", "inpaint_area", "padding"):
        if getattr(request, name) is not None and not editing:
            raise InvalidRequestError(name, getattr(request, name),
                                      "applies only with a mask or expand")
    if request.padding is not None and request.inpaint_area != "masked":
        raise InvalidRequestError("padding", request.padding,
                                  "applies only with inpaint_area 'masked'")
    if not editing:
        return
    what = "mask" if mask is not None else "expand"
    if request.input_type not in ("image", "hybrid"):
        raise InvalidRequestError(what, "<mask>" if what == "mask" else dict(expand),
                                  "applies only to input_type 'image' or 'hybrid' (an input "
                                  "image to edit)")
    if not image_given:
        raise InvalidRequestError("image", None, f"is required with {what}")
