"""Colour: palettes from prompt words, colour ramps, and mapping a picture onto a palette."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np

from fractal.engine.scene.vocabulary import Scene, stable_hash

F = np.float32
RGB = tuple[int, int, int]


def prompt_colours(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """(k, 3) float colours for abstract art: the prompt's colour words, else hues hashed
    from its words (so the same words always lean the same way) plus the seed's variation."""
    if scene.colours:
        base = np.array(scene.colours, F) / F(255)
        if len(base) == 1:
            rgb = base[0]
            dark, light = rgb * F(0.15), np.clip(rgb * F(0.5) + F(0.55), 0, 1)
            base = np.stack([dark, rgb, light])
        return np.concatenate([np.zeros((1, 3), F) + F(0.02), base])
    words = [w for w in scene.prompt.lower().split() if len(w) > 2] or ["fractal"]
    hues = [(stable_hash(word) % 1000) / 1000.0 for word in words[:4]]
    offset = rng.random() * 0.25
    colours = [(0.02, 0.02, 0.05)]
    for i, hue in enumerate([*hues, hues[0] + 0.5]):
        value = 0.55 + 0.4 * ((i + 1) % 2)
        colours.append(colorsys.hsv_to_rgb((hue + offset) % 1.0, 0.55 + 0.35 * rng.random(), value))
    colours.append((0.98, 0.96, 0.9))
    return np.array(colours, F)


def ramp(t: np.ndarray, colours: np.ndarray, *, cyclic: bool = False) -> np.ndarray:
    """Interpolate ``colours`` (k, 3) at ``t`` in 0..1 (wrapping if ``cyclic``)."""
    k = len(colours)
    if cyclic:
        stops = np.concatenate([colours, colours[:1]])
        pos = (t % 1.0) * k
    else:
        stops = colours
        pos = np.clip(t, 0.0, 1.0) * (k - 1)
    i = np.minimum(pos.astype(np.int32), len(stops) - 2)
    f = (pos - i).astype(F)[..., None]
    return stops[i] * (1 - f) + stops[i + 1] * f


def luminance(canvas: np.ndarray) -> np.ndarray:
    return canvas @ np.array((0.299, 0.587, 0.114), F)


def apply_palette(canvas: np.ndarray, palette: Sequence[RGB], *, amount: float = 0.85) -> None:
    """Re-map the picture's tones onto ``palette`` in place.

    The palette is sorted dark → light and each pixel's luminance rank picks a position along
    it; positions are pulled toward the palette's own colours (a soft posterise), so the
    result is made of those colours while keeping the picture's light and shade.
    """
    if not palette:
        return
    colours = np.array(palette, F).reshape(-1, 3) / F(255)
    order = np.argsort(colours @ np.array((0.299, 0.587, 0.114), F))
    colours = colours[order]
    lum = luminance(canvas)
    lo, hi = np.percentile(
        lum[:: max(1, lum.shape[0] // 256), :: max(1, lum.shape[1] // 256)], [2, 98]
    )
    t = np.clip((lum - F(lo)) / F(max(hi - lo, 1e-3)), 0, 1)
    k = len(colours)
    if k == 1:
        target = np.broadcast_to(colours[0], canvas.shape) * (F(0.55) + F(0.6) * t)[..., None]
    else:
        pos = t * F(k - 1)
        base = np.floor(pos)
        frac = pos - base
        frac = np.clip((frac - F(0.5)) * F(3.0) + F(0.5), 0, 1)  # snap toward the stops
        target = ramp((base + frac) / F(k - 1), colours)
    canvas *= F(1 - amount)
    canvas += target * F(amount)


def hash_tint(scene: Scene) -> tuple[float, float, float]:
    """A faint colour cast picked by the prompt's words (unknown words still matter)."""
    if not scene.unknown:
        return (1.0, 1.0, 1.0)
    hue = (stable_hash(" ".join(scene.unknown)) % 1000) / 1000.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.12, 1.0)
    return (r, g, b)
