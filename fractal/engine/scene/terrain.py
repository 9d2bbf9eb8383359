"""Terrain layers: 1-D fractal silhouettes over x, shaded and hazed by distance.

Every layer is a heightfield ``top[x]`` (the skyline row of that layer in each column), so
mountains cost O(width) to generate. Filling a layer shades each pixel from the skyline's
slope (which side of the peak it is on) and from vertically stretched ridged noise
(gullies and spurs), adds a 2-D fBm rock texture, snow above a noisy snow line, and
atmospheric perspective (haze grows with depth and toward the layer's foot, where valley
mist collects).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fractal.engine.scene.frame import Frame
from fractal.engine.scene.noise import fbm1d, fbm2d, ridged1d

F = np.float32
Colour = tuple[float, float, float]

ROCK: dict[str, Colour] = {
    "mountains": (0.36, 0.35, 0.38),
    "hills": (0.26, 0.42, 0.20),
    "forest": (0.10, 0.24, 0.12),
    "desert": (0.86, 0.64, 0.38),
    "canyon": (0.72, 0.36, 0.20),
    "volcano": (0.22, 0.19, 0.19),
    "island": (0.16, 0.42, 0.16),
    "snow": (0.86, 0.89, 0.95),
}


@dataclass
class Layer:
    """One silhouette: filled from ``top`` (rows, per column) down to row ``base``."""

    kind: str
    top: np.ndarray
    base: int
    depth: float  # 1 = farthest, 0 = nearest
    snow: float = 0.0  # 0 none .. 1 fully snow-covered
    strata: bool = False


def _profile(kind: str, frame: Frame, rng: np.random.Generator, xs: np.ndarray) -> np.ndarray:
    """A 0..1 skyline shape for ``kind``."""
    o = frame.octaves(5)
    if kind == "mountains":
        return ridged1d(
            rng, xs, freq=2.2 + rng.random(), octaves=o + 2, roughness=0.45 + 0.15 * frame.texture
        )
    if kind == "desert":
        crest = ridged1d(rng, xs, freq=1.6 + rng.random(), octaves=3, roughness=0.3)
        return crest * 0.8 + 0.2 * (0.5 + 0.2 * fbm1d(rng, xs, freq=6, octaves=o))
    if kind == "canyon":
        raw = 0.5 + 0.35 * fbm1d(rng, xs, freq=2.5, octaves=3)
        steps = np.floor(raw * 4) / 4
        frac = raw * 4 - np.floor(raw * 4)
        mesa = steps + 0.25 * np.clip((frac - 0.8) * 5, 0, 1)
        return np.clip(mesa + 0.015 * fbm1d(rng, xs, freq=30, octaves=o), 0, 1)
    smooth = 0.5 + 0.28 * fbm1d(rng, xs, freq=1.8 + rng.random(), octaves=o, gain=0.45)
    if kind == "forest":  # tree-crown bumps along the ridge
        smooth = smooth + 0.05 * np.abs(fbm1d(rng, xs, freq=90, octaves=3, gain=0.6))
    return np.clip(smooth, 0, 1)


def plan_layers(frame: Frame) -> list[Layer]:
    """Decide the layers (far → near) from the scene's terrain words."""
    scene, h, _w = frame.scene, frame.height, frame.width
    _, xs = frame.grid()
    hz = frame.horizon
    terrain = set(scene.terrain)
    layers: list[Layer] = []
    rng = frame.rng("terrain")
    snowy = 1.0 if "snow" in terrain else 0.0
    wooded = bool({"forest", "pines"} & set(scene.vegetation))
    if "mountains" in terrain or ("snow" in terrain and not terrain - {"snow"}):
        specs = [(1.0, 0.36, "mountains"), (0.7, 0.26, "mountains"), (0.4, 0.14, "mountains")]
        for depth, amp, kind in specs:
            p = _profile(kind, frame, rng, xs)
            top = hz - h * amp * (0.35 + 0.65 * p) * (0.85 + 0.3 * rng.random())
            layers.append(
                Layer(kind, top.astype(F), hz, depth, snow=max(snowy, 0.55 if depth > 0.6 else 0.0))
            )
    if "hills" in terrain or (not terrain and not scene.water and not scene.wants_water):
        for depth, amp in ((0.8, 0.16), (0.5, 0.11), (0.25, 0.07)):
            top = hz - h * amp * (0.3 + 0.7 * _profile("hills", frame, rng, xs))
            layers.append(Layer("hills", top.astype(F), hz, depth, snow=snowy))
    if "desert" in terrain:
        for depth, amp in ((0.9, 0.12), (0.55, 0.09), (0.2, 0.06)):
            top = hz - h * amp * (0.25 + 0.75 * _profile("desert", frame, rng, xs))
            layers.append(
                Layer("desert", top.astype(F), hz + int(0.02 * h * (1 - depth)), depth, snow=snowy)
            )
    if "canyon" in terrain:
        for depth, amp in ((0.9, 0.2), (0.55, 0.28)):
            top = hz - h * amp * (0.2 + 0.8 * _profile("canyon", frame, rng, xs))
            layers.append(Layer("canyon", top.astype(F), hz, depth, snow=snowy, strata=True))
    if "volcano" in terrain:
        cx = 0.35 + 0.3 * rng.random()
        u = np.abs(xs - cx) / (0.32 + 0.08 * rng.random())
        cone = np.clip(1 - u, 0, 1) ** 1.6 + 0.03 * fbm1d(rng, xs, freq=12, octaves=5)
        cone = np.minimum(cone, 0.93) - 0.05 * np.exp(-(((xs - cx) / 0.02) ** 2))
        top = hz - h * 0.42 * np.clip(cone, 0, 1)
        layers.append(Layer("volcano", top.astype(F), hz, 0.55, snow=snowy))
    if wooded and layers and "desert" not in terrain:
        top = hz - h * 0.06 * (0.3 + 0.7 * _profile("forest", frame, rng, xs))
        layers.append(Layer("forest", top.astype(F), hz, 0.15, snow=snowy * 0.5))
    layers.sort(key=lambda layer: -layer.depth)
    return layers


