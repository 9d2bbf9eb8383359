"""Low poly: the picture as flat-shaded triangles, denser where it has detail."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import Delaunay

from fractal.engine.paint.common import Progress, blur, luminance, report, to_float

__all__ = ["lowpoly"]


def _points(rgb: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    lum = blur(luminance(to_float(rgb)), 1.5)
    detail = np.hypot(ndimage.sobel(lum, axis=0), ndimage.sobel(lum, axis=1)).ravel()
    weights = detail + detail.mean() * 0.3 + 1e-6  # some points in flat areas too
    weights /= weights.sum()
    chosen = rng.choice(h * w, size=count, replace=False, p=weights)
    points = np.column_stack([chosen % w, chosen // w]).astype(np.float64)
    border = [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)]
    for t in np.linspace(0, 1, 9)[1:-1]:
        border += [(t * (w - 1), 0), (t * (w - 1), h - 1), (0, t * (h - 1)), (w - 1, t * (h - 1))]
    return np.vstack([points, np.asarray(border)])


def lowpoly(rgb: np.ndarray, *, seed: int, texture: float,
            progress: Progress | None = None) -> np.ndarray:
    """Triangles coloured by the picture under them; more triangles at higher texture."""
    h, w = rgb.shape[:2]
    rng = np.random.default_rng(seed)
    count = min(h * w // 4, int(300 + 2700 * texture))
    points = _points(rgb, count, rng)
    triangles = Delaunay(points).simplices
    report(progress, 1, 2, None)
    corners = points[triangles]  # (T, 3, 2)
    centroids = corners.mean(axis=1)
    # A triangle's colour: the mean of the picture at its centroid and its corners' midpoints.
    samples = np.concatenate([centroids[:, None], (corners + centroids[:, None]) / 2], axis=1)
    xs = np.clip(samples[..., 0].round().astype(np.intp), 0, w - 1)
    ys = np.clip(samples[..., 1].round().astype(np.intp), 0, h - 1)
    colours = rgb[ys, xs].astype(np.float32).mean(axis=1).round().astype(np.uint8)
    canvas = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(canvas)
    for triangle, colour in zip(corners, colours, strict=True):
        draw.polygon([tuple(p) for p in triangle], fill=tuple(int(c) for c in colour))
    out = np.asarray(canvas)
    report(progress, 2, 2, out)
    return out
