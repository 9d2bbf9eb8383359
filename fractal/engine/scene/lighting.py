"""Lighting presets: sun position, sky gradient, brightness and colour temperature."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fractal.engine.scene.vocabulary import Scene

Colour = tuple[float, float, float]

DEFAULT_LIGHTING = "afternoon"


@dataclass(frozen=True)
class Light:
    """One lighting preset. Colours are linear-ish RGB in 0..1."""

    name: str
    sun_elevation: float  # 0 = sun on the horizon, 1 = high; below 0 = sun set
    zenith: Colour  # sky colour at the top of the picture
    horizon: Colour  # sky colour at the horizon
    sun: Colour  # colour of direct light (and of the sun disc)
    haze: Colour  # colour distant things fade into
    brightness: float  # overall exposure multiplier
    warmth: float  # -1 cold (blue) .. +1 warm (orange) white balance
    contrast: float = 1.0
    stars: float = 0.0  # star visibility
    moon: bool = False
    glow: float = 1.0  # size of the halo around the sun
    cloud_cover: float = 0.0  # minimum cloud cover this light implies

    @property
    def sun_visible(self) -> bool:
        return self.sun_elevation > -0.02 and not self.moon and self.cloud_cover < 0.6

    @property
    def ambient(self) -> float:
        """How much light reaches the land (0 night .. 1 noon)."""
        return float(np.clip(0.35 + 0.9 * self.sun_elevation, 0.4 if self.moon else 0.12, 1.0))


PRESETS: dict[str, Light] = {
    light.name: light
    for light in (
        Light(
            "sunrise",
            0.05,
            (0.30, 0.36, 0.62),
            (1.00, 0.66, 0.45),
            (1.0, 0.80, 0.55),
            (0.95, 0.74, 0.66),
            0.92,
            0.45,
            glow=1.6,
        ),
        Light(
            "morning",
            0.30,
            (0.34, 0.54, 0.86),
            (0.80, 0.87, 0.93),
            (1.0, 0.96, 0.86),
            (0.80, 0.86, 0.92),
            1.0,
            0.1,
        ),
        Light(
            "noon",
            0.85,
            (0.18, 0.42, 0.86),
            (0.70, 0.83, 0.96),
            (1.0, 1.0, 0.97),
            (0.78, 0.86, 0.95),
            1.12,
            -0.02,
            contrast=1.05,
            glow=0.8,
        ),
        Light(
            "afternoon",
            0.50,
            (0.24, 0.48, 0.84),
            (0.78, 0.85, 0.92),
            (1.0, 0.95, 0.85),
            (0.80, 0.85, 0.90),
            1.05,
            0.12,
        ),
        Light(
            "golden hour",
            0.14,
            (0.36, 0.46, 0.72),
            (1.00, 0.80, 0.48),
            (1.0, 0.82, 0.50),
            (0.98, 0.82, 0.62),
            0.98,
            0.6,
            glow=1.5,
        ),
        Light(
            "sunset",
            0.03,
            (0.20, 0.18, 0.42),
            (1.00, 0.46, 0.20),
            (1.0, 0.58, 0.28),
            (0.88, 0.50, 0.40),
            0.85,
            0.8,
            glow=1.8,
        ),
        Light(
            "dusk",
            -0.06,
            (0.08, 0.09, 0.26),
            (0.70, 0.42, 0.50),
            (0.6, 0.45, 0.6),
            (0.42, 0.34, 0.48),
            0.62,
            0.1,
            stars=0.3,
        ),
        Light(
            "night",
            -0.5,
            (0.015, 0.03, 0.09),
            (0.17, 0.23, 0.38),
            (0.62, 0.70, 0.9),
            (0.13, 0.17, 0.28),
            0.72,
            -0.5,
            stars=1.0,
            moon=True,
        ),
        Light(
            "moonlight",
            -0.4,
            (0.03, 0.06, 0.15),
            (0.24, 0.31, 0.46),
            (0.75, 0.82, 1.0),
            (0.2, 0.25, 0.36),
            0.76,
            -0.6,
            stars=0.6,
            moon=True,
        ),
        Light(
            "overcast",
            0.40,
            (0.56, 0.58, 0.62),
            (0.80, 0.81, 0.83),
            (0.85, 0.86, 0.88),
            (0.76, 0.78, 0.80),
            0.88,
            -0.15,
            contrast=0.85,
            cloud_cover=0.85,
        ),
        Light(
            "studio",
            0.55,
            (0.42, 0.43, 0.46),
            (0.88, 0.88, 0.88),
            (1.0, 1.0, 1.0),
            (0.86, 0.86, 0.87),
            1.05,
            0.0,
            contrast=1.1,
            glow=0.6,
        ),
        Light(
            "dramatic",
            0.10,
            (0.06, 0.08, 0.18),
            (0.92, 0.50, 0.24),
            (1.0, 0.72, 0.42),
            (0.55, 0.42, 0.40),
            0.85,
            0.35,
            contrast=1.4,
            glow=1.2,
            cloud_cover=0.4,
        ),
        Light(
            "soft",
            0.35,
            (0.58, 0.68, 0.86),
            (0.95, 0.90, 0.88),
            (1.0, 0.95, 0.9),
            (0.92, 0.90, 0.90),
            1.02,
            0.1,
            contrast=0.75,
            glow=1.4,
        ),
    )
}
LIGHTING_PRESETS: tuple[str, ...] = tuple(PRESETS)


def resolve(lighting: str | None, scene: Scene) -> Light:
    """The explicit preset, else the prompt's time of day, else :data:`DEFAULT_LIGHTING`."""
    if lighting is not None:
        key = " ".join(lighting.replace("_", " ").lower().split())
        if key not in PRESETS:
            raise ValueError(f"unknown lighting {lighting!r}; choose from {LIGHTING_PRESETS}")
        return PRESETS[key]
    if scene.time_of_day is not None:
        return PRESETS[scene.time_of_day]
    if "moon" in scene.sky or "stars" in scene.sky or "aurora" in scene.sky:
        return PRESETS["night"]
    return PRESETS[DEFAULT_LIGHTING]


def grade(canvas: np.ndarray, light: Light) -> None:
    """Apply the preset's contrast, exposure and white balance in place (float32 0..1)."""
    if light.contrast != 1.0:
        mean = np.float32(canvas.mean())
        canvas -= mean
        canvas *= np.float32(light.contrast)
        canvas += mean
    balance = np.array(
        [1.0 + 0.14 * light.warmth, 1.0 + 0.02 * light.warmth, 1.0 - 0.16 * light.warmth],
        dtype=np.float32,
    )
    canvas *= balance * np.float32(light.brightness)
    np.clip(canvas, 0.0, 1.0, out=canvas)
