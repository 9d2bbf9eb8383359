"""Lighting presets, colour palettes and texture: parsed once, used by every backend.

The built-in engine honours these directly; for diffusion models they become prompt fragments,
since a text encoder is the only way in.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import ImageColor

from fractal.errors import InvalidRequestError

__all__ = [
    "LIGHTING_PROMPTS",
    "MAX_COLORS",
    "color_name",
    "lighting_names",
    "normalise_lighting",
    "parse_colors",
    "prompt_fragments",
]

RGB = tuple[int, int, int]
MAX_COLORS = 16

# Every name here is also a preset of the engine (fractal.engine.scene.LIGHTING_PRESETS).
LIGHTING_PROMPTS: dict[str, str] = {
    "sunrise": "at sunrise, soft pink and gold morning light, low sun",
    "morning": "in fresh morning light, clear soft sunlight",
    "noon": "at noon, bright overhead sunlight, crisp shadows",
    "afternoon": "in warm afternoon light",
    "golden hour": "during golden hour, warm low golden sunlight, long shadows",
    "sunset": "at sunset, orange and crimson sky, glowing horizon",
    "dusk": "at dusk, blue hour, fading purple light",
    "night": "at night, dark sky, moonlit, stars",
    "moonlight": "in cold silver moonlight, night",
    "overcast": "under an overcast sky, diffuse flat light",
    "studio": "studio lighting, softbox key light, clean background light",
    "dramatic": "dramatic lighting, strong chiaroscuro, high contrast",
    "soft": "soft diffuse lighting, gentle shadows",
}


def lighting_names() -> tuple[str, ...]:
    return tuple(LIGHTING_PROMPTS)


def normalise_lighting(name: str | None) -> str | None:
    """``"Golden_Hour"`` → ``"golden hour"``; unknown names are an error listing the presets."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise InvalidRequestError("lighting", name, "must be a preset name")
    key = " ".join(name.replace("_", " ").replace("-", " ").lower().split())
    if key not in LIGHTING_PROMPTS:
        raise InvalidRequestError("lighting", name, "is not a lighting preset",
                                  choices=LIGHTING_PROMPTS)
    return key


def parse_colors(colors: Sequence[str] | str | None) -> list[RGB] | None:
    """Hex (``#f80``, ``#ff8800``) or CSS colour names → RGB tuples."""
    if colors is None:
        return None
    if isinstance(colors, str):
        colors = [part for part in colors.split(",") if part.strip()]
    if not isinstance(colors, Sequence) or not colors:
        raise InvalidRequestError("colors", colors, "must be a non-empty list of colours")
    if len(colors) > MAX_COLORS:
        raise InvalidRequestError("colors", colors, f"may hold at most {MAX_COLORS} colours")
    parsed: list[RGB] = []
    for item in colors:
        if not isinstance(item, str):
            raise InvalidRequestError("colors", item, "must be a hex code or a CSS colour name")
        text = item.strip()
        try:
            rgb = ImageColor.getrgb(text)
        except ValueError:
            raise InvalidRequestError(
                "colors", item, "is not a colour (use #rrggbb, #rgb or a CSS name like 'teal')"
            ) from None
        parsed.append((rgb[0], rgb[1], rgb[2]))
    return parsed


def color_name(rgb: RGB) -> str:
    """The nearest CSS colour name: a text encoder knows "crimson", not "#dc143c"."""
    best, best_distance = "black", float("inf")
    for name in ImageColor.colormap:
        r, g, b = ImageColor.getrgb(name)[:3]
        # Weighted RGB distance ("redmean"): cheap and close to perceived difference.
        mean_red = (r + rgb[0]) / 2
        distance = ((2 + mean_red / 256) * (r - rgb[0]) ** 2 + 4 * (g - rgb[1]) ** 2
                    + (2 + (255 - mean_red) / 256) * (b - rgb[2]) ** 2)
        if distance < best_distance:
            best, best_distance = name, distance
    return best


def _texture_fragment(texture: float) -> str | None:
    if texture < 0.25:
        return "smooth, minimal detail, clean simple shapes"
    if texture > 0.75:
        return "intricate, highly detailed, fine texture"
    return None


def prompt_fragments(
    *, lighting: str | None, colors: Sequence[RGB] | None, texture: float | None
) -> list[str]:
    """What a diffusion prompt gains from the controls, in a stable order."""
    fragments: list[str] = []
    if lighting is not None:
        fragments.append(LIGHTING_PROMPTS[lighting])
    if colors:
        names = list(dict.fromkeys(color_name(rgb) for rgb in colors))
        fragments.append("colour palette of " + ", ".join(names))
    if texture is not None and (fragment := _texture_fragment(texture)) is not None:
        fragments.append(fragment)
    return fragments
