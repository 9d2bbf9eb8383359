"""Media looks: watercolour washes, oil impasto, Seurat's dots and a graphite sketch."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from fractal.engine.paint.common import (
    Progress,
    blur,
    fractal_noise,
    luminance,
    report,
    scale_of,
    simplify,
    smoothstep,
    to_float,
    to_uint8,
    value_noise,
)

__all__ = ["oil", "pencil", "pointillism", "watercolor"]

_PAPER = np.array([0.97, 0.95, 0.9], dtype=np.float32)


def watercolor(rgb: np.ndarray, *, seed: int, texture: float,
               progress: Progress | None = None) -> np.ndarray:
    """Soft washes that bleed, darker pigment at their edges, granulation and paper grain."""
    h, w = rgb.shape[:2]
    scale = scale_of(rgb.shape)
    rng = np.random.default_rng(seed)
    washes = to_float(simplify(rgb, round(scale * (0.016 - 0.008 * texture))))
    # Wet-in-wet: colours drift along a smooth random field before they dry.
    drift = scale * 0.006
    dy = value_noise((h, w), scale * 0.05, rng) * drift
    dx = value_noise((h, w), scale * 0.05, rng) * drift
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    coords = [np.clip(yy + dy, 0, h - 1), np.clip(xx + dx, 0, w - 1)]
    bled = np.stack([ndimage.map_coordinates(washes[..., c], coords, order=1)
                     for c in range(3)], axis=-1)
    report(progress, 1, 3, to_uint8(bled))
    # Pigment pools where a wash meets another: darken along the washes' boundaries.
    lum = luminance(bled)
    edge = np.hypot(ndimage.sobel(blur(lum, 1.0), axis=0), ndimage.sobel(blur(lum, 1.0), axis=1))
    pooled = bled * (1.0 - 0.35 * smoothstep(0.05, 0.4, edge))[..., None]
    granulation = 1.0 + fractal_noise((h, w), scale * 0.01, rng, octaves=2)[..., None] * 0.06
    paint = np.clip(pooled * granulation, 0.0, 1.0)
    # Transparent paint: the paper shows through, most where the wash is light.
    showing = 0.12 + 0.25 * smoothstep(0.5, 0.95, luminance(paint))[..., None]
    img = paint * (1.0 - showing) + _PAPER * showing
    report(progress, 2, 3, to_uint8(img))
    paper = 1.0 + value_noise((h, w), max(2.0, scale * 0.002), rng)[..., None] * 0.03
    out = to_uint8(img * paper)
    report(progress, 3, 3, out)
    return out


def _kuwahara(img: np.ndarray, radius: int) -> np.ndarray:
    """Each pixel takes the mean of whichever of its four quadrants varies least."""
    size = radius + 1
    mean = np.stack([ndimage.uniform_filter(img[..., c], size, mode="nearest")
                     for c in range(3)], axis=-1)
    lum = luminance(img)
    lum_mean = ndimage.uniform_filter(lum, size, mode="nearest")
    variance = ndimage.uniform_filter(lum * lum, size, mode="nearest") - lum_mean ** 2
    offset = radius // 2 + 1 if radius > 1 else 1
    best_var = np.full(lum.shape, np.inf, dtype=np.float32)
    out = np.empty_like(img)
    for oy in (-offset, offset):
        for ox in (-offset, offset):
            shifted_var = ndimage.shift(variance, (oy, ox), order=0, mode="nearest")
            shifted_mean = np.stack([ndimage.shift(mean[..., c], (oy, ox), order=0,
                                                   mode="nearest") for c in range(3)], axis=-1)
            better = shifted_var < best_var
            best_var = np.where(better, shifted_var, best_var)
            out[better] = shifted_mean[better]
    return out


def oil(rgb: np.ndarray, *, seed: int, texture: float,
        progress: Progress | None = None) -> np.ndarray:
    """Kuwahara-smoothed paint with lit impasto ridges and a canvas weave."""
    h, w = rgb.shape[:2]
    scale = scale_of(rgb.shape)
    img = to_float(rgb)
    lum = luminance(img)
    img = np.clip(lum[..., None] + (img - lum[..., None]) * 1.15, 0.0, 1.0)  # richer colour
    painted = _kuwahara(img, max(2, round(scale * (0.009 - 0.005 * texture))))
    report(progress, 1, 2, to_uint8(painted))
    # Impasto: the paint's own relief, lit from the top left.
    rng = np.random.default_rng(seed)
    relief = blur(luminance(painted), 1.2) + value_noise((h, w), scale * 0.004, rng) * 0.05
    light = ndimage.sobel(relief, axis=0) * -0.5 + ndimage.sobel(relief, axis=1) * -0.5
    shaded = painted * (1.0 + np.clip(light, -0.5, 0.5)[..., None] * 0.35)
    weave = 1.0 + 0.025 * (np.sin(np.arange(w) * 1.9)[None, :] * np.sin(np.arange(h) * 1.9)
                           [:, None])
    out = to_uint8(shaded * weave[..., None])
    report(progress, 2, 2, out)
    return out


def pointillism(rgb: np.ndarray, *, seed: int, texture: float,
                progress: Progress | None = None) -> np.ndarray:
    """Dots of pure colour on a light ground, in a random order, finer at higher texture."""
    h, w = rgb.shape[:2]
    scale = scale_of(rgb.shape)
    rng = np.random.default_rng(seed)
    img = to_float(rgb)
    lum = luminance(img)[..., None]
    pure = np.clip(lum + (img - lum) * 1.6, 0.0, 1.0)  # Seurat's unmixed colours
    spacing = max(2.0, scale * (0.009 - 0.005 * texture))
    rows, cols = int(h / spacing) + 1, int(w / spacing) + 1
    ys = (np.arange(rows)[:, None] + rng.random((rows, cols))) * spacing
    xs = (np.arange(cols)[None, :] + rng.random((rows, cols))) * spacing
    ys, xs = ys.ravel(), xs.ravel()
    keep = (ys < h) & (xs < w)
    ys, xs = ys[keep], xs[keep]
    order = rng.permutation(len(ys))
    ys, xs = ys[order], xs[order]
    jitter = rng.normal(0.0, 0.06, (len(ys), 3)).astype(np.float32)
    colours = np.clip(pure[ys.astype(int), xs.astype(int)] + jitter, 0.0, 1.0)
    radius = spacing * 0.62
    canvas = Image.new("RGB", (w, h), tuple(int(c * 255) for c in _PAPER))
    draw = ImageDraw.Draw(canvas)
    for y, x, colour in zip(ys, xs, (colours * 255).astype(np.uint8), strict=True):
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=tuple(colour))
    out = np.asarray(canvas)
    report(progress, 1, 1, out)
    return out


def pencil(rgb: np.ndarray, *, seed: int, texture: float,
           progress: Progress | None = None) -> np.ndarray:
    """Graphite: outlines by colour dodge, hatching that darkens with the tone, paper grain."""
    h, w = rgb.shape[:2]
    scale = scale_of(rgb.shape)
    rng = np.random.default_rng(seed)
    lum = luminance(to_float(rgb))
    # Colour dodge of the inverted blur: the classic sketch of the edges.
    soft = blur(1.0 - lum, max(1.0, scale * 0.006))
    sketch = np.clip(lum / np.maximum(1.0 - soft, 1e-3), 0.0, 1.0)
    report(progress, 1, 2, to_uint8(np.repeat(sketch[..., None], 3, axis=2)))
    spacing = max(3.0, scale * (0.008 - 0.004 * texture))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wobble = value_noise((h, w), scale * 0.03, rng) * spacing * 0.6
    hatch = 0.5 + 0.5 * np.sin((xx + yy + wobble) * (np.pi / spacing))
    cross = 0.5 + 0.5 * np.sin((xx - yy + wobble) * (np.pi / spacing))
    darkness = 1.0 - blur(lum, spacing * 0.5)
    # Light areas stay paper; mid-tones get one direction of hatching, shadows cross-hatching.
    strokes = smoothstep(0.6, 0.92, hatch) * smoothstep(0.45, 0.7, darkness) + \
        smoothstep(0.65, 0.92, cross) * smoothstep(0.65, 0.85, darkness)
    graphite = np.clip(sketch * (1.0 - 0.55 * np.clip(strokes, 0.0, 1.0)), 0.0, 1.0)
    grain = 1.0 + rng.standard_normal((h, w)).astype(np.float32) * 0.025
    paper = np.array([0.96, 0.95, 0.92], dtype=np.float32)
    out = to_uint8((graphite * grain)[..., None] * paper)
    report(progress, 2, 2, out)
    return out
