"""Spec-2-Fractal: text-to-image and image-to-image with diffusers or a built-in fractal engine.

>>> from fractal import Spec2Fractal
>>> model = Spec2Fractal()  # the built-in offline engine; or Spec2Fractal("stabilityai/sd-turbo")
>>> image = model.generate_from_text("A serene lake surrounded by mountains during sunrise")
>>> image.save("output.png")
"""

import logging

from fractal.errors import (
    GenerationCancelled,
    InvalidRequestError,
    ModelLoadError,
    Spec2FractalError,
)
from fractal.images import decode_image, image_to_data_url, load_image
from fractal.plan import ModelDefaults
from fractal.record import GenerationRecord, read_record
from fractal.request import GenerationRequest
from fractal.spec2fractal import CancelHook, ProgressCallback, Spec2Fractal
from fractal.styles import Style, StyleLibrary

__all__ = [
    "CancelHook",
    "GenerationCancelled",
    "GenerationRecord",
    "GenerationRequest",
    "InvalidRequestError",
    "ModelDefaults",
    "ModelLoadError",
    "ProgressCallback",
    "Spec2Fractal",
    "Spec2FractalError",
    "Style",
    "StyleLibrary",
    "decode_image",
    "image_to_data_url",
    "load_image",
    "read_record",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
