"""A request's inputs as the library takes them: its input image (and, for an upscale, the
record the image carries), and the reference and colour arguments of the convenience methods
turned into request data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from fractal.images import ImageSource, image_bytes, image_to_data_url, load_image, load_mask
from fractal.record import RECORD_KEY, GenerationRecord, parse_record, record_from_png
from fractal.request import GenerationRequest

__all__ = ["colors_argument", "edit_arguments", "loras_argument", "record_of_source",
           "reference_arguments", "request_image"]


def request_image(request: GenerationRequest
                   ) -> tuple[Image.Image | None, dict[str, Any] | None]:
    """A request's input image, and for an upscale the record it carries (see
    :func:`record_of_source`)."""
    if request.image is None:
        return None, None
    data = image_bytes(request.image)
    image = load_image(data)
    return image, record_of_source(data) if request.input_type == "upscale" else None


def record_of_source(source: ImageSource) -> dict[str, Any] | None:
    """The record of an image this library made, as a dict; None for any other image.

    The image's own metadata never reaches a render (``load_image`` strips it all): only a
    record that parses as one is kept, and the backend checks its values before it uses
    them. It is read from the PNG's text chunk (or, for a PIL image, from ``info``)."""
    record: GenerationRecord | None = None
    if isinstance(source, Image.Image):
        record = parse_record(source.info.get(RECORD_KEY))
    elif isinstance(source, (bytes, bytearray, memoryview)):
        record = record_from_png(bytes(source))
    elif isinstance(source, (str, Path)):
        try:
            record = record_from_png(Path(source).read_bytes())  # load_image checked its size
        except OSError:
            record = None
    return record.to_dict() if record is not None else None


def reference_arguments(style_image: ImageSource | None, style_strength: float | None,
                style_mode: str | None, control: Sequence[Mapping[str, Any]] | None
                ) -> dict[str, Any]:
    """The reference arguments of a convenience method as request data: each image (PIL,
    path or bytes) decoded safely and sent on as a PNG data URL; the rest as given, for
    check_request to judge."""
    def data(value: Any, argument: str) -> Any:
        if value is None or (isinstance(value, str) and value.startswith("data:")):
            return value
        if isinstance(value, (Image.Image, Path, str, bytes, bytearray)):
            return image_to_data_url(load_image(value, argument))
        return value  # not an image: check_request names it

    units = None
    if control is not None:
        units = [({**unit, "image": data(unit.get("image"), f"control[{index}].image")}
                  if isinstance(unit, Mapping) else unit)
                 for index, unit in enumerate(control)] if isinstance(control, (list, tuple)) \
            else control
    return {"style_image": data(style_image, "style_image"), "style_strength": style_strength,
            "style_mode": style_mode, "control": units}


def colors_argument(colors: Any) -> Any:
    # Anything else is left for check_request to reject with a clear message.
    return tuple(colors) if isinstance(colors, list) else colors


def edit_arguments(mask: ImageSource | None, mask_blur: Any, inpaint_area: Any, padding: Any,
                   expand: Any) -> dict[str, Any]:
    """The inpainting arguments of a convenience method as request data: the mask (PIL image,
    path or bytes) read as a mask — transparency kept, which load_image would flatten — and
    sent on as an "L" PNG data URL; the rest as given, for check_request to judge."""
    if mask is not None and not (isinstance(mask, str) and mask.startswith("data:")):
        if isinstance(mask, str):
            mask = Path(mask)  # a path given as text, as load_image takes one
        if isinstance(mask, (Image.Image, Path, bytes, bytearray)):
            mask = image_to_data_url(load_mask(mask, "mask"))
    return {"mask": mask, "mask_blur": mask_blur, "inpaint_area": inpaint_area,
            "padding": padding, "expand": dict(expand) if isinstance(expand, Mapping) else expand}


def loras_argument(loras: Sequence[Mapping[str, Any]] | None
                    ) -> tuple[dict[str, Any], ...] | None:
    if loras is None or isinstance(loras, (str, bytes)) or not isinstance(loras, Sequence):
        return loras  # type: ignore[return-value]  # check_request names what is wrong
    return tuple(dict(item) if isinstance(item, Mapping) else item for item in loras)
