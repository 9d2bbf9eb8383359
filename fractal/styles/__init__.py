"""Named style presets: a prompt template, a negative prompt, default parameters and LoRAs,
as data."""

from fractal.styles.library import (
    MAX_STYLE_NAME_CHARS,
    MAX_TEMPLATE_CHARS,
    Style,
    StyleLibrary,
    check_style_name,
)

__all__ = ["MAX_STYLE_NAME_CHARS", "MAX_TEMPLATE_CHARS", "Style", "StyleLibrary",
           "check_style_name"]
