"""Pulling a picture's colours toward a palette, keeping its light and dark structure."""

from __future__ import annotations

import numpy as np

from fractal.engine.paint.common import Palette, blur, luminance, scale_of, to_float, to_uint8

__all__ = ["palette_bands", "recolour"]


def _sorted_palette(palette: Palette) -> np.ndarray:
    colours = np.asarray(palette, dtype=np.float32).reshape(-1, 3) / 255.0
    return colours[np.argsort(luminance(colours), kind="stable")]


def palette_bands(img: np.ndarray, palette: Palette, softness: float = 0.25) -> np.ndarray:
    """Each pixel becomes a palette colour chosen by its luminance rank.

    Ranks, not raw luminance: a dark picture still uses the whole palette, darkest colour for
    its darkest tenth and so on. ``softness`` blends neighbouring colours at band edges.
    """
    colours = _sorted_palette(palette)
    # Slightly smoothed, so grain in a flat sky does not flicker between two bands.
    lum = blur(luminance(img), max(1.0, scale_of(img.shape) * 0.0015))
    # Rank via a 256-bin histogram: cheap at any size, and the same for the same picture.
    counts, edges = np.histogram(lum, bins=256, range=(0.0, 1.0))
    cdf = np.cumsum(counts).astype(np.float32)
    cdf /= max(cdf[-1], 1.0)
    rank = np.interp(lum, edges[1:], cdf).astype(np.float32)
    position = np.clip(rank * len(colours) - 0.5, 0.0, len(colours) - 1.0)
    low = np.floor(position).astype(np.intp)
    high = np.minimum(low + 1, len(colours) - 1)
    frac = position - low
    # Mostly flat bands; a narrow ramp between them keeps edges from aliasing.
    half = max(softness, 1e-3) / 2
    weight = np.clip((frac - (0.5 - half)) / (2 * half), 0.0, 1.0)[..., None]
    return colours[low] * (1.0 - weight) + colours[high] * weight


def recolour(rgb: np.ndarray, palette: Palette, amount: float) -> np.ndarray:
    """``amount`` 0 leaves ``rgb`` alone; 1 maps every pixel onto the palette."""
    if not palette or amount <= 0:
        return rgb.copy()
    img = to_float(rgb)
    mapped = palette_bands(img, palette)
    amount = float(min(amount, 1.0))
    return to_uint8(img * (1.0 - amount) + mapped * amount)
