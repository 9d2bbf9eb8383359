"""Landscape composition: horizon, layers, sun position, water, plants, in drawing order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fractal.engine.scene import plants, sky, terrain, water
from fractal.engine.scene.frame import Frame
from fractal.engine.scene.noise import fbm1d
from fractal.engine.scene.terrain import Layer

F = np.float32
Stage = Callable[[], None]


@dataclass
class Plan:
    water: str | None  # "lake", "sea", "tropical" or None (dry land)
    layers: list[Layer]
    island: Layer | None = None
    island_span: tuple[float, float] = (0.0, 0.0)
    bank: Layer | None = None
    ground: str = "hills"
    extras: dict[str, float] = field(default_factory=dict)


def _water_kind(frame: Frame) -> str | None:
    s = frame.scene
    terrain, veg = set(s.terrain), set(s.vegetation)
    if "sea" in s.water or {"island", "beach"} & terrain:
        return "tropical" if ("palms" in veg or "island" in terrain) else "sea"
    if "lake" in s.water or "waterfall" in s.water or (s.wants_water and "river" not in s.water):
        return "lake"
    return None


def _ground_kind(terrain: tuple[str, ...]) -> str:
    for kind in ("snow", "desert", "canyon", "volcano"):
        if kind in terrain:
            return kind
    return "hills"


def plan(frame: Frame) -> Plan:
    """Fix the horizon, the terrain layers, the island, the foreground bank and the sun."""
    scene, h, w = frame.scene, frame.height, frame.width
    rng = frame.rng("composition")
    kind = _water_kind(frame)
    if kind in ("sea", "tropical"):
        frame.horizon = int(h * (0.46 + 0.08 * rng.random()))
    else:
        frame.horizon = int(h * (0.56 + 0.08 * rng.random()))
    layers = terrain.plan_layers(frame)
    if kind in ("sea", "tropical") and not set(scene.terrain) - {"island", "beach"}:
        layers = []  # open sea: nothing behind the horizon
    result = Plan(kind, layers, ground=_ground_kind(scene.terrain))
    _, xs = frame.grid()
    if "island" in scene.terrain:
        cx, rx = 0.3 + 0.4 * rng.random(), 0.17 + 0.1 * rng.random()
        hump = np.clip(1 - ((xs - cx) / rx) ** 2, 0, 1) ** 0.55
        bumps = 0.75 + 0.25 * fbm1d(rng, xs, freq=6, octaves=frame.octaves(3))
        base = frame.horizon + int(0.05 * h)
        top = base - h * 0.12 * hump * bumps - np.where(hump > 0, 2.0, 0.0)
        result.island = Layer("island", top.astype(F), base, 0.3)
        result.island_span = (cx - rx, cx + rx)
    if scene.vegetation and kind is not None and "island" not in scene.terrain:
        side = rng.random() < 0.5
        u = xs if side else 1 - xs
        reach = 0.35 + 0.15 * rng.random()
        shape = np.clip(1 - u / reach, 0, 1) ** 0.8
        wobble = 0.04 * fbm1d(rng, xs, freq=8, octaves=frame.octaves(3))
        top = h - h * (0.2 * shape + wobble) * (shape > 0)
        result.bank = Layer("hills", np.where(shape > 0, top, h + 1).astype(F), h, 0.02)
    if "waterfall" in scene.water:
        fall_x = 0.3 + 0.4 * rng.random()
        half = 0.15 + 0.07 * rng.random()
        layers.append(terrain.cliff_layer(frame, rng, fall_x, half))
        layers.sort(key=lambda layer: -layer.depth)
        result.layers = layers
        result.extras["fall_x"] = fall_x * w
    skyline = np.full(w, frame.horizon, dtype=F)
    for layer in layers:
        skyline = np.minimum(skyline, layer.top)
    frame.skyline = skyline
    _place_sun(frame, rng)
    for layer in layers:  # the sun or moon never sits on a volcano's vent and plume
        if layer.apex is not None and abs(frame.sun[0] - layer.apex[0]) < 0.2 * w:
            x = layer.apex[0] + (0.25 if layer.apex[0] < w / 2 else -0.25) * w
            y = (
                frame.sun[1]
                if frame.light.moon
                else min(frame.sun[1], float(skyline[int(x)]) - 0.05 * w)
            )
            frame.sun = (x, y)
    return result


def _place_sun(frame: Frame, rng: np.random.Generator) -> None:
    light, w, hz = frame.light, frame.width, frame.horizon
    x = w * (0.25 + 0.5 * rng.random())
    if light.moon:
        frame.sun = (x, hz * (0.22 + 0.15 * rng.random()))
        return
    if light.sun_elevation < 0:
        frame.sun = (x, hz + 0.04 * frame.height)
        return
    r = 0.036 * w
    if light.sun_elevation < 0.2:  # low sun: rise in a valley between peaks
        candidates = (w * np.linspace(0.25, 0.75, 9)).astype(int)
        x = float(candidates[int(np.argmax(frame.skyline[candidates]))])
    ground = float(frame.skyline[int(x)])
    y = hz - light.sun_elevation * hz * 1.1
    frame.sun = (
        x,
        float(min(y, ground - 1.2 * r))
        if light.sun_elevation < 0.2
        else float(max(min(y, ground - 2.5 * r), 1.3 * r)),
    )


def _trees_on(
    frame: Frame,
    sp: plants.Sprites,
    top: np.ndarray,
    *,
    size: float,
    spacing: float,
    kinds: list[str],
    rng: np.random.Generator,
    span: tuple[float, float] = (0.0, 1.0),
) -> None:
    w = frame.width
    x = span[0] * w + rng.random() * spacing * w
    while x < span[1] * w:
        xi = min(int(x), w - 1)
        y = float(top[xi])
        if y < frame.height:
            s = size * (0.7 + 0.6 * rng.random())
            kind = kinds[int(rng.integers(len(kinds)))]
            if kind == "pines":
                plants.pine(sp, x, y + s * 0.05, s, rng)
            elif kind == "palms":
                plants.palm(sp, x, y + s * 0.03, s, (rng.random() - 0.5) * 0.6, rng)
            else:
                plants.lsystem_tree(sp, x, y + s * 0.03, s, rng, depth=4 + round(frame.texture * 3))
        x += spacing * w * (0.6 + 0.8 * rng.random())


def draw_plants(frame: Frame, p: Plan) -> None:
    veg = set(frame.scene.vegetation)
    rng = frame.rng("plants")
    sp = plants.Sprites(frame)
    h = frame.height
    trees = [k for k in ("forest", "pines", "palms") if k in veg]
    if p.island is not None:
        lo, hi = p.island_span
        kinds = trees or ["palms"]
        _trees_on(
            frame,
            sp,
            p.island.top,
            size=h * 0.11,
            spacing=0.06,
            kinds=kinds,
            rng=rng,
            span=(lo + 0.04, hi - 0.04),
        )
    near = [layer for layer in p.layers if layer.depth <= 0.5]
    if trees and near and p.island is None:
        top = near[-1].top
        if "fall_x" in p.extras:  # no trees in front of the waterfall's lip
            cols = np.arange(frame.width)
            top = np.where(np.abs(cols - p.extras["fall_x"]) < 0.05 * frame.width, h + 1, top)
        _trees_on(
            frame,
            sp,
            top,
            size=h * 0.05,
            spacing=0.018,
            kinds=[k for k in trees if k != "palms"] or ["palms"],
            rng=rng,
        )
    fore_top = p.bank.top if p.bank is not None else None
    if fore_top is None and p.water is None:
        fore_top = np.full(frame.width, h * 0.9, dtype=F)
    if fore_top is not None and trees:
        big = h * (0.45 if "palms" in trees else 0.35)
        for x in (0.06, 0.94) if p.bank is None else (0.05, 0.16, 0.27):
            xi = int(x * frame.width) if fore_top[int(x * frame.width)] < h else None
            if xi is None:
                xi = int((1 - x) * frame.width) - 1
            if fore_top[xi] >= h:
                continue
            kind = trees[int(rng.integers(len(trees)))]
            y = float(fore_top[xi]) + h * 0.03
            if kind == "palms":
                plants.palm(sp, xi, y, big, 0.35 if xi > frame.width / 2 else -0.35, rng)
            elif kind == "pines":
                plants.pine(sp, xi, y, big, rng)
            else:
                plants.lsystem_tree(sp, xi, y, big, rng, depth=5 + round(frame.texture * 3))
    elif p.island is not None and "palms" in veg:
        lo, hi = p.island_span
        x = frame.width * (0.96 if (lo + hi) / 2 < 0.5 else 0.04)
        for k in range(2):
            lean = (-0.5 if x > frame.width / 2 else 0.5) * (1 + 0.4 * k)
            plants.palm(sp, x + k * lean * h * 0.1, h * 1.02, h * (0.6 - 0.15 * k), lean, rng)
    y0 = frame.horizon + (h - frame.horizon) * 0.55 if p.water is None else h * 0.88
    if "ferns" in veg:
        plants.fern(sp, frame.width * 0.08, h * 1.0, h * 0.3, rng, mirror=False)
        plants.fern(sp, frame.width * 0.9, h * 1.0, h * 0.26, rng, mirror=True)
    if "grass" in veg:
        plants.grass(sp, y0, h, rng, density=0.8 + frame.texture)
    if "flowers" in veg:
        plants.flowers(sp, y0, h, rng)
    sp.composite()


def stages(frame: Frame) -> list[Stage]:
    """The drawing stages, in order; each reports progress when done."""
    scene, light = frame.scene, frame.light
    p = plan(frame)
    cover = 0.55 if "clouds" in scene.sky else (0.0 if "clear" in scene.sky else 0.12)
    cover = max(cover, light.cloud_cover)
    fog = 0.6 if "fog" in scene.sky else 0.0

    def draw_sky() -> None:
        sky.draw_gradient(frame)
        sky.draw_stars(frame)
        if "aurora" in scene.sky:
            sky.draw_aurora(frame)
        sky.draw_sun(frame)
        sky.draw_moon(frame)
        sky.draw_clouds(frame, cover)
        if "rainbow" in scene.sky:
            sky.draw_rainbow(frame)

    def draw_land() -> None:
        for layer in p.layers:
            terrain.draw_layer(frame, layer)
            if layer.kind == "volcano":
                terrain.draw_volcano_smoke(frame, layer)

    def draw_water() -> None:
        fall_x = p.extras.get("fall_x")
        cliff = next((layer for layer in p.layers if layer.kind == "cliff"), None)
        if fall_x is not None and cliff is not None:  # before the water, so it reflects
            water.draw_waterfall(frame, cliff.top, fall_x)
        if p.water is None and p.ground == "desert":
            terrain.draw_dunes(frame)
            if "river" in scene.water:
                water.draw_river(frame)
        elif p.water is None:
            terrain.draw_ground(frame, p.ground)
            if "river" in scene.water:
                water.draw_river(frame)
        else:
            water.draw_water(frame, p.water)
        if fall_x is not None:
            water.draw_plunge(frame, fall_x)
        if p.island is not None:
            water.draw_shallows(frame, *p.island_span, p.island.base - int(0.01 * frame.height))
            terrain.draw_layer(frame, p.island)
            _sand(frame, p.island)
        if "beach" in scene.terrain:
            water.draw_beach(frame)
        if p.bank is not None:
            terrain.draw_layer(frame, p.bank)

    def draw_vegetation() -> None:
        draw_plants(frame, p)

    def draw_air() -> None:
        sky.draw_fog(frame, fog)

    return [draw_sky, draw_land, draw_water, draw_vegetation, draw_air]


def _sand(frame: Frame, island: Layer) -> None:
    """A pale beach along the island's waterline."""
    h = frame.height
    band = max(2, int(0.018 * h))
    y0 = island.base - band
    rows = np.arange(y0, island.base, dtype=F)[:, None]
    inside = np.clip(rows - island.top[None, :] + 0.5, 0, 1)
    fade = np.clip((rows - y0) / band * 2, 0, 1)
    sand = np.array((0.93, 0.86, 0.66), F) * F(0.45 + 0.6 * frame.light.ambient)
    frame.blend(y0, np.broadcast_to(sand, (*inside.shape, 3)), inside * fade)
