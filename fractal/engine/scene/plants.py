"""Plants: L-system trees, palms, pines, IFS ferns, grass and flowers, drawn with Pillow.

Strokes go onto a transparent layer (supersampled 2× for small pictures, for smooth edges)
that is then composited onto the canvas.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from fractal.engine.scene.frame import Frame

F = np.float32
RGBA = tuple[int, int, int, int]


class Sprites:
    """A transparent drawing layer the size of the frame."""

    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self.ss = 2 if frame.width * frame.height <= 1_200_000 else 1
        size = (frame.width * self.ss, frame.height * self.ss)
        self.image = Image.new("RGBA", size, (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.image)
        self.used = False

    def colour(self, rgb: tuple[float, float, float], alpha: int = 255) -> RGBA:
        """A plant colour lit by the frame's light."""
        light = self.frame.light
        lit = np.array(rgb, F) * (
            np.array(light.sun, F) * F(light.ambient * 0.9)
            + np.array(light.zenith, F) * F(0.25)
            + F(0.03)
        )
        r, g, b = (int(c) for c in np.clip(lit * 255, 0, 255))
        return (r, g, b, alpha)

    def line(self, pts: list[tuple[float, float]], fill: RGBA, width: float) -> None:
        s = self.ss
        self.draw.line(
            [(x * s, y * s) for x, y in pts],
            fill=fill,
            width=max(1, round(width * s)),
            joint="curve",
        )
        self.used = True

    def polygon(self, pts: list[tuple[float, float]], fill: RGBA) -> None:
        s = self.ss
        self.draw.polygon([(x * s, y * s) for x, y in pts], fill=fill)
        self.used = True

    def ellipse(self, x: float, y: float, r: float, fill: RGBA) -> None:
        s = self.ss
        self.draw.ellipse([(x - r) * s, (y - r) * s, (x + r) * s, (y + r) * s], fill=fill)
        self.used = True

    def composite(self) -> None:
        if not self.used:
            return
        image = self.image
        if self.ss > 1:
            image = image.resize((self.frame.width, self.frame.height), Image.Resampling.BOX)
        rgba = np.asarray(image, dtype=np.uint8)
        alpha = rgba[..., 3].astype(F) / F(255)
        colour = rgba[..., :3].astype(F) / F(255)
        self.frame.blend(0, colour, alpha)


def lsystem_tree(
    sp: Sprites,
    x: float,
    y: float,
    size: float,
    rng: np.random.Generator,
    *,
    depth: int,
    leaves: tuple[float, float, float] = (0.2, 0.45, 0.15),
) -> None:
    """A branching L-system tree (F → F[+F][-F]) with random angles and leafy tips."""
    bark = sp.colour((0.25, 0.17, 0.1))
    greens = [sp.colour(tuple(c * (0.8 + 0.4 * rng.random()) for c in leaves)) for _ in range(3)]
    stack = [(x, y, -math.pi / 2, size * 0.32, size * 0.05, depth)]
    tips: list[tuple[float, float]] = []
    while stack:
        px, py, angle, length, width, level = stack.pop()
        nx, ny = px + math.cos(angle) * length, py + math.sin(angle) * length
        sp.line([(px, py), (nx, ny)], bark, width)
        if level == 0:
            tips.append((nx, ny))
            continue
        for turn in (-1, 1):
            spread = turn * (0.35 + 0.35 * rng.random())
            stack.append(
                (
                    nx,
                    ny,
                    angle + spread,
                    length * (0.68 + 0.12 * rng.random()),
                    width * 0.68,
                    level - 1,
                )
            )
    r = size * (0.05 + 0.02 * (7 - depth))
    for tx, ty in tips:
        sp.ellipse(tx, ty, r * (0.7 + 0.6 * rng.random()), greens[int(rng.integers(3))])


def pine(sp: Sprites, x: float, y: float, size: float, rng: np.random.Generator) -> None:
    """A conifer: a trunk and tiers of drooping branches, narrowing to the top."""
    dark = sp.colour((0.07 + 0.04 * rng.random(), 0.22 + 0.06 * rng.random(), 0.12))
    sp.line([(x, y), (x, y - size)], sp.colour((0.2, 0.14, 0.09)), max(1.0, size * 0.04))
    tiers = 6
    for k in range(tiers):
        t = k / tiers
        yb = y - size * (0.12 + 0.85 * t)
        half = size * 0.3 * (1 - t) + size * 0.03
        sp.polygon([(x - half, yb), (x + half, yb), (x, yb - size * 0.28)], dark)


