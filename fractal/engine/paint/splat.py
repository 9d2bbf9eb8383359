"""Vectorised splatting of many oriented brush dabs onto a canvas, painter's-order correct.

Every dab gets a unique integer depth; a z-buffer (``np.maximum.at``) decides which dab owns
each pixel, so thousands of overlapping dabs are drawn in one numpy pass with the same result
as drawing them one by one in depth order. Dabs come in chunks to bound memory.
"""

from __future__ import annotations

import numpy as np

N_BINS = 16  # orientation bins over [0, pi)
_MAX_ENTRIES = 1 << 22  # dab-pixel entries per chunk (~4M → ~100 MB of temporaries)


class Stamp:
    """A round dab of integer radius with per-orientation bristle shading and a height profile."""

    def __init__(self, radius: float, width: int, rng: np.random.Generator, bristle: float):
        r = max(1, round(radius))
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
        rho = np.sqrt(xx * xx + yy * yy) / (r + 0.5)
        keep = rho <= 1.0
        self.radius = r
        self.dy = yy[keep].astype(np.int32)
        self.dx = xx[keep].astype(np.int32)
        self.offsets = (self.dy * width + self.dx).astype(np.int64)
        rho = rho[keep]
        # Bristle profile: 1-D noise across the stroke, a few pixels per bristle.
        n = 4 * r + 9
        profile = rng.standard_normal(n).astype(np.float32)
        profile = np.convolve(profile, np.ones(2, np.float32) / 2, mode="same")
        profile /= max(float(np.abs(profile).max()), 1e-6)
        shades = np.empty((N_BINS, rho.size), np.float32)
        heights = np.empty((N_BINS, rho.size), np.float32)
        for b in range(N_BINS):
            theta = (b + 0.5) * np.pi / N_BINS
            across = -self.dx * np.sin(theta) + self.dy * np.cos(theta)  # -r..r
            pos = np.clip(np.rint((across + r) * 2.0).astype(np.int64), 0, n - 1)
            streak = profile[pos]
            # Shading and height depend on the across-stroke coordinate only, so consecutive
            # dabs of one stroke merge into a continuous ribbon with bristle streaks.
            u = np.clip(np.abs(across) / (r + 0.5), 0.0, 1.0)
            ridge = np.sqrt(1.0 - u * u)
            shades[b] = bristle * streak - 0.05 * u**4
            heights[b] = 0.5 * ridge + 0.5 * (0.5 + 0.5 * streak) * ridge
        self.shades = shades
        self.heights = heights

    @property
    def size(self) -> int:
        return int(self.offsets.size)


class Canvas:
    """A padded float canvas with colour, height and depth buffers."""

    def __init__(self, base: np.ndarray, pad: int):
        h, w = base.shape[:2]
        self.h, self.w, self.pad = h, w, pad
        self.ph, self.pw = h + 2 * pad, w + 2 * pad
        padded = np.pad(base.astype(np.float32), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        self.rgb = np.ascontiguousarray(padded).reshape(-1, 3)
        self.height = np.zeros(self.ph * self.pw, np.float32)
        self.zbuf = np.full(self.ph * self.pw, -1, np.int64)
        self.next_z = 0

    def view(self) -> np.ndarray:
        """The visible (H, W, 3) float canvas (a copy)."""
        img = self.rgb.reshape(self.ph, self.pw, 3)
        p = self.pad
        return img[p : p + self.h, p : p + self.w].copy()

    def heights(self) -> np.ndarray:
        img = self.height.reshape(self.ph, self.pw)
        p = self.pad
        return img[p : p + self.h, p : p + self.w].copy()

    def draw(
        self,
        stamp: Stamp,
        ys: np.ndarray,
        xs: np.ndarray,
        colours: np.ndarray,
        bins: np.ndarray,
    ) -> None:
        """Draw dabs in the given order (later dabs cover earlier ones).

        ``ys``/``xs`` are pixel centres (float ok), ``colours`` (N, 3) in 0..1, ``bins`` the
        orientation bin of each dab.
        """
        n = ys.size
        if n == 0:
            return
        p = self.pad
        cy = np.clip(np.rint(ys).astype(np.int64) + p, 0, self.ph - 1)
        cx = np.clip(np.rint(xs).astype(np.int64) + p, 0, self.pw - 1)
        # Keep stamps inside the padded area (pad >= radius is guaranteed by the caller).
        centres = cy * self.pw + cx
        z = self.next_z + np.arange(n, dtype=np.int64)
        self.next_z += n
        per = max(1, _MAX_ENTRIES // stamp.size)
        for s in range(0, n, per):
            sl = slice(s, s + per)
            idx = (centres[sl, None] + stamp.offsets[None, :]).ravel()
            zz = np.repeat(z[sl], stamp.size)
            np.maximum.at(self.zbuf, idx, zz)
            win = self.zbuf[idx] == zz
            widx = idx[win]
            b = bins[sl]
            shade = stamp.shades[b].ravel()[win]
            col = np.repeat(colours[sl], stamp.size, axis=0)[win]
            col *= (1.0 + shade)[:, None]
            self.rgb[widx] = col
            self.height[widx] = stamp.heights[b].ravel()[win]


def angle_bins(angle: np.ndarray) -> np.ndarray:
    """Map angles (radians) to orientation bins over [0, pi)."""
    a = np.mod(angle, np.pi)
    return np.minimum((a * (N_BINS / np.pi)).astype(np.int64), N_BINS - 1)
