"""Structural control for the built-in engine: draw a picture on a control image's structure.

A picture's lightness is split into detail octaves (a Laplacian pyramid: the coarsest band is
the broad light/dark layout, each finer band halves the size of the detail it holds). A
:class:`Guide` replaces the octaves inside its ``start..end`` band (0 = coarsest, 1 = finest)
with the same octaves of its own structure, weighted by ``scale``:

* ``"edges"`` (a canny edge map, white on black): each edge becomes a ridgeline — a lit crest
  with a shaded flank below it — and the topmost edges are the skyline, the land below them
  darker than the sky, so the picture's contours follow the control's edges. The coarsest
  band (the picture's overall light) is never replaced by an edge map.
* ``"layout"`` (any image): its luminance is the picture's height and layout map — bright
  where the control is bright, dark where it is dark.

``start``/``end`` are the engine's honest counterpart of a ControlNet's early → late denoising
steps: diffusion fixes the layout early and fine detail late; the engine's octaves run the
same way, coarse → fine. Colour (Lab a*, b*) is left to the scene. Pure and deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["GUIDE_KINDS", "Guide", "apply_guides", "band_coverage", "bands", "collapse",
           "from_lab", "octave_count", "to_lab"]

F = np.float32
GUIDE_KINDS = ("edges", "layout")
# A guide at scale s replaces 1 - KEEP**s of each octave it covers: 0 → none, 1 → 70 %,
# 2 (the largest scale) → 91 %, so the picture never vanishes entirely under a control.
KEEP = 0.3
RIDGE_LIGHT = 70.0  # L* a ridgeline's crest adds over its surroundings (Lab L runs 0..100)
EDGE_REACH = 6.0  # an edge guide speaks fully within this many crest widths of an edge…
FAR_FROM_EDGES = 0.3  # …and at this share of its weight far from every edge
LAND_SHADE = 25.0  # L* the land below the edges' skyline is darker than the sky above it


@dataclass(frozen=True)
class Guide:
    """Structure to draw on: ``image`` (H, W, 3) uint8 at the picture's size."""

    kind: str  # one of GUIDE_KINDS
    image: np.ndarray
    scale: float  # 0 = no effect … 2
    start: float = 0.0  # the band of octaves shaped, coarse (0) → fine (1)
    end: float = 1.0


def _cv2():  # imported on first use: most renders never need OpenCV
    import cv2

    return cv2


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB → float32 CIE Lab (L 0..100)."""
    return _cv2().cvtColor(rgb.astype(F) / F(255), _cv2().COLOR_RGB2Lab)


def from_lab(lab: np.ndarray) -> np.ndarray:
    """float32 CIE Lab → uint8 RGB, clipped and rounded."""
    rgb = _cv2().cvtColor(lab.astype(F, copy=False), _cv2().COLOR_Lab2RGB)
    return (np.clip(rgb, 0.0, 1.0) * F(255) + F(0.5)).astype(np.uint8)


def octave_count(height: int, width: int) -> int:
    """Laplacian levels for a picture: down to a coarsest band about 4-8 pixels across."""
    return max(1, int(math.log2(max(min(height, width), 8) / 4)))


def bands(gray: np.ndarray, levels: int) -> list[np.ndarray]:
    """``gray`` (H, W) as ``levels + 1`` octaves, coarse → fine (first: the low-pass rest)."""
    cv2 = _cv2()
    gauss = [gray.astype(F, copy=False)]
    for _ in range(levels):
        gauss.append(cv2.pyrDown(gauss[-1]))
    detail = [gauss[i] - cv2.pyrUp(gauss[i + 1], dstsize=gauss[i].shape[::-1])
              for i in range(levels)]
    return [gauss[-1], *detail[::-1]]


def collapse(octaves: Sequence[np.ndarray]) -> np.ndarray:
    """The inverse of :func:`bands`."""
    cv2 = _cv2()
    image = octaves[0]
    for band in octaves[1:]:
        image = cv2.pyrUp(image, dstsize=band.shape[::-1]) + band
    return image


def band_coverage(count: int, start: float, end: float) -> np.ndarray:
    """How much of each of ``count`` octaves (coarse → fine, equal shares of 0..1) lies in
    ``start..end``: a guide's start/end may cut an octave partly."""
    low = np.arange(count) / count
    high = low + 1.0 / count
    return (np.clip(np.minimum(high, end) - np.maximum(low, start), 0.0, None) * count).astype(F)


