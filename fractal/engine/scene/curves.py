"""Line fractals drawn with Pillow: Koch snowflakes, fractal trees, dragon curves."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from fractal.engine.scene.frame import Frame
from fractal.engine.scene.palette import ramp

F = np.float32


def _background(frame: Frame, colours: np.ndarray) -> np.ndarray:
    """A dark radial gradient in the ramp's darkest colours."""
    h, w = frame.height, frame.width
    ys, xs = frame.grid()
    r = np.sqrt((xs[None, :] - 0.5) ** 2 + (ys[:, None] - h / w / 2) ** 2).astype(F)
    glow = np.clip(F(1) - r * F(1.3), 0, 1)[..., None]
    deep = colours[0] * F(0.6) + F(0.02)
    mid = colours[1] * F(0.35)
    return deep + (mid - deep) * glow


def _to_pil(canvas: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def _from_pil(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.uint8).astype(F) / F(255)


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in np.clip(colour * 255, 0, 255))
    return (r, g, b)


def koch(points: np.ndarray, depth: int) -> np.ndarray:
    """Replace every edge of a closed polygon by the Koch generator, ``depth`` times."""
    rot = np.array([[0.5, -math.sqrt(3) / 2], [math.sqrt(3) / 2, 0.5]])
    for _ in range(depth):
        a, b = points, np.roll(points, -1, axis=0)
        d = (b - a) / 3
        p1, p3 = a + d, a + 2 * d
        p2 = p1 + d @ rot.T
        points = np.stack([a, p1, p2, p3], axis=1).reshape(-1, 2)
    return points


def snowflake(frame: Frame, colours: np.ndarray) -> np.ndarray:
    """Nested Koch snowflakes in the middle and smaller ones scattered around."""
    rng = frame.rng("snowflake")
    h, w = frame.height, frame.width
    image = _to_pil(_background(frame, colours))
    draw = ImageDraw.Draw(image)
    depth = 3 + round(frame.texture * 3)
    flakes = [(w / 2, h / 2, min(w, h) * 0.42, rng.random() * math.pi, 5)]
    for _ in range(int(rng.integers(6, 14))):
        flakes.append(
            (
                rng.random() * w,
                rng.random() * h,
                min(w, h) * (0.03 + 0.07 * rng.random()),
                rng.random() * math.pi,
                1,
            )
        )
    for cx, cy, size, turn, rings in flakes:
        for ring in range(rings):
            radius = size * (1 - ring / (rings + 0.5))
            angles = turn + ring * math.pi / 3 + np.array([0, 2, 4]) * math.pi / 3
            tri = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)
            outline = koch(tri[::-1], min(depth, 7 - ring // 2))
            colour = ramp(np.array([(ring + 1) / (rings + 1)], F), colours[1:])[0]
            draw.polygon(
                [tuple(p) for p in outline.tolist()],
                fill=_rgb(colour * F(0.85)),
                outline=_rgb(np.clip(colour + F(0.25), 0, 1)),
            )
    return _from_pil(image)


def fractal_tree(frame: Frame, colours: np.ndarray) -> np.ndarray:
    """A recursive binary tree whose branch colours climb the colour ramp."""
    rng = frame.rng("fractal tree")
    h, w = frame.height, frame.width
    image = _to_pil(_background(frame, colours))
    draw = ImageDraw.Draw(image)
    depth = 8 + round(frame.texture * 4)
    spread = 0.3 + 0.35 * rng.random()
    ratio = 0.68 + 0.08 * rng.random()
    stack = [(w / 2, h * 0.97, -math.pi / 2, h * 0.26, max(1.0, w * 0.018), depth)]
    while stack:
        x, y, angle, length, width, level = stack.pop()
        nx, ny = x + math.cos(angle) * length, y + math.sin(angle) * length
        colour = ramp(np.array([1 - level / depth], F), colours[1:])[0]
        draw.line([(x, y), (nx, ny)], fill=_rgb(colour), width=max(1, int(width)))
        if level > 0:
            jitter = rng.normal(0, 0.08, 2)
            stack.append(
                (nx, ny, angle - spread + jitter[0], length * ratio, width * 0.7, level - 1)
            )
            stack.append(
                (nx, ny, angle + spread + jitter[1], length * ratio, width * 0.7, level - 1)
            )
    return _from_pil(image)


def dragon(frame: Frame, colours: np.ndarray) -> np.ndarray:
    """Heighway dragon curves (2 or 4 copies turning about a point), coloured along length."""
    rng = frame.rng("dragon")
    h, w = frame.height, frame.width
    image = _to_pil(_background(frame, colours))
    draw = ImageDraw.Draw(image)
    order = 10 + round(frame.texture * 5)
    turns = np.zeros(0, dtype=np.int8)
    for _ in range(order):
        turns = np.concatenate([turns, [1], -turns[::-1]])
    heading = np.concatenate([[0], np.cumsum(turns)]) % 4
    steps = np.array([(1, 0), (0, 1), (-1, 0), (0, -1)], dtype=np.float64)[heading]
    path = np.concatenate([[[0.0, 0.0]], np.cumsum(steps, axis=0)])
    copies = 2 if rng.random() < 0.5 else 4
    span = np.abs(path).max() * 2.2
    scale = min(w, h) / span
    base_angle = rng.random() * math.tau
    width = max(1, int(scale * 0.45))
    chunks = 96
    for k in range(copies):
        a = base_angle + k * math.tau / copies
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        pts = path @ rot.T * scale + np.array([w / 2, h / 2])
        for i, part in enumerate(np.array_split(np.arange(len(pts)), chunks)):
            seg = pts[max(part[0] - 1, 0) : part[-1] + 1]
            colour = ramp(np.array([(i / chunks + k / copies) % 1.0], F), colours[1:])[0]
            draw.line([tuple(p) for p in seg.tolist()], fill=_rgb(colour), width=width)
    return _from_pil(image)
