"""Reference images a render follows: a style reference (IP-Adapter on diffusion models,
palette and texture transfer on the built-in engine) and control images (ControlNet, or the
engine's drawing on the control's structure).

A request carries them as plain data (``style_image`` and each ``control`` unit's ``image``
are base64 strings or data URLs); :func:`load_references` decodes them through the same safe
reader as an input image and names each by the hash of its decoded pixels, so the same
picture sent as a PNG or a WEBP is one reference (the IP-Adapter embedding cache's key).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from fractal.errors import InvalidRequestError

__all__ = [
    "CONTROL_DEFAULTS",
    "CONTROL_KEYS",
    "CONTROL_TYPES",
    "DEFAULT_STYLE_MODE",
    "DEFAULT_STYLE_STRENGTH",
    "MAX_CONTROLS",
    "MAX_CONTROL_SCALE",
    "PREPROCESSORS",
    "STYLE_MODES",
    "ControlUnit",
    "StyleReference",
    "check_controls",
    "check_style_reference",
    "load_references",
    "pixel_hash",
]

CONTROL_TYPES = ("canny", "depth", "pose", "lineart", "tile", "image")
# Control types whose preprocessor is built in (fractal.preprocess); the others take a
# prepared control image (a depth map, a pose skeleton, line art) as it is sent.
PREPROCESSORS = ("canny",)
CONTROL_KEYS = ("type", "image", "scale", "start", "end", "preprocess")
CONTROL_DEFAULTS: dict[str, Any] = {"scale": 1.0, "start": 0.0, "end": 1.0, "preprocess": None}
MAX_CONTROLS = 4  # A1111's default number of ControlNet units is 3; Fooocus offers 4
MAX_CONTROL_SCALE = 2.0  # A1111's ControlNet weight slider runs 0..2
STYLE_MODES = ("style", "composition", "both")
DEFAULT_STYLE_MODE = "style"
DEFAULT_STYLE_STRENGTH = 0.6


def pixel_hash(image: Image.Image) -> str:
    """SHA-256 of a decoded image's mode, size and pixels: the same picture in any file
    format (losslessly encoded) has the same hash."""
    digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class StyleReference:
    """A decoded style reference: render in the style of ``image``."""

    image: Image.Image
    sha256: str
    strength: float  # 0: no effect … 1: the reference's style fully
    mode: str  # "style", "composition" or "both"

    def describe(self) -> dict[str, Any]:
        """For the record: the reference by hash, never its pixels."""
        return {"sha256": self.sha256, "strength": self.strength, "mode": self.mode}


@dataclass(frozen=True)
class ControlUnit:
    """A decoded control: keep ``image``'s structure, as ``type`` reads it.

    ``image`` is the image as sent; whether it is preprocessed (``preprocess``: True for a
    type with a built-in preprocessor unless the request said false) is the backend's step,
    through fractal.preprocess.prepare_control.
    """

    type: str
    image: Image.Image
    sha256: str
    scale: float  # 0: no effect; 1: full; up to MAX_CONTROL_SCALE
    start: float  # the fraction of the denoising steps where the control starts…
    end: float  # …and where it stops
    preprocess: bool

    def describe(self) -> dict[str, Any]:
        return {"type": self.type, "sha256": self.sha256, "scale": self.scale,
                "start": self.start, "end": self.end, "preprocess": self.preprocess}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _check_fraction(name: str, value: Any, high: float = 1.0) -> None:
    if value is None:
        return
    if not _is_number(value):
        raise InvalidRequestError(name, value, "must be a finite number")
    if not 0.0 <= value <= high:
        raise InvalidRequestError(name, value, f"must be between 0 and {high:g}")


def check_style_reference(style_image: Any, style_strength: Any, style_mode: Any,
                          input_type: str) -> None:
    """The style reference's arguments, before any image is decoded."""
    if style_image is not None and not isinstance(style_image, str):
        raise InvalidRequestError("style_image", style_image,
                                  "must be base64 image data or a data URL")
    _check_fraction("style_strength", style_strength)
    if style_mode is not None and style_mode not in STYLE_MODES:
        raise InvalidRequestError("style_mode", style_mode, "is not a style mode",
                                  choices=STYLE_MODES)
    if style_image is None:
        for name, value in (("style_strength", style_strength), ("style_mode", style_mode)):
            if value is not None:
                raise InvalidRequestError(name, value, "applies only with a style_image")
    elif input_type == "upscale":
        raise InvalidRequestError("style_image", "<image>",
                                  "is not used by input_type 'upscale'")


