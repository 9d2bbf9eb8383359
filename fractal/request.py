"""The one request type: plain, JSON-serialisable data that every layer carries unchanged."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fractal.errors import InvalidRequestError

__all__ = ["INPUT_TYPES", "UPSCALE_FACTORS", "GenerationRequest", "InputType"]

InputType = Literal["text", "image", "hybrid", "upscale"]
INPUT_TYPES: tuple[str, ...] = ("text", "image", "hybrid", "upscale")
UPSCALE_FACTORS: tuple[int, ...] = (2, 4)


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """What to render. ``None`` means "the style's or the model's default".

    ``image`` is a base64 string or a ``data:image/...;base64,`` URL, so the request stays
    plain data that an HTTP body, a queue message or a JSON file can hold.
    """

    input_type: InputType = "text"
    prompt: str | None = None
    image: str | None = None
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    scheduler: str | None = None
    # A style preset's name, or a style object {"name", "prompt": "... {prompt} ...", ...,
    # "loras"} (fractal.styles.Style.inline): how the service hands over a caller's own style.
    style: str | dict[str, Any] | None = None
    lighting: str | None = None
    colors: tuple[str, ...] | None = None
    texture: float | None = None
    strength: float | None = None
    n: int = 1
    model: str | None = None  # when set, must name the loaded model
    # Two-pass high resolution for text-to-image: "auto" (None), "off", or
    # {"strength": 0..1, "steps": n} to force it with those refine settings.
    hires: str | dict[str, Any] | None = None
    scale: int | None = None  # input_type "upscale": the result is scale × the image (2 or 4)
    # A style reference (fractal.references): render in the style of this image (base64 or
    # a data URL), at style_strength 0..1 (default 0.6), style_mode "style" (colours,
    # brushwork, texture), "composition" or "both" (default "style").
    style_image: str | None = None
    style_strength: float | None = None
    style_mode: str | None = None
    # Structural control: a list of units {"type": "canny" | "depth" | "pose" | "lineart" |
    # "tile" | "image", "image": base64 or a data URL, "scale": 0..2 (1), "start": 0..1 (0),
    # "end": 0..1 (1), "preprocess": bool (default: when the type has a built-in one)}.
    control: tuple[dict[str, Any], ...] | None = None
    # Inpainting (fractal.masks_check): ``mask`` (base64 or a data URL, the input image's
    # size) — white repaints, black keeps; an RGBA mask's transparent pixels are repainted
    # (OpenAI's meaning). ``mask_blur`` feathers its edge (pixels, default 4);
    # ``inpaint_area`` "whole" (default) or "masked" (the masked region plus ``padding``
    # pixels, rendered at the model's working size and pasted back). Outpainting:
    # ``expand`` {"left", "right", "top", "bottom"}: pixels added on each side and filled.
    mask: str | None = None
    mask_blur: int | None = None
    inpaint_area: str | None = None
    padding: int | None = None
    expand: dict[str, int] | None = None
    # LoRA adapters (fractal.loras): [{"name": a file's stem in the LoRA folder or a hub id,
    # "weight": -4..4 (1)}]. ``<lora:name:weight>`` tags in the prompt add to them (and are
    # taken out of its text); a style's LoRAs come first, these override them by name.
    loras: tuple[dict[str, Any], ...] | None = None

    def __post_init__(self) -> None:
        # JSON has no tuples and a command line gives "red,#222": keep one hashable shape.
        if isinstance(self.colors, str):
            parts = (part.strip() for part in self.colors.split(","))
            object.__setattr__(self, "colors", tuple(part for part in parts if part))
        elif isinstance(self.colors, list):
            object.__setattr__(self, "colors", tuple(self.colors))
        if isinstance(self.control, list):
            object.__setattr__(self, "control", tuple(self.control))
        if isinstance(self.style, Mapping) and not isinstance(self.style, dict):
            object.__setattr__(self, "style", dict(self.style))
        if isinstance(self.loras, list):
            object.__setattr__(self, "loras", tuple(self.loras))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.colors is not None:
            data["colors"] = list(self.colors)
        if self.control is not None:
            data["control"] = [dict(unit) if isinstance(unit, dict) else unit
                               for unit in self.control]
        if self.loras is not None:
            data["loras"] = [dict(item) if isinstance(item, dict) else item
                             for item in self.loras]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationRequest:
        """Build a request from plain data; an unknown key is an error, not silently dropped."""
        if not isinstance(data, Mapping):
            raise InvalidRequestError("request", data, "must be a mapping of options")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise InvalidRequestError(key, data[key], "is not a generation option",
                                          choices=known)
        return cls(**dict(data))

    @classmethod
    def from_json(cls, text: str) -> GenerationRequest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError("request", text, f"is not valid JSON: {exc.msg}") from None
        return cls.from_dict(data)
