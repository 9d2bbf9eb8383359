"""A request's reference images (style reference, control images) on the API's side: decoded
through the library's safe image reader (the same limits as an input image, each error naming
its field), named by their pixels' hash, and kept for storage; the job row gets the hashes.
See workers.references for the worker's side."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from fractal import GenerationRequest, InvalidRequestError
from fractal.images import image_bytes, load_image
from fractal.references import pixel_hash
from workers.references import REFERENCE_PREFIX

__all__ = ["DecodeCache", "References", "decode_references"]

# Data → (hash, image), or the reason it is not an image: a batch's thousand items sharing
# one reference decode it once (and a bad one is refused once per item without decoding).
DecodeCache = dict[str, tuple[str, Image.Image] | str]


@dataclass
class References:
    """What a request's references become: ``fields``, the row's ``style_image`` and
    ``control`` with each image named by hash; ``images``, hash → decoded image, to store."""

    fields: dict[str, Any] = field(default_factory=dict)
    images: dict[str, Image.Image] = field(default_factory=dict)

    def stored(self, request: GenerationRequest) -> dict[str, Any]:
        """The request as its job row keeps it: no image bytes."""
        data = request.to_dict()
        data.pop("image", None)  # the input image lives in storage too
        data.update(self.fields)
        return data


def _decode(data: str, argument: str, cache: DecodeCache,
            files: Mapping[str, bytes]) -> tuple[str, Image.Image]:
    known = cache.get(data)
    if isinstance(known, str):
        raise InvalidRequestError(argument, "<image>", known)
    if known is None:
        try:
            content = files[data] if data in files else image_bytes(data, argument)
            image = load_image(content, argument)
        except InvalidRequestError as exc:
            cache[data] = exc.reason
            raise
        known = cache[data] = (pixel_hash(image), image)
    return known


def decode_references(request: GenerationRequest, cache: DecodeCache | None = None,
                      files: Mapping[str, bytes] | None = None) -> References:
    """Decode a checked request's reference images. Blocking (decoding): run in a thread.
    ``files``: images already read from the body, by the name the request holds (see
    api.jsonparse). InvalidRequestError naming ``style_image`` or ``control[i].image``."""
    files = files or {}
    cache = {} if cache is None else cache
    references = References()

    def named(data: str, argument: str) -> str:
        sha256, image = _decode(data, argument, cache, files)
        references.images[sha256] = image
        return REFERENCE_PREFIX + sha256

    if request.style_image is not None:
        references.fields["style_image"] = named(request.style_image, "style_image")
    if request.control:
        references.fields["control"] = [
            {**unit, "image": named(unit["image"], f"control[{index}].image")}
            for index, unit in enumerate(request.control)]
    return references
