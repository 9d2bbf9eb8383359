"""Control images made ready for a render: fitted to its size, and preprocessed where a
preprocessor is built in (Canny edges, through OpenCV's headless build).

Every backend and the dashboard's preview go through :func:`prepare_control`, so the edges a
user previews are the edges a model is given.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from fractal.references import ControlUnit

__all__ = ["CANNY_HIGH", "CANNY_LOW", "canny", "fit", "prepare_control"]

# A1111's and diffusers' documented defaults for the Canny preprocessor.
CANNY_LOW, CANNY_HIGH = 100, 200


def fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` scaled to cover ``width``×``height`` and centre-cropped (A1111's "Crop and
    Resize"): the control's structure keeps its proportions."""
    if image.size == (width, height):
        return image
    return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)


def canny(image: Image.Image, low: int = CANNY_LOW, high: int = CANNY_HIGH) -> Image.Image:
    """White Canny edges on black, as RGB (the form ControlNet's canny models were trained on)."""
    import cv2  # imported on first use: most renders never need it

    gray = np.asarray(image.convert("L"))
    edges = cv2.Canny(gray, low, high)
    return Image.fromarray(edges).convert("RGB")


def prepare_control(unit: ControlUnit, width: int, height: int) -> Image.Image:
    """The control image a model is given for ``unit`` at ``width``×``height``: fitted, then
    preprocessed when the unit asks for it (only types in PREPROCESSORS can)."""
    image = fit(unit.image.convert("RGB"), width, height)
    if unit.preprocess and unit.type == "canny":
        return canny(image)
    return image
