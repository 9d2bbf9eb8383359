"""Named style presets: a prompt template, a negative prompt and default parameters, as data."""

from fractal.styles.library import Style, StyleLibrary

__all__ = ["Style", "StyleLibrary"]
