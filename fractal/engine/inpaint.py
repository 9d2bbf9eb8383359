"""Inpainting and outpainting for the built-in engine: a fill for a masked area that takes the
surrounding picture's light and palette.

* With a prompt, the prompt's scene is drawn at the picture's size; its colours are matched
  to a ring of kept pixels around the mask (mean and spread of each CIE Lab channel, as
  :mod:`fractal.engine.transfer` matches a reference's palette), and near the mask's edge its
  low frequencies are replaced by the surroundings' (light continues across the seam: an
  outpainted sky keeps the sky's colour beside it, a horizon its height of tone).
* Without one, the surroundings are continued: their colours spread into the hole (a
  normalised blur over the kept pixels only) with grain as strong as theirs.

The fill is returned for the whole picture, mixed with the source by ``strength``; the
library composites it through the feathered mask (fractal.masks), so pixels outside it stay
the input's. Pure and deterministic for a seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from fractal.engine.paint import apply_effect
from fractal.engine.scene import render_scene
from fractal.engine.structure import from_lab, to_lab

__all__ = ["inpaint"]

F = np.float32
RGB = tuple[int, int, int]
Progress = Callable[[int, int, "np.ndarray | None"], None]
SPREAD_RANGE = (0.5, 2.0)  # a channel's spread is never scaled beyond this
GRAIN_SIGMA = 0.8  # px: the fill's grain is noise this finely blurred


def _cv2():  # imported on first use, as fractal.engine.structure does
    import cv2

    return cv2


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur of ``sigma`` px, computed on a picture shrunk by up to sigma/4 (a wide
    blur keeps no detail a small picture lacks)."""
    cv2 = _cv2()
    height, width = image.shape[:2]
    shrink = max(1, int(sigma // 4))
    small = cv2.resize(image, (max(1, width // shrink), max(1, height // shrink)),
                       interpolation=cv2.INTER_AREA) if shrink > 1 else image
    small = cv2.GaussianBlur(small, (0, 0), sigma / shrink, borderType=cv2.BORDER_REFLECT)
    if shrink > 1:
        small = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    return small.reshape(image.shape)


def _surroundings(rgb: np.ndarray, keep: np.ndarray, sigma: float) -> np.ndarray:
    """The kept pixels' colours spread over the picture: a blur of them divided by the blur
    of where they are (normalised convolution), wider where the hole is wide."""
    weight = keep.astype(F)
    result = np.zeros_like(rgb)
    pending = np.ones(keep.shape, bool)
    for scale in (1, 4, 16, 64):
        den = _blur(weight, sigma * scale)
        num = _blur(rgb * weight[..., None], sigma * scale)
        ready = pending & (den > 1e-3)
        result[ready] = num[ready] / den[ready][:, None]
        pending &= ~ready
        if not pending.any():
            break
    result[pending] = rgb[keep].mean(axis=0)
    return result


def _matched(scene: np.ndarray, source: np.ndarray, ring: np.ndarray, hole: np.ndarray
             ) -> np.ndarray:
    """``scene`` (uint8) with the Lab mean and spread of ``source``'s ``ring`` pixels, measured
    over its own ``hole`` pixels: the scene lit and coloured as the picture around it."""
    if not ring.any() or not hole.any():
        return scene.astype(F)
    lab, reference = to_lab(scene), to_lab(source)
    ours, theirs = lab[hole], reference[ring]
    gain = np.clip(theirs.std(axis=0) / np.maximum(ours.std(axis=0), 1e-3), *SPREAD_RANGE)
    lab = (lab - ours.mean(axis=0)) * gain + theirs.mean(axis=0)
    lab[..., 0] = np.clip(lab[..., 0], 0, 100)
    return from_lab(lab).astype(F)


def inpaint(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    seed: int,
    prompt: str | None = None,
    strength: float = 1.0,
    lighting: str | None = None,
    palette: Sequence[RGB] | None = None,
    texture: float | None = None,
    effect: str | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """A fill for ``mask`` (H, W uint8, 255 repaints) over ``image`` (H, W, 3 uint8): the
    prompt's scene matched to the surroundings, or (no prompt) the surroundings continued;
    mixed with ``image`` by ``strength`` (0: the image, 1: the fill)."""
    cv2 = _cv2()
    height, width = mask.shape
    hole = mask >= 128
    if not hole.any():
        hole = mask > 0
    keep = ~hole
    source = image.astype(F)
    # How far the surroundings reach into the hole: a fraction of its equivalent radius.
    radius = math.sqrt(max(1, int(hole.sum())) / math.pi)
    sigma = max(4.0, radius / 4)
    depth = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 5)  # into the hole
    reach = cv2.distanceTransform(keep.astype(np.uint8), cv2.DIST_L2, 5)  # out of it
    ring = keep & (reach <= max(8.0, sigma))
    if not ring.any():  # everything repaints: the picture's own light is the reference
        keep = ring = np.ones_like(hole)
    surround = _surroundings(source, keep, sigma)
    rng = np.random.default_rng(seed)
    detail = source - _blur(source, 2.0)
    grain = float(detail[ring].std()) if ring.any() else 4.0
    noise = rng.normal(0, grain, (height, width, 1)).astype(F)
    continued = surround + cv2.GaussianBlur(noise, (0, 0), GRAIN_SIGMA).reshape(height, width, 1)
    if prompt:
        fill = _matched(_framed_scene(prompt, image, hole, sigma, seed, lighting, palette,
                                      texture, progress), image, ring, hole)
        # Near the edge the surroundings win (their light and colour continue over the seam);
        # deep inside, the scene: its own detail, lit as the picture around it.
        near = np.exp(-depth / sigma)[..., None]
        fill = fill + np.exp(-depth / (2 * sigma))[..., None] * (surround - _blur(fill, sigma))
        fill = near * continued + (1 - near) * fill
    else:
        fill = continued
    pixels = np.clip(fill + 0.5, 0, 255).astype(np.uint8)
    if effect is not None:
        pixels = apply_effect(pixels, effect, seed=seed, texture=0.5 if texture is None
                              else texture, palette=palette, progress=_part(progress, 8, 9))
    mixed = source * (1 - strength) + pixels.astype(F) * strength
    out = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
    if progress is not None:
        progress(10, 10, out)
    return out


def _framed_scene(prompt: str, image: np.ndarray, hole: np.ndarray, margin: float, seed: int,
                  lighting: str | None, palette: Sequence[RGB] | None, texture: float | None,
                  progress: Progress | None) -> np.ndarray:
    """The prompt's scene drawn to frame the hole (its bounding box grown by ``margin``), so
    what the prompt names lands in the masked area; the rest of the picture is the image.
    An outpaint's added sides frame the whole canvas, so its horizon continues."""
    height, width = hole.shape
    rows, cols = np.flatnonzero(hole.any(axis=1)), np.flatnonzero(hole.any(axis=0))
    grow = int(margin)
    top, bottom = max(0, rows[0] - grow), min(height, rows[-1] + 1 + grow)
    left, right = max(0, cols[0] - grow), min(width, cols[-1] + 1 + grow)
    scene = image.copy()
    scene[top:bottom, left:right] = render_scene(
        prompt, width=right - left, height=bottom - top, seed=seed, lighting=lighting,
        palette=palette, texture=0.5 if texture is None else texture,
        progress=_part(progress, 0, 8))
    return scene


def _part(progress: Progress | None, start: int, stop: int) -> Progress | None:
    if progress is None:
        return None

    def forward(step: int, total: int, preview: np.ndarray | None) -> None:
        progress(start + round(step * (stop - start) / max(total, 1)), 10, preview)

    return forward
