"""Styles as a caller sees them: the server's (built-in and operator files) and its own.

A caller's own styles live in the job database per API key (:mod:`workers.db.styles`; one
shared owner when auth is off). A request naming one has it inlined into the job's request
as a style object (fractal.styles.Style.inline): the worker needs no database lookup, and a
later edit does not change a queued job. Another key's style is as unknown as any.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.errors import invalid_request
from api.schemas import LoraRef, StyleInfo, no_bools
from fractal import InvalidRequestError, StyleLibrary
from fractal.controls import normalise_lighting
from fractal.engine.paint import EFFECTS
from fractal.loras import MAX_LORAS, is_hub_id
from fractal.styles import Style
from fractal.styles.library import MAX_STYLE_NAME_CHARS, MAX_TEMPLATE_CHARS
from fractal.validation import MAX_STEPS
from workers.db import Database
from workers.db import styles as style_store
from workers.settings import Settings

__all__ = ["MAX_STYLE_BODY_BYTES", "CallerStyles", "StyleBody", "check_style_body",
           "operator_styles", "source_of", "stored_style", "style_info"]

logger = logging.getLogger(__name__)

MAX_STYLE_BODY_BYTES = 64 * 1024  # two 2,000-character templates and eight LoRAs fit easily


class StyleBody(BaseModel):
    """POST /styles, PUT /styles/{name}: a style preset of the caller's own."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    name: str | None = Field(default=None, max_length=MAX_STYLE_NAME_CHARS,
                             description="1-64 printable characters, without '/'; unique "
                                         "(any case) among this key's and the server's "
                                         "styles. PUT: optional, must match the path's.")
    prompt: str = Field(max_length=MAX_TEMPLATE_CHARS,
                        description="The template: must hold `{prompt}`, where the "
                                    "request's prompt goes.")
    negative_prompt: str | None = Field(default=None, max_length=MAX_TEMPLATE_CHARS)
    description: str | None = Field(default=None, max_length=500)
    effect: str | None = Field(default=None, max_length=64,
                               description="The built-in engine's painterly post-process: "
                                           f"one of {', '.join(EFFECTS)}.")
    palette: list[str] | None = Field(default=None, max_length=16,
                                      description="Colour names or hex codes.")
    lighting: str | None = Field(default=None, max_length=64)
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    guidance: float | None = Field(default=None, ge=0, le=100)
    strength: float | None = Field(default=None, ge=0, le=1)
    loras: list[LoraRef] | None = Field(default=None, max_length=MAX_LORAS,
                                        description="LoRAs the style applies on diffusion "
                                                    "models, by name from GET /loras.")

    @field_validator("steps", "guidance", "strength", mode="before")
    @classmethod
    def _no_bools(cls, value: Any) -> Any:
        return no_bools(value)


def _refusal(exc: InvalidRequestError, prefix: str = "style.") -> RequestValidationError:
    """The library's ``style.prompt`` error as a 422 at ``["body", "prompt"]``."""
    return invalid_request(exc, rename={exc.argument: exc.argument.removeprefix(prefix)})


def check_style_body(body: StyleBody, name: str | None, lora_hub: bool) -> Style:
    """The body as a style, checked by the library (``Style.inline``) and against what the
    server can apply: an engine effect it has, a lighting preset, no hub LoRA when the
    server takes none. A 422 naming the body's field."""
    table = body.model_dump(exclude_none=True)
    if name is not None:
        table["name"] = name
    try:
        style = Style.inline(table)
        if style.effect is not None and style.effect not in EFFECTS:
            raise InvalidRequestError("style.effect", style.effect, "is not an engine effect",
                                      choices=EFFECTS)
        normalise_lighting(style.lighting)
        for index, lora in enumerate(style.loras):
            if is_hub_id(lora.name) and not lora_hub:
                raise InvalidRequestError(f"style.loras[{index}].name", lora.name,
                                          "is a hub id; this server takes LoRAs from its "
                                          "LoRA folder only (GET /loras)")
    except InvalidRequestError as exc:
        if exc.argument == "lighting":
            exc = InvalidRequestError("style.lighting", exc.value, exc.reason,
                                      choices=exc.choices)
        raise _refusal(exc) from None
    return style


def stored_style(table: dict[str, Any]) -> Style | None:
    """A stored style, read back; None (logged) if it no longer passes the library's checks
    (a limit tightened since it was saved): unusable, but never a 500."""
    try:
        return Style.inline(table)
    except InvalidRequestError as exc:
        logger.warning("stored style %r is no longer valid: %s", table.get("name"), exc)
        return None


def source_of(style: Style) -> str:
    if style.source == "builtin":
        return "builtin"
    return "user" if style.source == "inline" else "operator"


def style_info(style: Style) -> StyleInfo:
    return StyleInfo(name=style.name, description=style.description, effect=style.effect,
                     template=style.prompt, negative_prompt=style.negative_prompt,
                     palette=list(style.palette) if style.palette else None,
                     lighting=style.lighting, steps=style.steps, guidance=style.guidance,
                     strength=style.strength, source=source_of(style),  # type: ignore[arg-type]
                     loras=[LoraRef(name=spec.name, weight=spec.weight)
                            for spec in style.loras])


def operator_styles(settings: Settings) -> StyleLibrary:
    """The built-in styles and the operator's files (``styles_files``); a file that does not
    load stops the server at start, naming it."""
    library = StyleLibrary()
    for path in settings.styles_files:
        library.load(path)
    return library


class CallerStyles:
    """The server's styles plus one caller's own, for one request. The server's names come
    first: a caller cannot create a style by one of them (409), and one an operator adds
    later shadows the caller's. Blocking (reads the database); each name is read once."""

    def __init__(self, library: StyleLibrary, database: Database | None,
                 owner: str | None) -> None:
        self.library = library
        self.database = database
        self.owner = owner
        self._own: dict[str, Style | None] = {}

    def own(self, name: str) -> Style | None:
        """The caller's own style by this name (any case), or None."""
        key = style_store.fold(name)
        if key not in self._own:
            self._own[key] = None
            if self.database is not None:
                with self.database.session() as session:
                    row = style_store.get_style(session, self.owner, name)
                    if row is not None:
                        self._own[key] = stored_style(row.style)
        return self._own[key]

    def server(self, name: str) -> Style | None:
        try:
            return self.library.get(name)
        except InvalidRequestError:
            return None

    def get(self, name: str) -> Style:
        """A style by name; an unknown one (another key's too) is the library's error,
        listing the server's names."""
        if not isinstance(name, str):
            return self.library.get(name)
        found = self.server(name) or self.own(name)
        return found if found is not None else self.library.get(name)

    def for_request(self, name: str) -> str | dict[str, Any]:
        """What a job's request holds for ``style``: a built-in's name as it is; an
        operator's style (from a file only the API reads) or the caller's own as its object."""
        server = self.server(name)
        if server is not None:
            return name if server.source == "builtin" else server.to_table()
        own = self.own(name)
        if own is None:
            self.library.get(name)  # raises: a 422 listing the valid names
        assert own is not None
        return own.to_table()

    def __iter__(self) -> Iterator[Style]:
        return iter(self.library)
