"""The ``generate`` command's inpainting and outpainting options: ``--mask PATH``,
``--mask-blur N``, ``--inpaint-area whole|masked``, ``--padding N`` and
``--expand left=64,right=64,top=0,bottom=0``.

Read and checked before any model loads, as the reference options are
(fractal.cli_references), each error naming the option as typed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from fractal.errors import InvalidRequestError
from fractal.images import load_image, load_mask
from fractal.masks_check import EXPAND_SIDES

__all__ = ["MaskOptions", "parse_expand"]

_PLACEHOLDER = "<file>"  # what the library's check sees for a mask not yet read
_OPTIONS = {"mask": "--mask", "mask_blur": "--mask-blur", "inpaint_area": "--inpaint-area",
            "padding": "--padding", "expand": "--expand"}


def parse_expand(text: str) -> dict[str, int]:
    """``left=64,right=64``: pixels per side; sides left out add none."""
    sides: dict[str, int] = {}
    for part in text.split(","):
        side, sep, value = part.partition("=")
        side = side.strip()
        if not sep or side not in EXPAND_SIDES:
            raise InvalidRequestError("--expand", text, f"`{part.strip()}` is not SIDE=PIXELS",
                                      choices=EXPAND_SIDES)
        if side in sides:
            raise InvalidRequestError("--expand", text, f"gives `{side}` twice")
        try:
            sides[side] = int(value.strip())
        except ValueError:
            raise InvalidRequestError("--expand", text, f"{side} must be a whole number of "
                                      "pixels") from None
    return sides


class MaskOptions:
    """The options as given; :meth:`request_fields` for the library's check before loading;
    :meth:`load` for the call."""

    def __init__(self, mask: Path | None, mask_blur: int | None, inpaint_area: str | None,
                 padding: int | None, expand: str | None) -> None:
        self.mask = mask
        self.mask_blur = mask_blur
        self.inpaint_area = inpaint_area
        self.padding = padding
        self.expand_text = expand
        self.expand = parse_expand(expand) if expand is not None else None

    def request_fields(self) -> dict[str, Any]:
        return {"mask": _PLACEHOLDER if self.mask is not None else None,
                "mask_blur": self.mask_blur, "inpaint_area": self.inpaint_area,
                "padding": self.padding, "expand": self.expand}

    def renamed(self, exc: InvalidRequestError) -> InvalidRequestError | None:
        """The library's error on one of these fields naming the option; None for others."""
        name = exc.argument.partition(".")[0]
        if name not in _OPTIONS:
            return None
        value = str(self.mask) if name == "mask" else \
            self.expand_text if name == "expand" else exc.value
        reason = exc.reason if name != "expand" or "." not in exc.argument else \
            f"{exc.argument.partition('.')[2]} {exc.reason}"
        return InvalidRequestError(_OPTIONS[name], value, reason, choices=exc.choices)

    def load(self, image: Path | None) -> dict[str, Any]:
        """The keyword arguments for ``generate_from_image``: the mask read and decoded safely
        now and compared with the image's size, named by its option in errors."""
        mask: Image.Image | None = None
        if self.mask is not None:
            mask = load_mask(self.mask, "--mask")
            if image is not None:
                size = load_image(image, "--image").size
                if mask.size != size:
                    raise InvalidRequestError(
                        "--mask", str(self.mask), f"is {mask.width}x{mask.height} pixels but "
                        f"the image is {size[0]}x{size[1]}: give a mask the image's size")
        fields = {"mask": mask, "mask_blur": self.mask_blur, "inpaint_area": self.inpaint_area,
                  "padding": self.padding, "expand": self.expand}
        return {key: value for key, value in fields.items() if value is not None}
