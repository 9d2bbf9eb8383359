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
    "cliff": (0.36, 0.33, 0.30),
    "island": (0.16, 0.42, 0.16),
    "snow": (0.86, 0.89, 0.95),
}


LAVA = np.array((1.0, 0.36, 0.06), F)


@dataclass
class Layer:
    """One silhouette: filled from ``top`` (rows, per column) down to row ``base``."""

    kind: str
    top: np.ndarray
    base: int
    depth: float  # 1 = farthest, 0 = nearest
    snow: float = 0.0  # 0 none .. 1 fully snow-covered
    strata: bool = False
    apex: tuple[float, float] | None = None  # a volcano's crater centre (x, y pixels)
    crater: float = 0.0  # a volcano's crater half-width (pixels)


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
        for depth, amp in ((0.95, 0.07), (0.8, 0.045)):  # far dunes; near ones: draw_dunes
            top = hz - h * amp * (0.25 + 0.75 * _profile("desert", frame, rng, xs))
            layers.append(
                Layer("desert", top.astype(F), hz + int(0.02 * h * (1 - depth)), depth, snow=snowy)
            )
    if "canyon" in terrain:
        for depth, amp in ((0.9, 0.2), (0.55, 0.28)):
            top = hz - h * amp * (0.2 + 0.8 * _profile("canyon", frame, rng, xs))
            layers.append(Layer("canyon", top.astype(F), hz, depth, snow=snowy, strata=True))
    if "volcano" in terrain:
        layers += _volcano_layers(frame, rng, xs, snowy, alone=not terrain - {"volcano", "snow"})
    if wooded and layers and "desert" not in terrain:
        top = hz - h * 0.06 * (0.3 + 0.7 * _profile("forest", frame, rng, xs))
        layers.append(Layer("forest", top.astype(F), hz, 0.15, snow=snowy * 0.5))
    layers.sort(key=lambda layer: -layer.depth)
    return layers


def cliff_layer(frame: Frame, rng: np.random.Generator, cx: float, half: float) -> Layer:
    """A steep-sided rock plateau whose lip (notched at ``cx``) a waterfall pours over."""
    h, hz = frame.height, frame.horizon
    _, xs = frame.grid()
    u = np.abs(xs - cx) / half
    wall = np.clip((1.1 - u) * 5, 0, 1)
    wall = wall * wall * (3 - 2 * wall)  # smoothstep: steep sides, flat top
    rough = 0.06 * fbm1d(rng, xs, freq=14, octaves=frame.octaves(3))
    notch = 0.03 * np.exp(-(((xs - cx) / 0.025) ** 2))
    height = h * (0.24 + 0.06 * rng.random())
    top = hz - height * wall * (0.94 + rough - notch) - 1.5 * (wall > 0)
    return Layer("cliff", top.astype(F), hz, 0.12, strata=True)


def _volcano_layers(
    frame: Frame, rng: np.random.Generator, xs: np.ndarray, snowy: float, *, alone: bool
) -> list[Layer]:
    """A stratovolcano: a concave cone truncated by a notched crater (plus a far ridge)."""
    h, w, hz = frame.height, frame.width, frame.horizon
    layers = []
    if alone:  # a low, hazy range behind the cone gives it scale
        p = _profile("mountains", frame, rng, xs)
        top = hz - h * 0.1 * (0.3 + 0.7 * p)
        layers.append(Layer("mountains", top.astype(F), hz, 1.0, snow=snowy))
    cx = 0.35 + 0.3 * rng.random()
    half = 0.3 + 0.08 * rng.random()  # half-width at the foot, in picture widths
    crater = 0.03 + 0.012 * rng.random()
    u = np.abs(xs - cx) / half
    cone = np.clip(1 - u, 0, 1) ** 1.7
    rim = (1 - crater / half) ** 1.7
    cone = np.minimum(cone, rim)
    inside = np.clip(1 - np.abs(xs - cx) / crater, 0, 1)
    cone -= 0.05 * rim * np.sqrt(inside)  # the crater's notch between two rim lips
    shoulder = np.clip(1 - u, 0, 1)
    cone += 0.025 * shoulder * fbm1d(rng, xs, freq=9, octaves=frame.octaves(4))
    cone += 0.012 * np.clip(1 - u * 1.1, 0, 1) * ridged1d(rng, xs, freq=20, octaves=3)
    height = h * (0.33 + 0.06 * rng.random())
    top = hz - height * np.clip(cone, 0, 1) / rim
    apex = (float(cx * w), float(hz - height) + 0.02 * height)
    layers.append(
        Layer("volcano", top.astype(F), hz, 0.5, snow=snowy, apex=apex, crater=crater * w)
    )
    return layers


