"""The API's schemas for LoRAs and styles (GET /styles, a request's ``loras``), and the
number check every body shares; :mod:`api.schemas` re-exports them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fractal.loras import MAX_LORA_WEIGHT
from fractal.loras import MAX_NAME_CHARS as MAX_LORA_NAME_CHARS

__all__ = ["LoraRef", "StyleInfo", "StyleList", "no_bools"]


def no_bools(value: Any) -> Any:
    """For number fields: pydantic's lax mode reads true as 1, but a boolean width is a
    mistake, not a size."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


class LoraRef(BaseModel):
    """A LoRA a request or a style applies: a file's name in the server's LoRA folder
    (GET /loras), and its weight."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    name: str = Field(max_length=MAX_LORA_NAME_CHARS,
                      description="A LoRA file's name in the server's LoRA folder (GET /loras).")
    weight: float = Field(default=1.0, ge=-MAX_LORA_WEIGHT, le=MAX_LORA_WEIGHT,
                          description="How strongly it applies; 0 is not at all, negative "
                                      "inverts it. Default 1.")

    @field_validator("weight", mode="before")
    @classmethod
    def _no_bools(cls, value: Any) -> Any:
        return no_bools(value)


class StyleInfo(BaseModel):
    name: str
    description: str
    effect: str | None
    template: str
    negative_prompt: str
    palette: list[str] | None
    lighting: str | None
    steps: int | None
    guidance: float | None
    strength: float | None
    source: Literal["builtin", "operator", "user"] = Field(
        default="builtin", description="`builtin`, `operator` (the server's style files) or "
        "`user` (this key's own, POST /styles).")
    loras: list[LoraRef] = Field(default_factory=list, description="LoRAs the style applies "
                                 "on diffusion models (the built-in engine skips them).")


class StyleList(BaseModel):
    styles: list[StyleInfo]
