"""The ``generate`` command's reference options: ``--style-image``, ``--style-strength``,
``--style-mode`` and ``--control TYPE=PATH[,scale=F][,start=F][,end=F][,preprocess=B]``.

Read and checked before any model loads (a typo should not cost a minute of loading), each
error naming the option as typed, e.g. ``--control #2 (depth=d.png,scale=3)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from fractal.errors import InvalidRequestError
from fractal.images import load_image
from fractal.references import CONTROL_KEYS, CONTROL_TYPES

__all__ = ["ReferenceOptions", "parse_control"]

_NUMBERS = ("scale", "start", "end")
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_PLACEHOLDER = "<file>"  # what the library's check sees for an image not yet read


def parse_control(text: str) -> tuple[dict[str, Any], str]:
    """One ``--control`` value as a control unit (its image still a path) and the path."""
    kind, _, rest = text.partition("=")
    path, *settings = rest.split(",")
    if not kind or not path:
        raise InvalidRequestError("--control", text, "must look like TYPE=PATH[,scale=F]"
                                  "[,start=F][,end=F][,preprocess=true|false]")
    if kind not in CONTROL_TYPES:
        raise InvalidRequestError("--control", text, f"`{kind}` is not a control type",
                                  choices=CONTROL_TYPES)
    unit: dict[str, Any] = {"type": kind}
    for setting in settings:
        key, sep, value = setting.partition("=")
        key = key.strip()
        if not sep or key not in CONTROL_KEYS or key in ("type", "image"):
            raise InvalidRequestError("--control", text, f"`{setting}` is not a control "
                                      "setting", choices=(*_NUMBERS, "preprocess"))
        if key == "preprocess":
            if value.strip().lower() not in _BOOLEANS:
                raise InvalidRequestError("--control", text, "preprocess must be true or false")
            unit[key] = _BOOLEANS[value.strip().lower()]
            continue
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise InvalidRequestError("--control", text, f"{key} must be a finite number")
        unit[key] = number
    return unit, path


class ReferenceOptions:
    """The options as given; :meth:`check` before loading; :meth:`load` for the call."""

    def __init__(self, style_image: Path | None, style_strength: float | None,
                 style_mode: str | None, control: list[str] | None) -> None:
        self.style_image = style_image
        self.style_strength = style_strength
        self.style_mode = style_mode
        self.texts = list(control or ())
        self.parsed = [parse_control(text) for text in self.texts]

    def request_fields(self) -> dict[str, Any]:
        """For the library's check: every value, images as placeholders."""
        return {"style_image": _PLACEHOLDER if self.style_image is not None else None,
                "style_strength": self.style_strength, "style_mode": self.style_mode,
                "control": [{**unit, "image": _PLACEHOLDER} for unit, _ in self.parsed]
                or None}

    def renamed(self, exc: InvalidRequestError) -> InvalidRequestError:
        """The library's error on a reference field, naming the option instead."""
        argument = exc.argument
        if argument.startswith("control[") and "]" in argument:
            index = int(argument[len("control["):argument.index("]")])
            key = argument.partition("].")[2] or "control"
            if index < len(self.texts):
                return InvalidRequestError(f"--control #{index + 1}", self.texts[index],
                                           f"{key} {exc.reason}", choices=exc.choices)
        if argument == "control":
            return InvalidRequestError("--control", exc.value, exc.reason, choices=exc.choices)
        if argument in ("style_image", "style_strength", "style_mode"):
            option = "--" + argument.replace("_", "-")
            value = str(self.style_image) if argument == "style_image" else exc.value
            return InvalidRequestError(option, value, exc.reason, choices=exc.choices)
        return exc

    @contextlib.contextmanager
    def naming_options(self) -> Iterator[None]:
        """A model's own refusal (a control type it lacks) names the option too."""
        try:
            yield
        except InvalidRequestError as exc:
            raise self.renamed(exc) from None

    def load(self) -> dict[str, Any]:
        """The keyword arguments for ``generate_from_text``/``generate_from_image``: each
        image read and decoded safely now, named by its option in errors."""
        style: Image.Image | None = None
        if self.style_image is not None:
            style = load_image(self.style_image, "--style-image")
        units = []
        for number, (unit, path) in enumerate(self.parsed, start=1):
            units.append({**unit, "image": load_image(Path(path), f"--control #{number}")})
        return {"style_image": style, "style_strength": self.style_strength,
                "style_mode": self.style_mode, "control": units or None}