def _volcano_face(
    frame: Frame, layer: Layer, rng: np.random.Generator, rows: np.ndarray, tex: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Shading of a cone (sun side, radial gullies) and its lava's emitted light."""
    w = frame.width
    assert layer.apex is not None
    ax, ay = layer.apex
    cols = np.arange(w, dtype=F)[None, :]
    dx, dy = cols - F(ax), np.maximum(rows - F(ay), F(0))
    dist = np.sqrt(dx * dx + dy * dy) + F(1)
    ang = np.arctan2(dx, dy + F(0.5 * layer.crater)).astype(F)  # 0 straight down, ±π/2 level
    # Gullies run from the summit down the flanks: noise over the angle from the apex.
    samples = np.linspace(0.0, 1.0, 2048)
    gully = fbm1d(rng, samples, freq=26, octaves=frame.octaves(3), gain=0.55)
    ridge = np.abs(gully)
    shade = np.gradient(ridge).astype(F) * F(2048 / 26)
    t = (ang / F(np.pi) + F(0.5)) * F(2047)
    idx = np.clip(t.astype(np.int32), 0, 2047)
    fade = np.clip(dist / F(0.04 * w), 0, 1)
    side = 1.0 if frame.sun[0] >= ax else -1.0
    face = np.tanh(ang * F(3)) * F(side)
    lit = F(0.72) + F(0.3) * face + F(0.3 * side) * np.tanh(shade[idx]) * fade
    lit -= F(0.12) * ridge[idx] * fade
    lit = np.clip(lit + F(0.06) * tex, 0.2, 1.25)
    # Lava: a glowing crater and a few flows wandering down gullies from the rim.
    glow = np.exp(-dist / F(0.5 * layer.crater + 1)) * F(1.8)
    reach = F(0.35 * (frame.horizon - ay))
    for k in range(int(rng.integers(2, 4))):
        a0 = (rng.random() - 0.5) * 1.1
        x0 = F(ax + (rng.random() - 0.5) * 1.4 * layer.crater)
        wiggle = fbm1d(rng, rows[:, 0] / F(w), freq=9, octaves=3)[:, None]
        path = x0 + dy * F(np.tan(a0)) + wiggle * F(0.012 * w) * (dy / reach)
        width = F(0.003 * w + 1.2) + dy * F(0.012)
        length = reach * F(0.5 + 0.8 * rng.random())
        along = np.clip(F(1) - dy / length, 0, 1)
        flow = np.exp(-(((cols - path) / width) ** 2)) * along ** F(0.7)
        flow *= np.clip(F(0.75) + F(0.5) * tex, 0, 1.2) * F(0.9 if k else 1.2)
        glow = np.maximum(glow, flow)
    return lit, glow


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
    lava = None
    if layer.apex is not None:
        lit, lava = _volcano_face(frame, layer, rng, rows, tex)
    else:
        lit = np.clip(0.7 + F(side * 0.28 * low_sun) * s + F(0.05) * tex, 0.25, 1.25)
    base = np.array(ROCK.get(layer.kind, ROCK["hills"]), F)
    colour = np.broadcast_to(base, (*below.shape, 3)).copy()
    if layer.strata:
        band = fbm1d(rng, ys[y0:y1] * 3, freq=40, octaves=4)[:, None]
        colour *= (F(0.85) + F(0.15) * np.tanh(band * 2) + F(0.04) * tex)[..., None]
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
    if lava is not None:  # lava emits its own light: not shaded, barely hazed
        hot = np.clip(lava, 0, 1)[..., None]
        glow = LAVA * (F(0.8) + F(0.9) * hot)  # above 1: stays bright after any exposure
        colour += (glow - colour) * np.clip(lava * F(1.3), 0, 1)[..., None]
        colour += np.clip(lava - F(0.8), 0, 1)[..., None] * np.array((0.6, 0.5, 0.2), F)
    frame.blend(y0, colour, alpha)


def draw_volcano_smoke(frame: Frame, layer: Layer) -> None:
    """A billowing plume of noise smoke from the crater, lit from below by the lava."""
    if layer.apex is None:
        return
    ax, ay = layer.apex
    top = int(ay)
    if top <= 2:
        return
    h, w, light = frame.height, frame.width, frame.light
    ys, xs = frame.grid()
    rng = frame.rng("smoke")
    rows = np.arange(top, dtype=F)[:, None]
    cols = np.arange(w, dtype=F)[None, :]
    rise = (F(ay) - rows) / F(w)  # height above the crater, picture widths
    wind = 1.0 if rng.random() < 0.5 else -1.0
    drift = F(ax) + F(wind * 0.9 * w) * rise ** F(1.5)
    spread = F(0.7 * layer.crater) + rise * F(0.42 * w)
    warp = fbm2d(rng, ys[:top], xs, freq=4, octaves=frame.octaves(3), gain=0.5)
    billow = fbm2d(rng, ys[:top], xs, freq=9, octaves=frame.octaves(3), gain=frame.roughness)
    lateral = (cols - drift + warp * spread * F(0.45)) / spread
    body = np.exp(-(lateral**2)) * np.clip(F(1.4) - rise * F(1.3), 0, 1)
    density = np.clip(body * (F(1.25) + F(0.5) * billow) - F(0.12), 0, 1)
    density *= np.clip(rise / F(0.012), 0, 1) ** F(0.7)  # the vent itself stays in view
    # Lit side and shadowed side from the billows' slope; by night only the lava lights it.
    shade = np.clip(F(0.8) + F(0.25) * billow + F(0.25 * wind) * np.tanh(warp), 0.4, 1.3)
    grey = np.array((0.52, 0.5, 0.5), F) * F(0.2 + 0.75 * light.ambient)
    colour = grey * shade[..., None] + np.array(light.zenith, F) * F(0.15)
    under = np.exp(-rise / F(0.06))[..., None] * LAVA * F(0.9 if light.ambient < 0.4 else 0.45)
    colour = colour + under * np.clip(F(1.3) - density, 0.3, 1)[..., None]
    frame.blend(0, colour, density * F(0.92))
    # The crater lights the air and the summit around it.
    y1 = min(h, int(ay + 0.12 * w))
    d = np.sqrt(
        ((np.arange(y1, dtype=F)[:, None] - F(ay)) / F(w)) ** 2 + ((cols - F(ax)) / F(w)) ** 2
    )
    halo = np.exp(-d / F(0.035)) * F(0.5 if light.ambient < 0.4 else 0.25)
    frame.canvas[:y1] += halo[..., None] * LAVA


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
    sky = np.array(light.zenith, F) * F(0.3)
    if light.moon:  # moonlit ground keeps a little of the pale horizon's light
        sky = sky + np.array(light.horizon, F) * F(0.3)
    colour *= sun * (F(0.75) + F(0.2) * near)[..., None] + sky
    haze = np.clip(F(1) - near * 5, 0, 1) * F(0.6)
    colour += (_haze_colour(frame) - colour) * haze[..., None]
    frame.canvas[hz:] = colour


def draw_dunes(frame: Frame) -> None:
    """Rows of sand dunes from the horizon to the viewer: sharp crests, lit and shadowed
    faces split by a slanting terminator, wind ripples, fading into the haze with distance."""
    h, w, hz = frame.height, frame.width, frame.horizon
    if hz >= h:
        return
    light = frame.light
    rng = frame.rng("dunes")
    ys, xs = frame.grid()
    side = 1.0 if frame.sun[0] >= w / 2 else -1.0
    low_sun = 1.25 - 0.6 * min(max(light.sun_elevation, 0.0), 1.0)
    sun = np.array(light.sun, F) * F(light.ambient)
    sky = np.array(light.zenith, F) * F(0.3)
    if light.moon:
        sky = sky + np.array(light.horizon, F) * F(0.3)
    sand = np.array(ROCK["desert"], F)
    haze_colour = _haze_colour(frame)
    far = sand * (sun * F(0.8) + sky)
    frame.canvas[hz:] = far + (haze_colour - far) * F(0.55)
    n = 7
    tops = []
    for j in range(n):
        t = (j + 1) / n  # 0 far .. 1 near
        base = hz + (h - hz) * (0.03 + 1.0 * t**1.6)
        amp = (h - hz) * (0.04 + 0.2 * t**1.5)
        crest = 1 - np.abs(fbm1d(rng, xs, freq=5 - 3.4 * t, octaves=frame.octaves(1), gain=0.35))
        tops.append((base - amp * np.clip(crest, 0, 1) ** 1.3).astype(F))
    cols = np.arange(w)[None, :]
    for j, top in enumerate(tops):
        t = (j + 1) / n
        y0 = max(hz, int(np.floor(top.min())))
        y1 = h if j == n - 1 else min(h, int(np.ceil(tops[j + 1].max())) + 1)
        if y1 <= y0:
            continue
        rows = np.arange(y0, y1, dtype=F)[:, None]
        below = rows - top[None, :]
        alpha = np.clip(below + 0.5, 0, 1)
        k = max(3, int(w * 0.004))
        slope = np.convolve(np.gradient(top), np.ones(k) / k, mode="same").astype(F)
        slope *= F(1.0 / (float(np.std(slope)) + 1e-6))
        # The terminator slants down from each crest (the slip face's shadow edge).
        shift = (cols + side * 0.9 * np.maximum(below, 0)).astype(np.int32)
        s = np.tanh(slope[np.clip(shift, 0, w - 1)] * F(1.5)) * F(-side)
        s *= np.exp(-np.maximum(below, 0) / F(0.35 * (h - hz) * t + 2))
        tex = fbm2d(rng, ys[y0:y1], xs, freq=6, octaves=frame.octaves(2), gain=0.5)
        lit = np.clip(F(0.8) + F(0.32 * low_sun) * s + F(0.04) * tex, 0.3, 1.3)
        # Wind ripples: fine stripes parallel to the crest, finer with distance.
        phase = below / F(0.004 * w * t + 0.5) + F(1.5) * tex
        ripple = np.sin(phase) * F(0.06) * np.clip(F(t * 1.6), 0, 1)
        lit += ripple * (F(0.6) + F(0.4) * np.abs(s))
        crest_line = np.exp(-np.maximum(below, 0) / F(0.8 + 1.5 * t * frame.unit)) * (s > 0)
        lit += F(0.12) * crest_line
        colour = sand * (sun * lit[..., None] + sky)
        fog = F(0.6 * (1 - t) ** 1.6)
        colour += (haze_colour - colour) * fog
        frame.blend(y0, colour, alpha)
