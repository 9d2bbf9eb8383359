"""Upscaling a picture: a high-quality resampler, then a gentle detail (sharpen) pass."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["enlarge", "sharpen"]


def sharpen(rgb: np.ndarray, amount: float, radius: float) -> np.ndarray:
    """An unsharp mask: edges and fine texture lifted by ``amount`` (0 leaves the picture as
    it is, 1 is strong), over a blur of ``radius`` pixels."""
    if amount <= 0:
        return rgb
    # A threshold of 2 levels keeps flat areas (sky, gradients) free of amplified noise.
    mask = ImageFilter.UnsharpMask(radius=radius, percent=round(300 * amount), threshold=2)
    return np.asarray(Image.fromarray(rgb).filter(mask))


def enlarge(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """``rgb`` resampled to ``width``×``height`` with Lanczos."""
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.LANCZOS))