def _haze_colour(frame: Frame) -> np.ndarray:
    light = frame.light
    return np.array(light.haze, F) * F(0.6) + np.array(light.horizon, F) * F(0.4)


def draw_layer(frame: Frame, layer: Layer) -> None:
    """Fill one silhouette with shaded, textured, hazed rock/grass/sand."""
    h, w = frame.height, frame.width
    light = frame.light
    y0 = max(0, int(np.floor(layer.top.min())))
    y1 = min(h, layer.base)
    if y1 <= y0:
        return
    rows = np.arange(y0, y1, dtype=F)[:, None]
    below = rows - layer.top[None, :]  # pixels below the skyline
    alpha = np.clip(below + 0.5, 0.0, 1.0)
    rng = frame.rng("layer", layer.kind, f"{layer.depth:.2f}")
    ys, xs = frame.grid()
    freq = 5.0 / (0.35 + layer.depth)
    tex = fbm2d(rng, ys[y0:y1], xs, freq=freq, octaves=frame.octaves(4), gain=frame.roughness)
    # Vertically elongated ridged noise reads as gullies and spurs running down the face.
    relief = F(1) - np.abs(
        fbm2d(
            rng,
            ys[y0:y1],
            xs,
            freq=freq * 1.5,
            octaves=frame.octaves(3),
            gain=frame.roughness,
            stretch=0.35,
        )
    )
    grad = np.zeros_like(relief)
    grad[:, 1:-1] = relief[:, 2:] - relief[:, :-2]
    grad *= F(1.0 / (float(np.std(grad)) + 1e-6))
    slope = np.gradient(layer.top).astype(F)
    k = max(3, int(w * 0.01))
    slope = np.convolve(slope, np.ones(k, F) / k, mode="same")
    slope *= F(1.0 / (float(np.std(slope)) + 1e-6))
    side = 1.0 if frame.sun[0] >= w / 2 else -1.0
    low_sun = 1.2 - 0.6 * min(max(light.sun_elevation, 0.0), 1.0)
    face = np.tanh(slope * F(0.8))[None, :] * np.exp(-below / F(0.5 * h))
    s = face + F(0.35) * np.tanh(grad * F(0.5))
    lit = np.clip(0.7 + F(side * 0.28 * low_sun) * s + F(0.05) * tex, 0.25, 1.25)
    base = np.array(ROCK.get(layer.kind, ROCK["hills"]), F)
    colour = np.broadcast_to(base, (*below.shape, 3)).copy()
    if layer.strata:
        band = fbm1d(rng, ys[y0:y1] * 3, freq=40, octaves=4)[:, None]
        colour *= (F(0.85) + F(0.15) * np.tanh(band * 2) + F(0.04) * tex)[..., None]
    elif layer.kind == "volcano":
        lava = np.clip(relief - F(0.9), 0, 1) * F(10) * np.exp(-below / F(0.15 * h))
        colour += lava[..., None] * np.array((1.6, 0.45, 0.05), F)
    else:
        colour *= (F(0.9) + F(0.12) * tex)[..., None]
    if layer.snow > 0:
        height = np.clip((layer.base - rows) / max(layer.base - y0, 1), 0, 1)
        line = F(1.0 - 0.75 * layer.snow) + F(0.1) * tex - F(0.15) * relief
        snow = np.clip((height - line) * 8, 0, 1)
        colour += (np.array(ROCK["snow"], F) - colour) * snow[..., None]
    sun = np.array(light.sun, F) * F(light.ambient)
    sky = np.array(light.zenith, F) * F(0.35) + F(0.08)
    colour *= sun * lit[..., None] + sky
    haze = F(0.55) * F(layer.depth) ** F(1.3)
    mist = np.exp(-(layer.base - rows) / F(0.06 * h)) * F(0.35 * layer.depth)
    fog = np.clip(haze + mist, 0, 0.9)
    colour += (_haze_colour(frame) - colour) * fog[..., None]
    frame.blend(y0, colour, alpha)


