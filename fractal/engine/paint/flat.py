"""Flat-colour looks: pixel art, posters, woodblock prints, anime cels, art deco."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from fractal.engine.paint.common import (
    Palette,
    Progress,
    blur,
    luminance,
    nearest_index,
    report,
    scale_of,
    simplify,
    smoothstep,
    to_float,
    to_uint8,
    value_noise,
)

__all__ = ["art_deco", "cel", "pixel", "posterize", "ukiyoe"]

_DECO = [(12, 12, 12), (29, 60, 69), (212, 175, 55), (241, 229, 195), (140, 28, 19)]
_UKIYOE_PAPER = np.array([0.93, 0.88, 0.76], dtype=np.float32)


def _quantise(rgb: np.ndarray, palette: Palette | None, colours: int) -> np.ndarray:
    """Nearest colour of ``palette``, or of an adaptive palette of ``colours`` colours."""
    if palette:
        table = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    else:
        # Median cut is deterministic: the same picture always gets the same palette.
        small = Image.fromarray(rgb).reduce(max(1, max(rgb.shape[:2]) // 256))
        quantised = small.quantize(colors=colours, method=Image.Quantize.MEDIANCUT)
        table = np.asarray(quantised.getpalette()[: colours * 3], dtype=np.uint8).reshape(-1, 3)
    index = nearest_index(rgb.reshape(-1, 3), table)
    return table[index].reshape(rgb.shape)


def _outlines(flat: np.ndarray, width: float) -> np.ndarray:
    """0..1 ink where neighbouring areas differ in colour, ``width`` pixels wide."""
    label = flat.astype(np.int32) @ np.array([65536, 256, 1], dtype=np.int32)
    edges = (np.diff(label, axis=0, prepend=label[:1]) != 0) | \
        (np.diff(label, axis=1, prepend=label[:, :1]) != 0)
    if width > 1.2:
        edges = ndimage.binary_dilation(edges, iterations=round(width / 2))
    return blur(edges.astype(np.float32), 0.6)


def pixel(rgb: np.ndarray, *, seed: int, texture: float, palette: Palette | None = None,
          progress: Progress | None = None) -> np.ndarray:
    """Chunky pixels in a limited palette; finer cells at higher texture."""
    h, w = rgb.shape[:2]
    cell = max(2, round(scale_of(rgb.shape) * (0.018 - 0.012 * texture)))
    small = np.asarray(Image.fromarray(rgb).resize((max(1, w // cell), max(1, h // cell)),
                                                   Image.Resampling.BOX))
    small = _quantise(small, palette, 16)
    report(progress, 1, 1, small)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.NEAREST))


def posterize(rgb: np.ndarray, *, seed: int, texture: float, palette: Palette | None = None,
              progress: Progress | None = None) -> np.ndarray:
    """Few flat colours with dark outlines, like a screen-printed poster."""
    scale = scale_of(rgb.shape)
    flat = _quantise(simplify(rgb, round(scale * (0.012 - 0.006 * texture))), palette, 6)
    report(progress, 1, 2, flat)
    ink = _outlines(flat, scale * 0.003)[..., None]
    out = to_uint8(to_float(flat) * (1.0 - 0.85 * ink))
    report(progress, 2, 2, out)
    return out


def ukiyoe(rgb: np.ndarray, *, seed: int, texture: float, palette: Palette | None = None,
           progress: Progress | None = None) -> np.ndarray:
    """Woodblock print: muted flat colours, bold key-block lines, warm fibrous paper."""
    scale = scale_of(rgb.shape)
    muted = to_float(rgb)
    lum = luminance(muted)[..., None]
    muted = lum + (muted - lum) * 0.75  # woodblock inks are less saturated than photos
    muted = muted * 0.85 + _UKIYOE_PAPER * 0.15
    flat = _quantise(simplify(to_uint8(muted), round(scale * 0.014)), palette, 7)
    report(progress, 1, 2, flat)
    ink = _outlines(flat, scale * 0.004)[..., None]
    rng = np.random.default_rng(seed)
    fibres = value_noise(rgb.shape[:2], scale * 0.004, rng)[..., None] * 0.04
    paper = _UKIYOE_PAPER * (1.0 + fibres)
    img = to_float(flat) * 0.9 + paper * 0.1
    img = img * (1.0 - ink) + np.array([0.12, 0.1, 0.1], dtype=np.float32) * ink
    out = to_uint8(img)
    report(progress, 2, 2, out)
    return out


def cel(rgb: np.ndarray, *, seed: int, texture: float, palette: Palette | None = None,
        progress: Progress | None = None) -> np.ndarray:
    """Anime cel shading: three tones per area and thin ink lines on strong edges."""
    scale = scale_of(rgb.shape)
    smooth = simplify(rgb, round(scale * (0.008 - 0.004 * texture)))
    base = to_float(_quantise(smooth, palette, 10))
    lum = luminance(to_float(smooth))[..., None]
    # Hard light steps: shadow, mid, highlight.
    tone = np.where(lum < 0.33, 0.78, np.where(lum > 0.72, 1.12, 1.0)).astype(np.float32)
    img = np.clip(base * tone, 0.0, 1.0)
    report(progress, 1, 2, to_uint8(img))
    edge_lum = blur(luminance(to_float(smooth)), 1.0)
    magnitude = np.hypot(ndimage.sobel(edge_lum, axis=0), ndimage.sobel(edge_lum, axis=1))
    ink = smoothstep(0.25, 0.6, magnitude)[..., None]
    out = to_uint8(img * (1.0 - 0.9 * ink))
    report(progress, 2, 2, out)
    return out


def art_deco(rgb: np.ndarray, *, seed: int, texture: float, palette: Palette | None = None,
             progress: Progress | None = None) -> np.ndarray:
    """Bold flat areas in black, teal and cream, gold contour lines and a faint sunburst."""
    h, w = rgb.shape[:2]
    scale = scale_of(rgb.shape)
    flat = _quantise(simplify(rgb, round(scale * 0.012)), palette or _DECO, 5)
    report(progress, 1, 2, flat)
    y = (np.arange(h, dtype=np.float32)[:, None] - h * 1.05) / scale
    x = (np.arange(w, dtype=np.float32)[None, :] - w * 0.5) / scale
    rays = 0.5 + 0.5 * np.cos(np.arctan2(y, x) * (18 + round(10 * texture)))
    sunburst = smoothstep(0.6, 0.9, rays)[..., None] * 0.08
    gold = np.array([0.83, 0.69, 0.22], dtype=np.float32)
    ink = _outlines(flat, scale * 0.0035)[..., None]
    img = to_float(flat) * (1.0 - sunburst) + gold * sunburst
    out = to_uint8(img * (1.0 - ink) + gold * ink)
    report(progress, 2, 2, out)
    return out
