"""A request's reference images (style reference, control images) and its inpainting mask on
the API's side: decoded through the library's safe image reader (the same limits as an input
image, each error naming its field), named by their pixels' hash, and kept for storage; the
job row gets the hashes.
See workers.references for the worker's side."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from fractal import GenerationRequest, InvalidRequestError
from fractal.images import image_bytes, load_image, load_mask
from fractal.references import pixel_hash
from workers.references import REFERENCE_PREFIX

__all__ = ["DecodeCache", "References", "check_mask_size", "decode_references"]

# Data → (hash, image), or the reason it is not an image: a batch's thousand items sharing
# one reference decode it once (and a bad one is refused once per item without decoding).
DecodeCache = dict[str, tuple[str, Image.Image] | str]


@dataclass
class References:
    """What a request's references become: ``fields``, the row's ``style_image`` and
    ``control`` with each image named by hash; ``images``, hash → decoded image, to store."""

    fields: dict[str, Any] = field(default_factory=dict)
    images: dict[str, Image.Image] = field(default_factory=dict)
    mask_size: tuple[int, int] | None = None  # the mask's, checked against the image's

    def stored(self, request: GenerationRequest) -> dict[str, Any]:
        """The request as its job row keeps it: no image bytes."""
        data = request.to_dict()
        data.pop("image", None)  # the input image lives in storage too
        data.update(self.fields)
        return data


def _decode(data: str, argument: str, cache: DecodeCache,
            files: Mapping[str, bytes], mask: bool = False) -> tuple[str, Image.Image]:
    # The same file read as a mask is other pixels ("L", by alpha or lightness): cached apart.
    key = "mask\0" + data if mask else data
    known = cache.get(key)
    if isinstance(known, str):
        raise InvalidRequestError(argument, "<image>", known)
    if known is None:
        try:
            content = files[data] if data in files else image_bytes(data, argument)
            image = (load_mask if mask else load_image)(content, argument)
        except InvalidRequestError as exc:
            cache[key] = exc.reason
            raise
        known = cache[key] = (pixel_hash(image), image)
    return known


def decode_references(request: GenerationRequest, cache: DecodeCache | None = None,
                      files: Mapping[str, bytes] | None = None) -> References:
    """Decode a checked request's reference images. Blocking (decoding): run in a thread.
    ``files``: images already read from the body, by the name the request holds (see
    api.jsonparse). The mask is read as the library reads one (:func:`fractal.images.load_mask`:
    "L", 255 repaints) and stored so. InvalidRequestError naming ``style_image``,
    ``control[i].image`` or ``mask``."""
    files = files or {}
    cache = {} if cache is None else cache
    references = References()

    def named(data: str, argument: str, mask: bool = False) -> str:
        sha256, image = _decode(data, argument, cache, files, mask)
        references.images[sha256] = image
        if mask:
            references.mask_size = image.size
        return REFERENCE_PREFIX + sha256

    if request.style_image is not None:
        references.fields["style_image"] = named(request.style_image, "style_image")
    if request.control:
        references.fields["control"] = [
            {**unit, "image": named(unit["image"], f"control[{index}].image")}
            for index, unit in enumerate(request.control)]
    if request.mask is not None:
        references.fields["mask"] = named(request.mask, "mask", mask=True)
    return references


def check_mask_size(references: References, image_size: tuple[int, int] | None) -> None:
    """A mask covers its image pixel for pixel: InvalidRequestError naming ``mask``, saying
    both sizes, if it does not."""
    if references.mask_size is None or image_size is None or \
            references.mask_size == image_size:
        return
    (width, height), (image_width, image_height) = references.mask_size, image_size
    raise InvalidRequestError("mask", f"<{width}x{height} image>",
                              f"is {width}x{height} pixels but the image is "
                              f"{image_width}x{image_height}: give a mask the image's size")
