"""The built-in engine's text-to-image: a prompt vocabulary and fractal scene generators.

:func:`parse_prompt` turns a prompt into a :class:`Scene` (see ``docs/engine.md`` for the
vocabulary); :func:`render_scene` draws it — fBm and ridged-multifractal terrain, noise
clouds, reflective water, L-system and IFS plants, atmospheric perspective — or, for prompts
that name no landscape, abstract fractal art (escape-time sets, flames, spirals, galaxies,
Koch snowflakes, fractal trees, dragon curves).
"""

from __future__ import annotations

from fractal.engine.scene.compose import render_scene
from fractal.engine.scene.lighting import LIGHTING_PRESETS
from fractal.engine.scene.vocabulary import Scene, parse_prompt

__all__ = ["LIGHTING_PRESETS", "Scene", "parse_prompt", "render_scene"]
