"""Style presets: loaded from TOML, looked up by name case-insensitively, or given inline.

A style is a prompt template with defaults, and LoRAs to apply with it (on diffusion models;
the built-in engine skips them). An inline style is the same table as a TOML entry plus its
``name``: how the service hands a caller's own style (stored per API key) to a worker.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fractal.errors import InvalidRequestError
from fractal.loras import LoraSpec, check_loras

__all__ = ["MAX_STYLE_NAME_CHARS", "MAX_TEMPLATE_CHARS", "Style", "StyleLibrary",
           "check_style_name"]

_FIELDS = {"description", "prompt", "negative_prompt", "effect", "palette", "guidance", "steps",
           "strength", "lighting", "loras"}
MAX_STYLE_NAME_CHARS = 64
MAX_TEMPLATE_CHARS = 2000  # prompt and negative prompt each; description: 500
_TEXT_LIMITS = {"prompt": MAX_TEMPLATE_CHARS, "negative_prompt": MAX_TEMPLATE_CHARS,
                "description": 500, "effect": 64, "lighting": 64}


def check_style_name(name: Any, field: str = "name") -> str:
    """A style's name: 1-64 printable characters, not blank."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequestError(field, name, "must be a style name")
    name = name.strip()
    if len(name) > MAX_STYLE_NAME_CHARS or not name.isprintable() \
            or any("\ud800" <= char <= "\udfff" for char in name) or "/" in name:
        raise InvalidRequestError(field, name, f"must be 1 to {MAX_STYLE_NAME_CHARS} printable "
                                  "characters, without '/'")
    return name


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
    loras: tuple[LoraSpec, ...] = ()
    source: str = "builtin"  # "builtin", a TOML file's path, or "inline"

    def apply(self, prompt: str) -> str:
        """The user's prompt inside the template; an empty prompt leaves just the style words."""
        if not prompt:
            return self.prompt.replace("{prompt}, ", "").replace("{prompt}", "").strip(", ")
        return self.prompt.replace("{prompt}", prompt)

    @classmethod
    def from_table(cls, name: str, table: Mapping[str, Any], source: str,
                   field: str = "styles") -> Style:
        """A style from a TOML table or an inline object. ``field`` names what errors point at:
        "styles" (a file, ``source``) or "style" (an inline style: ``style.prompt``, ...)."""
        def refuse(key: str | None, value: Any, reason: str, **extra: Any) -> None:
            if field == "styles":
                raise InvalidRequestError("styles", source, f"style {name!r} {reason}", **extra)
            raise InvalidRequestError(f"{field}.{key}" if key else field, value, reason, **extra)

        unknown = set(table) - _FIELDS
        if unknown:
            key = sorted(unknown)[0]
            refuse(key, table[key], f"has unknown keys {sorted(unknown)}", choices=_FIELDS)
        data = dict(table)
        for key, limit in _TEXT_LIMITS.items():
            value = data.get(key)
            if value is None and key in ("effect", "lighting"):
                continue
            if key in data and not isinstance(value, str):
                refuse(key, value, "must be text")
            if isinstance(value, str) and (len(value) > limit or any(
                    "\ud800" <= char <= "\udfff" for char in value)):
                refuse(key, value[:100], f"must be at most {limit} characters of text")
        if "palette" in data:
            palette = data["palette"]
            if not isinstance(palette, list | tuple) or len(palette) > 16 \
                    or not all(isinstance(color, str) and len(color) <= 32 for color in palette):
                refuse("palette", palette, "must be a list of at most 16 colours")
            data["palette"] = tuple(palette)
        for key, kinds in (("guidance", (int, float)), ("strength", (int, float)),
                           ("steps", (int,))):
            value = data.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
                refuse(key, value, "must be a number")
        try:
            data["loras"] = check_loras(data.get("loras"), f"{field}.loras"
                                        if field != "styles" else "loras")
        except InvalidRequestError as exc:
            if field != "styles":
                raise
            refuse(None, None, f"has {exc.argument} that {exc.reason}")
        template = data.get("prompt", "{prompt}")
        if "{prompt}" not in template:
            refuse("prompt", template, "must contain {prompt}")
        return cls(name=name, source=source, **data)

    @classmethod
    def inline(cls, table: Mapping[str, Any], field: str = "style") -> Style:
        """A style given as an object: ``{"name": ..., "prompt": "... {prompt} ...", ...}``;
        errors name ``style.key``."""
        if not isinstance(table, Mapping):
            raise InvalidRequestError(field, table, "must be a style name or a style object")
        name = check_style_name(table.get("name"), f"{field}.name")
        rest = {key: value for key, value in table.items() if key != "name"}
        return cls.from_table(name, rest, source="inline", field=field)

    def to_table(self) -> dict[str, Any]:
        """The inline form (:meth:`inline` reads it back): set fields only."""
        table: dict[str, Any] = {"name": self.name, "prompt": self.prompt}
        for key in ("description", "negative_prompt", "effect", "guidance", "steps",
                    "strength", "lighting"):
            value = getattr(self, key)
            if value not in (None, ""):
                table[key] = value
        if self.palette:
            table["palette"] = list(self.palette)
        if self.loras:
            table["loras"] = [spec.to_dict() for spec in self.loras]
        return table


class StyleLibrary:
    """The built-in presets plus any loaded from files; later files override by name."""

    def __init__(self) -> None:
        self._styles: dict[str, Style] = {}
        builtin = resources.files("fractal.styles").joinpath("builtin.toml").read_text("utf-8")
        self._add_toml(builtin, source="builtin")

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

    def resolve(self, style: str | Mapping[str, Any]) -> Style:
        """A style by name, or an inline style object (see :meth:`Style.inline`)."""
        return Style.inline(style) if isinstance(style, Mapping) else self.get(style)

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