def palm(
    sp: Sprites, x: float, y: float, size: float, lean: float, rng: np.random.Generator
) -> None:
    """A palm: a curved, tapering trunk and drooping fronds made of leaflet strokes."""
    bark = sp.colour((0.45, 0.34, 0.22))
    leaf = sp.colour((0.16, 0.45, 0.14))
    leaf_dark = sp.colour((0.09, 0.3, 0.1))
    pts = []
    for i in range(13):
        t = i / 12
        pts.append((x + lean * size * t * t, y - size * t))
    for i in range(12):
        sp.line([pts[i], pts[i + 1]], bark, size * (0.05 - 0.025 * i / 12))
    tx, ty = pts[-1]
    n = int(rng.integers(7, 10))
    for k in range(n):
        ang = 2 * math.pi * k / n + rng.random() * 0.4
        reach = size * (0.4 + 0.15 * rng.random())
        dx, lift = math.cos(ang), 0.55 + 0.3 * math.sin(ang)
        spine = [
            (tx + dx * reach * s, ty - lift * reach * s + reach * 0.85 * s * s)
            for s in np.linspace(0, 1, 9)
        ]
        sp.line(spine, leaf_dark, size * 0.012)
        for j in range(1, 9):
            sx, sy = spine[j]
            px, py = spine[j - 1]
            norm = math.hypot(sx - px, sy - py) or 1.0
            ux, uy = (sx - px) / norm, (sy - py) / norm
            ln = reach * 0.2 * math.sin(math.pi * j / 9)
            for side in (-1, 1):
                end = (
                    sx + (ux * 0.4 - side * uy * 0.6) * ln,
                    sy + (uy * 0.4 + side * ux * 0.6) * ln + ln * 0.35,
                )
                sp.line([(sx, sy), end], leaf, size * 0.009)
    for _ in range(3):
        sp.ellipse(
            tx + rng.normal() * size * 0.02,
            ty + size * 0.02,
            size * 0.025,
            sp.colour((0.3, 0.22, 0.1)),
        )


def fern(
    sp: Sprites, x: float, y: float, size: float, rng: np.random.Generator, *, mirror: bool
) -> None:
    """Barnsley's fern, an iterated function system, run as a vectorised chaos game."""
    n = 6000 + int(sp.frame.texture * 12000)
    maps = np.array(
        [
            [0.0, 0.0, 0.0, 0.16, 0.0, 0.0],
            [0.85, 0.04, -0.04, 0.85, 0.0, 1.6],
            [0.2, -0.26, 0.23, 0.22, 0.0, 1.6],
            [-0.15, 0.28, 0.26, 0.24, 0.0, 0.44],
        ]
    )
    choice = rng.choice(4, size=(20, n // 20 + 1), p=[0.01, 0.85, 0.07, 0.07])
    px, py = np.zeros(choice.shape[1]), np.zeros(choice.shape[1])
    xs, ys = [], []
    for step in range(choice.shape[0]):
        a, b, c, d, e, f = maps[choice[step]].T
        px, py = a * px + b * py + e, c * px + d * py + f
        if step > 4:
            xs.append(px.copy())
            ys.append(py.copy())
    fx, fy = np.concatenate(xs), np.concatenate(ys)
    lean = 0.35 if mirror else -0.35
    gx = x + (fx * (-1 if mirror else 1) + fy * lean) * size / 10
    gy = y - fy * size / 10
    green = sp.colour((0.18, 0.5, 0.16))
    s = sp.ss
    sp.draw.point(list(zip((gx * s).tolist(), (gy * s).tolist(), strict=True)), fill=green)
    sp.used = True


def grass(sp: Sprites, y0: float, y1: float, rng: np.random.Generator, density: float) -> None:
    """Blades of grass in rows y0..y1, longer toward the viewer."""
    w = sp.frame.width
    n = int(density * w * 1.2)
    shades = [sp.colour((0.2 + 0.1 * k, 0.45 + 0.08 * k, 0.12)) for k in range(3)]
    base_y = rng.uniform(y0, y1, n)
    base_x = rng.uniform(0, w, n)
    height = (base_y - y0 + 1) / max(y1 - y0, 1) * sp.frame.height * 0.05 + 2
    bend = rng.normal(0, 0.35, n)
    for i in np.argsort(base_y):
        bx, by, hh = base_x[i], base_y[i], height[i]
        pts = [(bx, by), (bx + bend[i] * hh * 0.3, by - hh * 0.6), (bx + bend[i] * hh, by - hh)]
        sp.line(pts, shades[i % 3], max(1.0, sp.frame.unit * 0.8))


def flowers(sp: Sprites, y0: float, y1: float, rng: np.random.Generator) -> None:
    """Dots of colour with a pale centre, bigger toward the viewer."""
    w = sp.frame.width
    n = int(w * 0.12)
    palette = [
        (0.9, 0.2, 0.25),
        (0.95, 0.85, 0.2),
        (0.85, 0.45, 0.85),
        (0.98, 0.98, 0.95),
        (0.95, 0.5, 0.15),
    ]
    ys = np.sort(rng.uniform(y0, y1, n))
    for y in ys:
        x = rng.uniform(0, w)
        r = sp.frame.unit * (1.0 + 4.0 * (y - y0) / max(y1 - y0, 1))
        sp.ellipse(x, y, r, sp.colour(palette[int(rng.integers(len(palette)))]))
        sp.ellipse(x, y, r * 0.35, sp.colour((1.0, 0.9, 0.5)))