def draw_volcano_smoke(frame: Frame, layer: Layer) -> None:
    """A plume of noise smoke rising from the crater (the skyline's highest point)."""
    peak_x = int(np.argmin(layer.top))
    peak_y = int(layer.top[peak_x])
    if peak_y <= 2:
        return
    w = frame.width
    ys, xs = frame.grid()
    rng = frame.rng("smoke")
    n = fbm2d(rng, ys[:peak_y], xs, freq=5, octaves=frame.octaves(3))
    rows = np.arange(peak_y, dtype=F)[:, None]
    rise = (peak_y - rows) / F(w)
    drift = F(peak_x) + rise * F(0.6 * w)
    spread = F(0.02 * w) + rise * F(0.35 * w)
    cols = np.arange(w, dtype=F)[None, :]
    plume = np.exp(-(((cols - drift) / spread) ** 2)) * np.clip(F(0.9) + F(0.4) * n, 0, 1)
    colour = np.array((0.3, 0.28, 0.28), F) * F(frame.light.ambient + 0.2)
    frame.blend(0, np.broadcast_to(colour, (*plume.shape, 3)), np.clip(plume, 0, 0.85))


def draw_ground(frame: Frame, kind: str) -> None:
    """The foreground plane from the horizon to the bottom (when there is no sea or lake)."""
    h, w, hz = frame.height, frame.width, frame.horizon
    if hz >= h:
        return
    ys, xs = frame.grid()
    dist = (np.arange(hz, h, dtype=np.float64) - hz + 0.5) / w
    v = 0.08 / (dist + 0.01)  # perspective: rows near the horizon are far away
    rng = frame.rng("ground", kind)
    tex = fbm2d(
        rng, ys[hz:], xs, freq=5.0, octaves=frame.octaves(3), gain=frame.roughness, stretch=3.0
    )
    near = np.clip(dist / dist.max(), 0, 1).astype(F)[:, None]
    tex *= np.clip(near * 6, 0, 1)
    base = np.array(ROCK.get(kind, ROCK["hills"]), F)
    if kind == "forest":
        base = np.array(ROCK["hills"], F)
    colour = base * (F(0.85) + F(0.15) * tex)[..., None]
    if kind == "desert":
        ripples = np.sin(v[:, None] * 40 + tex * 3).astype(F)
        colour *= (F(0.92) + F(0.08) * ripples)[..., None]
    light = frame.light
    sun = np.array(light.sun, F) * F(light.ambient)
    colour *= sun * (F(0.75) + F(0.2) * near)[..., None] + np.array(light.zenith, F) * F(0.3)
    haze = np.clip(F(1) - near * 5, 0, 1) * F(0.6)
    colour += (_haze_colour(frame) - colour) * haze[..., None]
    frame.canvas[hz:] = colour