def check_controls(control: Any, input_type: str) -> None:
    """Each control unit's keys and values, naming ``control[i].key``; images not decoded."""
    if control is None:
        return
    if not isinstance(control, Sequence) or isinstance(control, (str, bytes)):
        raise InvalidRequestError("control", control, "must be a list of control units")
    if input_type == "upscale" and control:
        raise InvalidRequestError("control", "<controls>", "is not used by input_type 'upscale'")
    if len(control) > MAX_CONTROLS:
        raise InvalidRequestError("control", f"<{len(control)} units>",
                                  f"may hold at most {MAX_CONTROLS} units")
    for index, unit in enumerate(control):
        name = f"control[{index}]"
        if not isinstance(unit, Mapping):
            raise InvalidRequestError(name, unit, "must be an object with type and image")
        for key in unit:
            if key not in CONTROL_KEYS:
                raise InvalidRequestError(f"{name}.{key}", unit[key], "is not a control option",
                                          choices=CONTROL_KEYS)
        kind = unit.get("type")
        if kind not in CONTROL_TYPES:
            raise InvalidRequestError(f"{name}.type", kind, "is not a control type",
                                      choices=CONTROL_TYPES)
        if not isinstance(unit.get("image"), str):
            raise InvalidRequestError(f"{name}.image", None if unit.get("image") is None
                                      else "<not text>", "must be base64 image data or a "
                                      "data URL")
        _check_fraction(f"{name}.scale", unit.get("scale"), MAX_CONTROL_SCALE)
        _check_fraction(f"{name}.start", unit.get("start"))
        _check_fraction(f"{name}.end", unit.get("end"))
        start = unit.get("start", 0.0) if unit.get("start") is not None else 0.0
        end = unit.get("end", 1.0) if unit.get("end") is not None else 1.0
        if start >= end:
            raise InvalidRequestError(f"{name}.end", end, f"must be greater than start ({start:g})")
        preprocess = unit.get("preprocess")
        if preprocess is not None and not isinstance(preprocess, bool):
            raise InvalidRequestError(f"{name}.preprocess", preprocess, "must be true or false")
        if preprocess is True and kind not in PREPROCESSORS:
            raise InvalidRequestError(
                f"{name}.preprocess", preprocess,
                f"has no built-in {kind} preprocessor: send a prepared {kind} image with "
                "preprocess false", choices=[str(p) for p in PREPROCESSORS])


def load_references(request: Any) -> tuple[StyleReference | None, tuple[ControlUnit, ...]]:
    """Decode a checked request's style reference and control images (each through
    fractal.images' safe reader, named in errors as ``style_image`` or ``control[i].image``)."""
    from fractal.images import image_bytes, load_image

    style = None
    if request.style_image is not None:
        image = load_image(image_bytes(request.style_image, "style_image"), "style_image")
        style = StyleReference(
            image=image, sha256=pixel_hash(image),
            strength=float(request.style_strength if request.style_strength is not None
                           else DEFAULT_STYLE_STRENGTH),
            mode=request.style_mode or DEFAULT_STYLE_MODE)
    units = []
    for index, unit in enumerate(request.control or ()):
        argument = f"control[{index}].image"
        image = load_image(image_bytes(unit["image"], argument), argument)
        settings = {**CONTROL_DEFAULTS, **{k: v for k, v in unit.items() if v is not None}}
        preprocess = settings["preprocess"]
        units.append(ControlUnit(
            type=unit["type"], image=image, sha256=pixel_hash(image),
            scale=float(settings["scale"]), start=float(settings["start"]),
            end=float(settings["end"]),
            preprocess=unit["type"] in PREPROCESSORS if preprocess is None else preprocess))
    return style, tuple(units)
