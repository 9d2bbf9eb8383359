"""The sky: gradient, sun or moon with halo, fBm clouds, stars, aurora, rainbow, fog."""

from __future__ import annotations

import numpy as np

from fractal.engine.scene.frame import Frame
from fractal.engine.scene.noise import fbm1d, fbm2d

F = np.float32


def _rows(frame: Frame, stop: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = frame.grid()
    return ys[:stop], xs


def draw_gradient(frame: Frame) -> None:
    """Zenith → horizon gradient, then the sun's halo, over the whole canvas."""
    light, h, w = frame.light, frame.height, frame.width
    hz = max(frame.horizon, 1)
    t = np.clip(np.arange(h, dtype=np.float32) / hz, 0.0, 1.0) ** F(1.6)
    zen, hor = np.array(light.zenith, F), np.array(light.horizon, F)
    column = zen[None, :] * (1 - t[:, None]) + hor[None, :] * t[:, None]
    frame.canvas[:] = column[:, None, :]
    sx, sy = frame.sun
    if light.sun_elevation < -0.3 and not light.moon:
        return
    ys = (np.arange(h, dtype=np.float32) - sy) / w
    xs = (np.arange(w, dtype=np.float32) - sx) / w
    d = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    if light.moon:  # moonlit haze: a soft halo that lights the sky around the moon
        halo = F(0.16) * np.exp(-d / F(0.05)) + F(0.09) * np.exp(-d / F(0.3))
        frame.canvas += halo[..., None] * np.array((0.55, 0.62, 0.8), F)
        return
    low = float(np.clip(1.0 - light.sun_elevation * 1.5, 0.15, 1.0))
    g = light.glow
    halo = F(0.55 * low) * np.exp(-d / F(0.07 * g)) + F(0.3 * low) * np.exp(-d / F(0.35 * g))
    if light.sun_elevation < 0:
        halo *= F(0.5)
    # Near the horizon the halo spreads sideways along the band of warm sky.
    band = np.exp(-np.abs(np.arange(h, dtype=np.float32) - hz) / F(0.12 * h))
    halo += F(0.25 * low) * band[:, None] * np.exp(-np.abs(xs)[None, :] / F(0.5 * g))
    frame.canvas += halo[..., None] * np.array(light.sun, F)


def draw_sun(frame: Frame) -> None:
    light = frame.light
    if not light.sun_visible:
        return
    sx, sy = frame.sun
    r = frame.width * (0.028 if light.sun_elevation > 0.2 else 0.036)
    y0, y1 = max(0, int(sy - 2 * r)), min(frame.height, int(sy + 2 * r) + 1)
    x0, x1 = max(0, int(sx - 2 * r)), min(frame.width, int(sx + 2 * r) + 1)
    if y0 >= y1 or x0 >= x1:
        return
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] - sy
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] - sx
    disc = np.clip(r - np.sqrt(xx * xx + yy * yy) + 0.5, 0.0, 1.0)
    core = np.array(light.sun, F) * F(0.35) + F(0.7)
    patch = frame.canvas[y0:y1, x0:x1]
    patch += (core - patch) * disc[..., None]


def draw_moon(frame: Frame) -> None:
    if not frame.light.moon and "moon" not in frame.scene.sky:
        return
    sx, sy = frame.sun
    r = frame.width * 0.032
    y0, y1 = max(0, int(sy - 6 * r)), min(frame.height, int(sy + 6 * r) + 1)
    x0, x1 = max(0, int(sx - 6 * r)), min(frame.width, int(sx + 6 * r) + 1)
    if y0 >= y1 or x0 >= x1:
        return
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] - sy
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] - sx
    d = np.sqrt(xx * xx + yy * yy)
    disc = np.clip(r - d + 0.5, 0.0, 1.0)
    ys, xs = frame.grid()
    maria = fbm2d(frame.rng("moon"), ys[y0:y1] * 8, xs[x0:x1] * 8, freq=1.5, octaves=4)
    shade = np.clip(0.9 - 0.12 * maria, 0.6, 1.0)
    moon = np.array((0.93, 0.92, 0.85), F) * shade[..., None]
    patch = frame.canvas[y0:y1, x0:x1]
    patch += (np.exp(-d / F(1.4 * r)) * F(0.25))[..., None] * np.array((0.7, 0.75, 0.9), F)
    patch += (moon - patch) * disc[..., None]


def draw_stars(frame: Frame) -> None:
    amount = frame.light.stars + (0.8 if "stars" in frame.scene.sky else 0.0)
    if amount <= 0:
        return
    rng = frame.rng("stars")
    hz, w = frame.horizon, frame.width
    n = int(hz * w * 0.0012 * min(amount, 1.5))
    ys = rng.integers(0, max(hz, 1), n)
    xs = rng.integers(0, w, n)
    bright = rng.random(n).astype(F) ** 3 * F(0.9) + F(0.1)
    fade = np.clip(1.0 - ys / max(hz, 1), 0.0, 1.0).astype(F) ** F(0.5)
    value = (bright * fade)[:, None] * np.array((0.95, 0.95, 1.0), F)
    canvas = frame.canvas
    canvas[ys, xs] = np.maximum(canvas[ys, xs], value)
    big = bright > 0.75
    if frame.unit > 1.5:
        for dy, dx in ((0, 1), (1, 0), (1, 1)):
            yy, xx = np.minimum(ys[big] + dy, hz - 1), np.minimum(xs[big] + dx, w - 1)
            canvas[yy, xx] = np.maximum(canvas[yy, xx], value[big] * F(0.7))


