"""Abstract fractals: escape-time sets, fractal flames, spirals, galaxies, nebulae.

Each generator fills a float32 (H, W, 3) canvas coloured from a (k, 3) colour ramp. Line
fractals (Koch snowflake, fractal tree, dragon curve) live in :mod:`.curves`.
"""

from __future__ import annotations

import numpy as np

from fractal.engine.scene.frame import Frame
from fractal.engine.scene.noise import fbm2d
from fractal.engine.scene.palette import ramp

F = np.float32

MANDELBROT_VIEWS = (
    (-0.6, 0.0, 3.2),
    (-0.7453, 0.1127, 0.012),
    (-0.745, 0.11, 0.06),
    (0.2825, 0.0105, 0.025),
    (-1.2507, 0.0201, 0.006),
    (-0.1011, 0.9563, 0.02),
)
JULIA_CONSTANTS = (
    complex(-0.8, 0.156),
    complex(0.285, 0.01),
    complex(-0.4, 0.6),
    complex(-0.70176, -0.3842),
    complex(0.355, 0.355),
    complex(-0.835, -0.2321),
)
SHIP_VIEWS = ((-0.45, -0.5, 3.6), (-1.762, -0.03, 0.09), (-1.755, -0.035, 0.045))


def _plane(frame: Frame, cx: float, cy: float, span: float, y0: int, y1: int) -> np.ndarray:
    w, h = frame.width, frame.height
    xs = cx + (np.arange(w, dtype=np.float64) + 0.5 - w / 2) * span / w
    ys = cy + (np.arange(y0, y1, dtype=np.float64) + 0.5 - h / 2) * span / w
    return (xs[None, :] + 1j * ys[:, None]).astype(np.complex128)


def _escape(z: np.ndarray, c: np.ndarray, kind: str, max_iter: int) -> np.ndarray:
    """Smooth escape counts (NaN = never escaped); only live points are iterated."""
    out = np.full(z.shape, np.nan, dtype=np.float64)
    flat_z, flat_c = z.ravel().copy(), np.broadcast_to(c, z.shape).ravel().copy()
    idx = np.arange(flat_z.size)
    result = out.ravel()
    for n in range(max_iter):
        if kind == "burning ship":
            flat_z = np.abs(flat_z.real) + 1j * np.abs(flat_z.imag)
        flat_z = flat_z * flat_z + flat_c
        mag = flat_z.real * flat_z.real + flat_z.imag * flat_z.imag
        done = mag > 256.0
        if done.any():
            result[idx[done]] = n + 1 - np.log2(np.log2(mag[done]) / 2)
            keep = ~done
            idx, flat_z, flat_c = idx[keep], flat_z[keep], flat_c[keep]
            if idx.size == 0:
                break
    return out


