"""Impressionist painting: Hertzmann (1998) curved brush strokes of multiple sizes, vectorised.

Coarse-to-fine: for each brush radius R the source is blurred (sigma ~ R) into a reference,
a grid of R-sized cells is compared with the canvas, and wherever the area error exceeds a
threshold a stroke starts at the cell's worst pixel. Strokes follow the edge tangent
(perpendicular to the image gradient) for several control points, stopping when the colour
under the brush departs from the stroke's colour. All strokes of a layer are traced together
in numpy and splatted in a random order with :mod:`splat`. A final impasto pass lights the
strokes' height field.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fractal.engine.paint.common import (
    Progress,
    blur,
    luminance,
    report,
    scale_of,
    structure_angle,
    to_float,
    to_uint8,
    value_noise,
)
from fractal.engine.paint.splat import Canvas, Stamp, angle_bins


def _radii(scale: float, texture: float) -> list[float]:
    """Brush radii, coarse to fine: texture 0 paints in a few broad strokes, 1 in fine ones."""
    r0 = scale * (0.040 - 0.020 * texture)
    r_min = max(1.2, scale * (0.012 - 0.009 * texture))
    radii = [r0]
    while radii[-1] / 2.0 >= r_min:
        radii.append(radii[-1] / 2.0)
    return radii


def _seeds(
    diff: np.ndarray, cell: int, threshold: float, rng: np.random.Generator, full: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Stroke starts: the worst pixel of each grid cell whose mean error exceeds ``threshold``."""
    h, w = diff.shape
    ny, nx = -(-h // cell), -(-w // cell)
    padded = np.zeros((ny * cell, nx * cell), np.float32)
    padded[:h, :w] = diff
    blocks = padded.reshape(ny, cell, nx, cell).transpose(0, 2, 1, 3).reshape(ny, nx, -1)
    if full:
        # The first layer covers everything; start at a random point of each cell.
        pick = rng.integers(0, cell * cell, size=(ny, nx))
        sel = np.ones((ny, nx), bool)
    else:
        pick = blocks.argmax(axis=2)
        sel = blocks.mean(axis=2) > threshold
    gy, gx = np.nonzero(sel)
    k = pick[gy, gx]
    ys = gy * cell + k // cell
    xs = gx * cell + k % cell
    inside = (ys < h) & (xs < w)
    return ys[inside].astype(np.float32), xs[inside].astype(np.float32)


def _trace(
    ys: np.ndarray,
    xs: np.ndarray,
    colours: np.ndarray,
    tangent: np.ndarray,
    ref: np.ndarray,
    radius: float,
    max_len: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Trace all strokes at once; returns dab ys, xs, stroke index and angle, in stroke order."""
    h, w = tangent.shape
    n = ys.size
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(np.float32)
    py, px = ys.copy(), xs.copy()
    prev_dx = np.zeros(n, np.float32)
    prev_dy = np.zeros(n, np.float32)
    alive = np.ones(n, bool)
    out_y, out_x, out_i, out_a, out_k = [], [], [], [], []
    ids = np.arange(n)
    for k in range(max_len):
        iy = np.clip(py.astype(np.int64), 0, h - 1)
        ix = np.clip(px.astype(np.int64), 0, w - 1)
        if k >= 2:
            err = np.abs(ref[iy, ix] - colours).sum(axis=1)
            alive &= err < 0.28
        if not alive.any():
            break
        theta = tangent[iy, ix]
        dx, dy = np.cos(theta), np.sin(theta)
        if k == 0:
            dx, dy = dx * sign, dy * sign
        else:
            flip = (dx * prev_dx + dy * prev_dy) < 0
            dx = np.where(flip, -dx, dx)
            dy = np.where(flip, -dy, dy)
            # Curvature filter: keep some of the previous direction for smooth curves.
            dx, dy = 0.7 * dx + 0.3 * prev_dx, 0.7 * dy + 0.3 * prev_dy
            norm = np.sqrt(dx * dx + dy * dy) + 1e-6
            dx, dy = dx / norm, dy / norm
        a = alive
        out_y.append(py[a])
        out_x.append(px[a])
        out_i.append(ids[a])
        out_a.append(np.arctan2(dy, dx)[a])
        out_k.append(np.full(int(a.sum()), k))
        prev_dx, prev_dy = dx.astype(np.float32), dy.astype(np.float32)
        py = np.clip(py + dy * radius, 0, h - 1).astype(np.float32)
        px = np.clip(px + dx * radius, 0, w - 1).astype(np.float32)
    y = np.concatenate(out_y)
    x = np.concatenate(out_x)
    i = np.concatenate(out_i)
    a = np.concatenate(out_a)
    kk = np.concatenate(out_k)
    order = np.lexsort((kk, i))  # stroke by stroke, control points in order
    return y[order], x[order], i[order], a[order]


def impressionist(
    rgb: np.ndarray, *, seed: int, texture: float, progress: Progress | None
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    src = to_float(rgb)
    h, w = src.shape[:2]
    scale = scale_of(src.shape)
    radii = _radii(scale, texture)
    threshold = 0.10 - 0.05 * texture
    max_len = 7
    lum = luminance(src)
    pad = round(radii[0]) + 2
    canvas = Canvas(blur(src, radii[0] * 1.5), pad)
    # Low-coherence regions get a gently varying "hand" direction instead of noisy gradients.
    hand = np.float32(np.pi / 4) + np.float32(0.6) * value_noise((h, w), scale / 6, rng)
    total = len(radii) + 1
    for layer, radius in enumerate(radii):
        ref = blur(src, 0.5 * radius)
        tangent, coherence = structure_angle(lum, max(1.0, radius * 0.5), radius)
        mix = np.clip(coherence * 3.0, 0.0, 1.0)
        # Blend angles as doubled-angle vectors (orientations are mod pi).
        cx = mix * np.cos(2 * tangent) + (1 - mix) * np.cos(2 * hand)
        cy = mix * np.sin(2 * tangent) + (1 - mix) * np.sin(2 * hand)
        tangent = (0.5 * np.arctan2(cy, cx)).astype(np.float32)
        diff = np.sqrt(((canvas.view() - ref) ** 2).sum(axis=2))
        cell = max(1, round(radius))
        ys, xs = _seeds(diff, cell, threshold, rng, full=layer == 0)
        n = ys.size
        order = rng.permutation(n)
        ys, xs = ys[order], xs[order]
        base = ref[ys.astype(np.int64), xs.astype(np.int64)]
        jitter = rng.normal(0.0, 0.07, (n, 1)) + rng.normal(0.0, 0.025, (n, 3))
        colours = np.clip(base * (1.0 + jitter.astype(np.float32)), 0.0, 1.0).astype(np.float32)
        length = max_len if layer < len(radii) - 1 else max(3, max_len - 2)
        dy, dx, sid, ang = _trace(ys, xs, colours, tangent, ref, radius, length, rng)
        stamp = Stamp(radius, canvas.pw, rng, bristle=0.10)
        canvas.draw(stamp, dy, dx, colours[sid], angle_bins(ang))
        report(progress, layer + 1, total, to_uint8(canvas.view()))
    img = canvas.view()
    img = _impasto(img, canvas.heights(), scale)
    out = to_uint8(img)
    report(progress, total, total, out)
    return out


def _impasto(img: np.ndarray, height: np.ndarray, scale: float) -> np.ndarray:
    """Light the stroke height field from the upper left."""
    hgt = blur(height, max(0.6, scale / 1400))
    gy = ndimage.sobel(hgt, axis=0)
    gx = ndimage.sobel(hgt, axis=1)
    light = -(gx * -0.7 + gy * -0.7) * 0.08
    return img * (1.0 + np.clip(light, -0.25, 0.25))[..., None]
