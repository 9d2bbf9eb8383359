"""Loading style presets from TOML and looking them up by name, case-insensitively."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fractal.errors import InvalidRequestError

__all__ = ["Style", "StyleLibrary"]

_FIELDS = {"description", "prompt", "negative_prompt", "effect", "palette", "guidance", "steps",
           "strength", "lighting"}


@dataclass(frozen=True)
class Style:
    name: str
    description: str = ""
    prompt: str = "{prompt}"
    negative_prompt: str = ""
    effect: str | None = None
    palette: tuple[str, ...] | None = None
    guidance: float | None = None
    steps: int | None = None
    strength: float | None = None
    lighting: str | None = None

    def apply(self, prompt: str) -> str:
        """The user's prompt inside the template; an empty prompt leaves just the style words."""
        if not prompt:
            return self.prompt.replace("{prompt}, ", "").replace("{prompt}", "").strip(", ")
        return self.prompt.replace("{prompt}", prompt)

    @classmethod
    def from_table(cls, name: str, table: Mapping[str, Any], source: str) -> Style:
        unknown = set(table) - _FIELDS
        if unknown:
            raise InvalidRequestError(
                "styles", source, f"style {name!r} has unknown keys {sorted(unknown)}",
                choices=_FIELDS,
            )
        data = dict(table)
        if "palette" in data:
            data["palette"] = tuple(data["palette"])
        template = data.get("prompt", "{prompt}")
        if "{prompt}" not in template:
            raise InvalidRequestError("styles", source,
                                      f"style {name!r} prompt must contain {{prompt}}")
        return cls(name=name, **data)


class StyleLibrary:
    """The built-in presets plus any loaded from files; later files override by name."""

    def __init__(self) -> None:
        self._styles: dict[str, Style] = {}
        builtin = resources.files("fractal.styles").joinpath("builtin.toml").read_text("utf-8")
        self._add_toml(builtin, source="builtin.toml")

    def load(self, path: str | Path) -> None:
        """Add the styles of a TOML file (same shape as the built-in ``builtin.toml``)."""
        file = Path(path)
        try:
            text = file.read_text("utf-8")
        except OSError as exc:
            raise InvalidRequestError("styles", str(path), f"cannot be read: {exc.strerror}") \
                from None
        self._add_toml(text, source=str(path))

    def _add_toml(self, text: str, *, source: str) -> None:
        try:
            tables = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidRequestError("styles", source, f"is not valid TOML: {exc}") from None
        for name, table in tables.items():
            if not isinstance(table, dict):
                raise InvalidRequestError("styles", source, f"entry {name!r} must be a table")
            style = Style.from_table(name, table, source)
            self._styles[name.casefold()] = style

    def get(self, name: str) -> Style:
        if not isinstance(name, str):
            raise InvalidRequestError("style", name, "must be a style name")
        try:
            return self._styles[name.strip().casefold()]
        except KeyError:
            raise InvalidRequestError("style", name, "is not a known style",
                                      choices=self.names()) from None

    def names(self) -> list[str]:
        return sorted(style.name for style in self._styles.values())

    def __iter__(self) -> Iterator[Style]:
        return iter(sorted(self._styles.values(), key=lambda style: style.name.casefold()))

    def __len__(self) -> int:
        return len(self._styles)