def escape_time(frame: Frame, kind: str, colours: np.ndarray) -> np.ndarray:
    """Mandelbrot, Julia or Burning Ship with smooth colouring, in bands of rows."""
    rng = frame.rng("escape", kind)
    h, w = frame.height, frame.width
    if kind == "julia":
        c0 = JULIA_CONSTANTS[int(rng.integers(len(JULIA_CONSTANTS)))]
        c0 += complex(rng.normal(0, 0.004), rng.normal(0, 0.004))
        cx, cy, span = rng.normal(0, 0.05), rng.normal(0, 0.05), 3.0 / (1 + 2 * rng.random())
    else:
        views = MANDELBROT_VIEWS if kind == "mandelbrot" else SHIP_VIEWS
        cx, cy, span = views[int(rng.integers(len(views)))]
        cx += rng.normal(0, span * 0.02)
        cy += rng.normal(0, span * 0.02)
    max_iter = int(90 + 260 * frame.texture + 40 * np.log10(3.2 / span + 1))
    frequency = 0.06 + 0.1 * rng.random()
    phase = rng.random()
    canvas = np.empty((h, w, 3), F)
    band = max(1, 600_000 // w)
    inside = colours[0] * F(0.6)
    for y0 in range(0, h, band):
        y1 = min(h, y0 + band)
        grid = _plane(frame, cx, cy, span, y0, y1)
        if kind == "julia":
            counts = _escape(grid, np.complex128(c0), kind, max_iter)
        else:
            counts = _escape(np.zeros_like(grid), grid, kind, max_iter)
        escaped = ~np.isnan(counts)
        t = np.sqrt(np.nan_to_num(counts, nan=0.0) + 1.0) * frequency * 3 + phase
        rgb = ramp(t.astype(F), colours[1:], cyclic=True)
        rgb[~escaped] = inside
        canvas[y0:y1] = rgb
    return canvas


VARIATIONS = ("linear", "sinusoidal", "spherical", "swirl", "horseshoe", "polar")


def _variation(name: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r2 = x * x + y * y + 1e-9
    if name == "sinusoidal":
        # A little of the linear map: plain sin piles points onto the ±1 box (a hard square).
        return np.sin(x) + 0.3 * x, np.sin(y) + 0.3 * y
    if name == "spherical":
        return x / r2, y / r2
    if name == "swirl":
        s, c = np.sin(r2), np.cos(r2)
        return x * s - y * c, x * c + y * s
    if name == "horseshoe":
        r = np.sqrt(r2)
        return (x - y) * (x + y) / r, 2 * x * y / r
    if name == "polar":
        return np.arctan2(x, y) / np.pi + 0.3 * x, np.sqrt(r2) - 1  # (softened like sin)
    return x, y


def flame(frame: Frame, colours: np.ndarray) -> np.ndarray:
    """A fractal flame: a random IFS with non-linear variations, log-density tone mapped."""
    rng = frame.rng("flame")
    h, w = frame.height, frame.width
    n_maps = int(rng.integers(3, 6))
    coef = rng.uniform(-1, 1, (n_maps, 6))
    weights = rng.random(n_maps) + 0.2
    weights /= weights.sum()
    var = [VARIATIONS[int(rng.integers(len(VARIATIONS)))] for _ in range(n_maps)]
    tint = rng.random(n_maps)
    points = int(np.clip(h * w // 4, 20_000, 200_000))
    iters = int(np.clip(h * w * (1.5 + 6 * frame.texture) / points, 30, 220))
    x, y, c = rng.uniform(-1, 1, points), rng.uniform(-1, 1, points), rng.random(points)
    fresh = np.zeros(points, np.int64)
    density = np.zeros(h * w, np.float64)
    col_acc = np.zeros((h * w, 3), np.float64)
    bounds = None
    batch_idx: list[np.ndarray] = []
    batch_c: list[np.ndarray] = []
    for it in range(iters + 20):
        pick = rng.choice(n_maps, points, p=weights)
        a, b, cc, d, e, f = (coef[pick, k] for k in range(6))
        nx, ny = a * x + b * y + cc, d * x + e * y + f
        for k in range(n_maps):
            sel = pick == k
            nx[sel], ny[sel] = _variation(var[k], nx[sel], ny[sel])
        bad = ~np.isfinite(nx) | ~np.isfinite(ny) | (np.abs(nx) > 1e4) | (np.abs(ny) > 1e4)
        nx[bad], ny[bad] = rng.normal(0, 0.01, bad.sum()), rng.normal(0, 0.01, bad.sum())
        x, y, c = nx, ny, (c + tint[pick]) * 0.5
        fresh = np.where(bad, 8, np.maximum(fresh - 1, 0))
        if it == 19:
            # Centre on the attractor's median point; frame its bulk with room to fade out.
            qx, qy = np.percentile(x, [3, 50, 97]), np.percentile(y, [3, 50, 97])
            reach_x = max(qx[2] - qx[1], qx[1] - qx[0])
            reach_y = max(qy[2] - qy[1], qy[1] - qy[0]) * w / h
            span = max(reach_x, reach_y, 1e-6) * 2 * 1.12
            bounds = (qx[1], qy[1], span)
        if bounds is None:
            continue
        mx, my, span = bounds
        px = ((x - mx) / span * w + w / 2).astype(np.int64)
        py = ((y - my) / span * w + h / 2).astype(np.int64)
        ok = (px >= 0) & (px < w) & (py >= 0) & (py < h) & (fresh == 0)
        batch_idx.append(py[ok] * w + px[ok])
        batch_c.append(c[ok].astype(F))
        if len(batch_idx) == 12 or it == iters + 19:
            flat, shade = np.concatenate(batch_idx), np.concatenate(batch_c)
            batch_idx, batch_c = [], []
            density += np.bincount(flat, minlength=h * w)
            rgb = ramp(shade, colours[1:])
            for ch in range(3):
                col_acc[:, ch] += np.bincount(flat, weights=rgb[:, ch], minlength=h * w)
    hit = density > 0
    mean_col = np.zeros_like(col_acc)
    mean_col[hit] = col_acc[hit] / density[hit, None]
    scale = np.log1p(density) / max(np.log1p(np.percentile(density[hit], 99.7)), 1e-6)
    alpha = np.clip(scale, 0, 1) ** (1 / 2.2)
    # A soft superellipse window: the flame thins out well inside the frame, no crop edge.
    u = (np.arange(w) + 0.5) / w * 2 - 1
    v = (np.arange(h) + 0.5) / h * 2 - 1
    r = (np.abs(u)[None, :] ** 4 + np.abs(v)[:, None] ** 4) ** 0.25
    window = np.clip((0.97 - r) / 0.3, 0, 1)
    alpha = alpha * (window * window * (3 - 2 * window)).ravel()
    bg = colours[0] * F(0.5)
    out = bg + (mean_col * 1.15 - bg) * alpha[:, None]
    return out.reshape(h, w, 3).astype(F)


def spiral(frame: Frame, colours: np.ndarray) -> np.ndarray:
    """A logarithmic spiral field with fBm domain warping (a vortex / phyllotaxis feel)."""
    rng = frame.rng("spiral")
    h, w = frame.height, frame.width
    ys, xs = frame.grid()
    warp = fbm2d(rng, ys, xs, freq=3, octaves=frame.octaves(3), gain=frame.roughness)
    X = (xs[None, :] - 0.5 + 0.05 * rng.normal()).astype(F)
    Y = (ys[:, None] - h / w / 2 + 0.05 * rng.normal()).astype(F)
    r = np.sqrt(X * X + Y * Y) + F(1e-4)
    theta = np.arctan2(Y, X)
    arms = int(rng.integers(2, 8))
    pitch = F(4 + 8 * rng.random())
    v = np.sin(arms * theta + pitch * np.log(r) + warp * F(0.8))
    t = (v * F(0.35) + F(0.5) + r * F(0.6)) % F(1)
    rgb = ramp(t, colours[1:], cyclic=True)
    rgb *= (F(0.35) + F(0.65) * np.clip(F(1.4) - r * F(1.6), 0, 1))[..., None]
    return rgb


def galaxy(frame: Frame, colours: np.ndarray, *, nebula: bool) -> np.ndarray:
    """A spiral galaxy (log-spiral arms, core glow, dust) or a nebula (warped fBm gas)."""
    rng = frame.rng("galaxy", str(nebula))
    h, w = frame.height, frame.width
    ys, xs = frame.grid()
    gas = fbm2d(rng, ys, xs, freq=2.5, octaves=frame.octaves(4), gain=frame.roughness)
    fine = fbm2d(rng, ys, xs, freq=9, octaves=frame.octaves(3), gain=frame.roughness)
    if nebula:
        density = np.clip(F(0.45) + F(0.35) * gas + F(0.15) * fine * gas, 0, 1)
        t = np.clip(F(0.5) + F(0.4) * fine, 0, 1)
        rgb = ramp(t, colours[1:]) * (density ** F(1.5))[..., None]
    else:
        tilt = F(0.45 + 0.4 * rng.random())
        X = (xs[None, :] - 0.5).astype(F)
        Y = ((ys[:, None] - h / w / 2) / tilt).astype(F)
        rot = rng.random() * np.pi
        Xr = X * F(np.cos(rot)) - Y * F(np.sin(rot))
        Yr = X * F(np.sin(rot)) + Y * F(np.cos(rot))
        r = np.sqrt(Xr * Xr + Yr * Yr) + F(1e-4)
        theta = np.arctan2(Yr, Xr)
        arms = int(rng.integers(2, 5))
        wind = np.cos(arms * theta - F(5.5) * np.log(r) + gas * F(0.7))
        disc = np.exp(-r / F(0.16))
        density = (
            disc * (F(0.35) + F(0.65) * np.clip(wind, 0, 1) ** F(2)) * (F(0.8) + F(0.3) * fine)
        )
        core = np.exp(-((r / F(0.05)) ** 2))
        t = np.clip(F(0.3) + r * F(2.5) + F(0.15) * fine, 0, 1)
        rgb = ramp(t, colours[1:]) * density[..., None] * F(1.8)
        rgb += core[..., None] * np.array((1.0, 0.92, 0.75), F)
    n = int(h * w * 0.002)
    sy, sx = rng.integers(0, h, n), rng.integers(0, w, n)
    rgb[sy, sx] = np.maximum(rgb[sy, sx], (rng.random(n).astype(F) ** 2)[:, None])
    return np.clip(rgb + colours[0] * F(0.3), 0, 1)