def _ridges(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An edge map (H, W, 3) as a relief in L* units — a crest on each edge, its flank below
    shaded (light from above), so edges read as ridgelines rather than drawn lines — and
    where it speaks: fully near an edge, only a little far from any (the scene keeps most of
    its own detail there)."""
    cv2 = _cv2()
    mask = (edges.max(axis=2) > 127).astype(np.uint8)
    if not mask.any():
        return np.zeros(mask.shape, F), np.zeros(mask.shape, F)  # no edges ask for nothing
    width = max(1.0, min(mask.shape) / 400)  # about 2 px at 768 rows
    distance = cv2.distanceTransform(1 - mask, cv2.DIST_L2, 3)
    crest = np.exp(-((distance / width) ** 2)).astype(F)
    shift = max(1, round(2 * width))
    flank = np.zeros_like(crest)
    flank[shift:] = crest[:-shift]  # the crest moved down: its shadow side
    relief = (crest - 0.5 * np.clip(flank - crest, 0.0, None)) * F(RIDGE_LIGHT)
    relief -= _land(mask) * F(LAND_SHADE)
    near = np.exp(-((distance / (EDGE_REACH * width)) ** 2)).astype(F)
    return relief, F(FAR_FROM_EDGES) + F(1 - FAR_FROM_EDGES) * near


def _land(mask: np.ndarray) -> np.ndarray:
    """1 below the skyline (the topmost edges: the horizon the edges draw), 0 above, blurred
    so it shapes only the coarse octaves (the ridgelines draw the sharp line). The skyline is
    each column's topmost edge, median-smoothed across columns so a stray fragment (a cloud's
    rim) does not cut a notch; edgeless columns take their neighbours' height."""
    from scipy.ndimage import median_filter

    rows, cols = mask.shape
    top = np.argmax(mask, axis=0).astype(F)
    known = np.flatnonzero(mask.any(axis=0))
    skyline = np.interp(np.arange(cols), known, top[known]).astype(F)
    skyline = median_filter(skyline, size=max(3, cols // 8) | 1, mode="nearest")
    land = (np.arange(rows, dtype=F)[:, None] >= skyline[None, :]).astype(F)
    return _cv2().GaussianBlur(land, (0, 0), max(1.0, rows / 30))


def _target(guide: Guide, lightness: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The lightness the guide asks for, and where (None: everywhere alike)."""
    if guide.kind == "edges":
        return _ridges(guide.image)
    # The control's luminance, spread over the picture's own range of lightness.
    lum = to_lab(guide.image)[..., 0]
    low, high = np.percentile(lightness, (2, 98))
    lum_low, lum_high = np.percentile(lum, (2, 98))
    spread = (high - low) / max(lum_high - lum_low, 1e-3)
    return ((lum - lum_low) * F(max(spread, 0.5)) + F(low)).astype(F), None


def apply_guides(rgb: np.ndarray, guides: Sequence[Guide]) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 drawn on the guides' structure; several guides share each
    octave in proportion to their weights. No guide with a scale above 0 (or only edge maps
    without an edge): ``rgb`` itself."""
    for guide in guides:
        if guide.kind not in GUIDE_KINDS:
            raise ValueError(f"unknown guide kind {guide.kind!r}; one of {GUIDE_KINDS}")
        if guide.image.shape != rgb.shape:
            raise ValueError(f"a guide is {guide.image.shape}, the picture {rgb.shape}")
    # An edge map without an edge asks for nothing: the picture stays exactly as drawn.
    active = [guide for guide in guides if guide.scale > 0 and (
        guide.kind != "edges" or (guide.image.max(axis=2) > 127).any())]
    if not active:
        return rgb
    cv2 = _cv2()
    lab = to_lab(rgb)
    levels = octave_count(*rgb.shape[:2])
    own = bands(lab[..., 0], levels)
    mixed = [np.zeros_like(band) for band in own]
    totals = [np.zeros_like(band) for band in own]
    for guide in active:
        weights = band_coverage(len(own), guide.start, guide.end) * F(1 - KEEP ** guide.scale)
        if guide.kind == "edges":
            weights[0] = 0.0  # an edge map says nothing about the picture's overall light
        target, where = _target(guide, lab[..., 0])
        target_bands = bands(target, levels)
        for index, weight in enumerate(weights):
            if weight <= 0:
                continue
            local = F(weight) if where is None else weight * cv2.resize(
                where, own[index].shape[::-1], interpolation=cv2.INTER_AREA)
            mixed[index] += target_bands[index] * local
            totals[index] += local
    out = []
    for band, mix, total in zip(own, mixed, totals, strict=True):
        # Guides together replace at most the whole octave, sharing it by their weights.
        share = np.minimum(total, 1.0)
        out.append(band * (1 - share) + mix * (share / np.maximum(total, 1e-6)))
    lab[..., 0] = np.clip(collapse(out), 0.0, 100.0)
    return from_lab(lab)
