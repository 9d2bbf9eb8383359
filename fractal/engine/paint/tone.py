"""Whole-picture grades: a film look and a neon bloom."""

from __future__ import annotations

import numpy as np

from fractal.engine.paint.common import (
    Progress,
    fast_blur,
    luminance,
    report,
    scale_of,
    smoothstep,
    to_float,
    to_uint8,
)

__all__ = ["cinematic", "glow"]

_TEAL = np.array([0.0, 0.42, 0.48], dtype=np.float32)
_ORANGE = np.array([1.0, 0.58, 0.25], dtype=np.float32)


def _vignette(shape: tuple[int, int], strength: float) -> np.ndarray:
    h, w = shape
    y = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    return 1.0 - strength * smoothstep(0.4, 1.45, np.sqrt(x * x + y * y))


def cinematic(rgb: np.ndarray, *, seed: int, texture: float,
              progress: Progress | None = None) -> np.ndarray:
    """Teal shadows, orange highlights, an S-curve, a vignette and fine film grain."""
    img = to_float(rgb)
    lum = luminance(img)[..., None]
    # Split toning: shadows lean teal, highlights orange, mid-tones keep their colour.
    shadows = (1.0 - smoothstep(0.0, 0.55, lum)) * 0.28
    highlights = smoothstep(0.45, 1.0, lum) * 0.22
    img = img * (1.0 - shadows - highlights) + _TEAL * lum * shadows * 2.0 \
        + _ORANGE * lum * highlights * 1.6
    img = smoothstep(0.0, 1.0, np.clip(img * 1.05 - 0.02, 0.0, 1.0))  # S-curve contrast
    report(progress, 1, 2, to_uint8(img))
    img *= _vignette(img.shape[:2], 0.55)[..., None]
    rng = np.random.default_rng(seed)
    grain = rng.standard_normal(img.shape[:2], dtype=np.float32) * (0.012 + 0.02 * texture)
    out = to_uint8(img + grain[..., None])
    report(progress, 2, 2, out)
    return out


def glow(rgb: np.ndarray, *, seed: int, texture: float,
         progress: Progress | None = None) -> np.ndarray:
    """Neon bloom: the bright parts bleed light, colours deepen, the dark stays dark."""
    img = to_float(rgb)
    lum = luminance(img)[..., None]
    grey = lum * np.ones(3, dtype=np.float32)
    img = np.clip(grey + (img - grey) * 1.45, 0.0, 1.0)  # more saturated
    bright = img * smoothstep(0.5, 0.9, lum)
    scale = scale_of(img.shape)
    bloom = fast_blur(bright, scale * (0.02 - 0.01 * texture)) * 1.1
    bloom += fast_blur(bright, scale * 0.06) * 0.6
    report(progress, 1, 2, to_uint8(bloom))
    out = 1.0 - (1.0 - img * 0.92) * (1.0 - np.clip(bloom, 0.0, 1.0))  # screen blend
    out = to_uint8(out * _vignette(img.shape[:2], 0.35)[..., None])
    report(progress, 2, 2, out)
    return out