def draw_clouds(frame: Frame, cover: float) -> None:
    """fBm clouds, squashed toward the horizon, lit from the sun's side."""
    if cover <= 0:
        return
    hz, light = frame.horizon, frame.light
    _ys, xs = _rows(frame, hz)
    height_above = (hz - np.arange(hz, dtype=np.float64)) / frame.width
    v = -np.log(height_above + 0.02) * 0.35
    rng = frame.rng("clouds")
    n = fbm2d(rng, v, xs, freq=2.5, octaves=frame.octaves(4), gain=frame.roughness, stretch=2.2)
    threshold = F(1.3 - 2.2 * cover)
    density = np.clip((n - threshold) * F(1.1), 0.0, 1.0)
    fade = np.clip(height_above / 0.04, 0.0, 1.0).astype(F)
    density *= fade[:, None]
    if frame.light.sun_visible or frame.light.moon:  # keep the sun or moon in a gap
        sx, sy = frame.sun
        dx = (np.arange(frame.width, dtype=F) - F(sx)) / F(frame.width)
        dy = (np.arange(hz, dtype=F) - F(sy)) / F(frame.width)
        density *= F(1) - np.exp(-(dx[None, :] ** 2 + dy[:, None] ** 2) / F(0.004))
    shift = max(1, int(frame.height * 0.008))
    lit = np.clip(density - np.roll(density, shift, axis=0), -1, 1) * F(2.0)
    sun = np.array(light.sun, F)
    bright = sun * F(0.45 + 0.5 * light.ambient) + np.array(light.horizon, F) * F(0.35)
    shadow = np.array(light.zenith, F) * F(0.7) + np.array(light.horizon, F) * F(0.35)
    cloud = shadow + (bright - shadow) * np.clip(0.6 - lit, 0.0, 1.0)[..., None]
    if light.cloud_cover > 0.6:
        cloud = frame.canvas[:hz] * F(0.4) + np.array(light.horizon, F) * F(0.5)
    alpha = np.clip(density * F(1.4), 0.0, 0.95)
    frame.blend(0, cloud, alpha)


def draw_aurora(frame: Frame) -> None:
    hz, w = frame.horizon, frame.width
    rng = frame.rng("aurora")
    _, xs = frame.grid()
    edge = hz * (0.55 + 0.15 * fbm1d(rng, xs, freq=2.0, octaves=3))
    rays = np.clip(0.55 + 0.5 * fbm1d(rng, xs, freq=40.0, octaves=3), 0.0, 1.2)
    rows = np.arange(hz, dtype=np.float32)[:, None]
    above = np.clip(edge[None, :] - rows, 0, None) / F(0.18 * w)
    below = np.clip(rows - edge[None, :], 0, None) / F(0.012 * w)
    glow = np.exp(-above) * np.exp(-below * below) * rays[None, :]
    green, magenta = np.array((0.15, 0.95, 0.45), F), np.array((0.65, 0.2, 0.85), F)
    mix = np.clip(above, 0, 1)[..., None]
    frame.canvas[:hz] += (glow * F(0.8))[..., None] * (green * (1 - mix) + magenta * mix)


def draw_rainbow(frame: Frame) -> None:
    hz, w = frame.horizon, frame.width
    cx = w * (0.35 + 0.3 * frame.rng("rainbow").random())
    radius, band = 0.45 * w, 0.05 * w
    rows = np.arange(hz, dtype=np.float32)[:, None] - F(hz + 0.05 * w)
    cols = np.arange(w, dtype=np.float32)[None, :] - F(cx)
    t = (np.sqrt(rows * rows + cols * cols) - F(radius)) / F(band)
    inside = (t > 0) & (t < 1)
    hue = np.clip(t, 0, 1) * F(0.78)
    rgb = np.clip(np.abs(((hue[..., None] * 6 + np.array((0, 4, 2), F)) % 6) - 3) - 1, 0, 1)
    alpha = np.where(inside, np.sin(np.clip(t, 0, 1) * F(np.pi)) * F(0.3), F(0))
    frame.canvas[:hz] += rgb * alpha[..., None]


def draw_fog(frame: Frame, amount: float) -> None:
    """Banks of mist along the horizon (and a veil over everything)."""
    if amount <= 0:
        return
    h, hz = frame.height, frame.horizon
    ys, xs = frame.grid()
    rng = frame.rng("fog")
    n = fbm2d(rng, ys, xs, freq=2.0, octaves=frame.octaves(3), stretch=3.0)
    rows = np.arange(h, dtype=np.float32)
    profile = np.exp(-np.abs(rows - hz) / F(0.14 * h)) * F(0.8) + F(0.15)
    alpha = np.clip(profile[:, None] * (F(0.75) + F(0.35) * n), 0.0, 0.92) * F(amount)
    colour = np.array(frame.light.haze, F) * F(0.6 + 0.4 * frame.light.ambient)
    frame.blend(0, np.broadcast_to(colour, (*alpha.shape, 3)), alpha)
