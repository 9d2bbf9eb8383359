"""Water: mirrored reflections with fBm ripples, sun glitter, shorelines, shallows, rivers."""

from __future__ import annotations

import numpy as np

from fractal.engine.scene.frame import Frame
from fractal.engine.scene.noise import fbm1d, fbm2d

F = np.float32

DEEP = {
    "lake": (0.05, 0.13, 0.17),
    "sea": (0.02, 0.17, 0.36),
    "tropical": (0.02, 0.32, 0.52),
    "river": (0.06, 0.15, 0.18),
}
TURQUOISE = np.array((0.10, 0.78, 0.76), F)


def _perspective(frame: Frame, y0: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row below the horizon: distance-from-viewer coordinate v, and nearness 0..1."""
    dist = (np.arange(y0, frame.height, dtype=np.float64) - frame.horizon + 0.5) / frame.width
    v = 0.08 / (dist + 0.01)
    near = np.clip(dist / max(dist.max(), 1e-6), 0, 1).astype(F)
    return v, near


def draw_water(frame: Frame, kind: str) -> None:
    """A lake or sea filling everything below the horizon, reflecting what is above it."""
    h, w, hz = frame.height, frame.width, frame.horizon
    if hz >= h:
        return
    light = frame.light
    _, xs = frame.grid()
    v, near = _perspective(frame, hz)
    rng = frame.rng("water", kind)
    calm = kind == "lake"
    waves = fbm2d(
        rng,
        v * (1.0 if calm else 1.6),
        xs * 4,
        freq=3.0,
        octaves=frame.octaves(3),
        gain=frame.roughness,
        stretch=2.5,
    )
    ripples = fbm2d(rng, v * 6, xs * 16, freq=3.0, octaves=frame.octaves(2), stretch=5.0)
    # Ripples jitter the mirrored rows (vertical streaks) and shift them slightly sideways.
    amp = (0.0015 if calm else 0.004) + (0.004 if calm else 0.012) * near
    dx = (waves * (amp * w)[:, None]).astype(np.int32)
    dy = (ripples * (amp * w * 1.5)[:, None]).astype(np.int32)
    rows = np.arange(hz, h)
    src_y = np.clip(2 * hz - rows[:, None] - 1 + dy, 0, hz - 1)
    cols = np.clip(np.arange(w)[None, :] + dx, 0, w - 1)
    reflection = frame.canvas[src_y, cols]
    fresnel = (0.7 if calm else 0.45) * np.exp(-near * 1.6) + (0.22 if calm else 0.12)
    deep = np.array(DEEP[kind], F) * F(0.4 + 0.8 * light.ambient)
    if kind == "tropical":
        shallow = TURQUOISE * F(0.35 + 0.7 * light.ambient)
        deep = deep + (shallow - deep) * (near ** F(0.6))[:, None, None]
        fresnel = fresnel * F(0.55)
    colour = deep + (reflection * F(0.9) - deep) * fresnel[:, None, None]
    colour *= (F(1.0) + F(0.05 if calm else 0.1) * waves)[..., None]
    crest = np.clip((ripples - F(1.4)) * F(2), 0, 1) * np.clip(near * 3, 0, 1)[:, None]
    colour += crest[..., None] * np.array(light.horizon, F) * F(0.08 if calm else 0.3)
    if light.sun_visible or light.moon:
        sx = frame.sun[0]
        spread = F(0.012 * w) + near * F(0.06 * w)
        col = np.arange(w, dtype=F)[None, :]
        path = np.exp(-(((col - F(sx)) / spread[:, None]) ** 2))
        sparkle = np.clip((ripples - F(0.3)) * F(1.5), 0, 1) * path
        tone = np.array(light.sun, F) * F(0.9 if light.sun_elevation < 0.3 else 0.45)
        colour += sparkle[..., None] * tone
    frame.canvas[hz:] = colour
    _shoreline(frame, kind)


def _shoreline(frame: Frame, kind: str) -> None:
    """A thin band where the land meets the water: a dark wet edge and a pale sand/foam line."""
    hz, w = frame.horizon, frame.width
    band = max(2, int(frame.height * 0.006))
    _, xs = frame.grid()
    wobble = 0.5 + 0.5 * fbm1d(frame.rng("shore"), xs, freq=12, octaves=frame.octaves(3))
    thick = (wobble * band + 1).astype(F)
    rows = np.arange(band * 2, dtype=F)[:, None]
    dark = np.clip(thick[None, :] - rows, 0, 1) * F(0.45)
    y1 = min(frame.height, hz + band * 2)
    frame.canvas[hz:y1] *= (F(1) - dark[: y1 - hz])[..., None]
    sand = (np.abs(rows - thick[None, :]) < 1.0) * F(0.35 if kind != "lake" else 0.2)
    frame.canvas[hz:y1] += sand[: y1 - hz, :, None] * np.array((0.9, 0.85, 0.7), F)
    frame.canvas[max(hz - 1, 0)] *= F(0.7)
    del w


def draw_shallows(frame: Frame, x0: float, x1: float, y: int) -> None:
    """A turquoise lagoon with caustics around an island standing on the water at row ``y``."""
    h, w = frame.height, frame.width
    y = max(frame.horizon, min(y, h - 1))
    depth = int(min(h - y, 0.12 * h))
    if depth <= 2:
        return
    cx, rx = (x0 + x1) / 2 * w, (x1 - x0) / 2 * w * 1.25
    rows = np.arange(depth, dtype=F)[:, None]
    cols = np.arange(w, dtype=F)[None, :]
    e = ((cols - F(cx)) / F(rx)) ** 2 + (rows / F(depth * 0.8)) ** 2
    mask = np.clip((F(1) - e) * F(2.5), 0, 1)
    ys, xs = frame.grid()
    caustic = np.abs(
        fbm2d(
            frame.rng("caustics"), ys[y : y + depth] * 3, xs * 2, freq=12, octaves=frame.octaves(2)
        )
    )
    glow = np.clip(F(1) - caustic * F(1.5), 0, 1) ** 3 * F(0.25)
    colour = TURQUOISE * F(0.45 + 0.75 * frame.light.ambient) + glow[..., None]
    colour = colour + np.array((0.2, 0.18, 0.1), F) * (F(1) - np.clip(e, 0, 1))[..., None]
    frame.blend(y, colour, mask * F(0.85))


def draw_river(frame: Frame) -> None:
    """A meandering river from the horizon to the bottom, widening with perspective."""
    h, w, hz = frame.height, frame.width, frame.horizon
    if hz >= h - 2:
        return
    v, near = _perspective(frame, hz)
    rng = frame.rng("river")
    centre = w * (0.5 + 0.22 * fbm1d(rng, v / 8, freq=1.5, octaves=3)) * (1 - near * 0.3)
    centre += near * w * 0.15
    half = w * (0.004 + 0.16 * near ** F(1.4))
    cols = np.arange(w, dtype=F)[None, :]
    mask = np.clip(half[:, None] - np.abs(cols - centre[:, None]) + 0.5, 0, 1)
    src = np.clip(2 * hz - np.arange(hz, h) - 1, 0, hz - 1)
    sky = frame.canvas[src]
    deep = np.array(DEEP["river"], F) * F(0.4 + 0.8 * frame.light.ambient)
    colour = deep + (sky * F(0.9) - deep) * F(0.6)
    frame.blend(hz, colour, mask)


def draw_waterfall(frame: Frame, top: np.ndarray, cx: float) -> None:
    """White water falling in streaks from the cliff's lip ``top[cx]`` down to the horizon."""
    w, hz = frame.width, frame.horizon
    x = int(np.clip(cx, 0, w - 1))
    y0 = int(top[x]) - 1
    if y0 >= hz - 2:
        return
    rng = frame.rng("waterfall")
    half = max(2.0, 0.028 * w)
    ys, xs = frame.grid()
    x0, x1 = max(0, int(cx - 2 * half)), min(w, int(cx + 2 * half) + 1)
    # Vertically stretched noise: the streaks of fast-falling water.
    streak = fbm2d(rng, ys[y0:hz], xs[x0:x1], freq=70, octaves=frame.octaves(2), stretch=0.04)
    edge = fbm2d(rng, ys[y0:hz], xs[x0:x1], freq=8, octaves=3)
    fall = (np.arange(y0, hz, dtype=F)[:, None] - F(y0)) / F(max(hz - y0, 1))
    width = F(half) * (F(0.85) + F(0.35) * fall + F(0.08) * edge)
    cols = np.arange(x0, x1, dtype=F)[None, :]
    body = np.clip(width - np.abs(cols - F(cx)), 0, 1)
    alpha = body * np.clip(F(0.7) + F(0.35) * streak, 0, 1)
    light = frame.light
    tone = np.array(light.sun, F) * F(0.35 + 0.6 * light.ambient) + np.array(light.zenith, F) * F(
        0.2
    )
    side = 1.0 if frame.sun[0] >= cx else -1.0
    across = (cols - F(cx)) / width
    shade = F(0.88) + F(0.1 * side) * np.clip(across, -1, 1) + F(0.12) * streak
    shade += F(0.25) * np.exp(-fall / F(0.04))  # the bright curl of water over the lip
    colour = np.array((0.9, 0.95, 1.0), F) * tone * np.clip(shade, 0.5, 1.3)[..., None]
    patch = frame.canvas[y0:hz, x0:x1]
    patch += (colour - patch) * alpha[..., None]


def draw_plunge(frame: Frame, cx: float) -> None:
    """Foam on the pool at the waterfall's foot and mist rising from it."""
    h, w, hz = frame.height, frame.width, frame.horizon
    half = max(2.0, 0.028 * w)
    y0, y1 = max(0, int(hz - 0.16 * h)), min(h, int(hz + 0.1 * h))
    if y1 <= y0:
        return
    rng = frame.rng("plunge")
    ys, xs = frame.grid()
    n = fbm2d(rng, ys[y0:y1], xs, freq=14, octaves=frame.octaves(3), gain=frame.roughness)
    rows = np.arange(y0, y1, dtype=F)[:, None]
    cols = np.arange(w, dtype=F)[None, :]
    dx = (cols - F(cx)) / F(half)
    light = frame.light
    white = np.array((0.93, 0.96, 1.0), F) * F(0.45 + 0.55 * light.ambient)
    # Foam: a churning white patch on the water, spreading out toward the viewer.
    dyf = (rows - F(hz)) / F(0.035 * h)
    foam = np.exp(-((dx / F(2.2)) ** 2) - np.where(dyf < 0, dyf * dyf * 9, dyf * dyf))
    foam = np.clip(foam * (F(1.5) + F(0.7) * n) - F(0.2), 0, 1) * (rows >= F(hz - 2))
    # Mist: a soft cloud billowing up around the fall's foot.
    dym = (rows - F(hz)) / F(0.09 * h)
    mist = np.exp(-((dx / F(3.5)) ** 2) - dym * dym) * np.clip(F(0.75) + F(0.4) * n, 0, 1)
    frame.blend(y0, np.broadcast_to(white, (*foam.shape, 3)), np.clip(foam, 0, 0.95))
    frame.blend(y0, np.broadcast_to(white * F(0.95), (*mist.shape, 3)), mist * F(0.7))


def draw_beach(frame: Frame) -> None:
    """A sandy foreground with wet sand and a line of foam where the waves reach."""
    h, _w = frame.height, frame.width
    _, xs = frame.grid()
    rng = frame.rng("beach")
    edge = h * (
        0.86
        - 0.06 * fbm1d(rng, xs, freq=2.5, octaves=frame.octaves(3))
        - 0.05 * xs * (1 if rng.random() < 0.5 else -1)
    )
    y0 = max(frame.horizon, int(edge.min()) - 2)
    rows = np.arange(y0, h, dtype=F)[:, None]
    below = rows - edge[None, :]
    ys, _ = frame.grid()
    tex = fbm2d(rng, ys[y0:h] * 4, xs * 4, freq=8, octaves=frame.octaves(3))
    sand = np.array((0.86, 0.76, 0.56), F) * F(0.5 + 0.55 * frame.light.ambient)
    colour = sand * (F(0.92) + F(0.06) * tex)[..., None]
    wet = np.exp(-np.clip(below, 0, None) / F(0.015 * h))[..., None]
    colour = colour * (F(1) - F(0.35) * wet)
    foam = np.exp(-((below / F(0.004 * h + 1)) ** 2)) * F(0.9)
    frame.blend(y0, colour, np.clip(below + 0.5, 0, 1))
    frame.blend(y0, np.broadcast_to(np.array((0.95, 0.97, 0.97), F), colour.shape), foam)
