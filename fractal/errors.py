"""Every exception the library raises, in one place.

Typed by audience: :class:`InvalidRequestError` is the caller's mistake (it is also a
``ValueError``, and its message names the argument and the bad value); :class:`ModelLoadError`
is the operator's (a model that is missing or unsafe to load); :class:`GenerationCancelled` is
not a failure at all, but a render stopped on request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "GenerationCancelled",
    "InvalidRequestError",
    "ModelLoadError",
    "Spec2FractalError",
]


class Spec2FractalError(Exception):
    """Base class of every error raised by Spec-2-Fractal."""


class InvalidRequestError(Spec2FractalError, ValueError):
    """A generation argument is invalid. ``argument`` names it; ``value`` is what was given."""

    def __init__(
        self,
        argument: str,
        value: Any,
        reason: str,
        *,
        choices: Iterable[str] | None = None,
    ) -> None:
        self.argument = argument
        self.value = value
        self.reason = reason
        self.choices = sorted(choices) if choices is not None else None
        # Clipped before repr: repr of a refused 60 MB string would cost a copy of it.
        shown = repr(value[:100] if isinstance(value, (str, bytes)) else value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        message = f"`{argument}` {reason} (got {shown})"
        if self.choices is not None:
            message += "; valid values: " + ", ".join(self.choices)
        super().__init__(message)


class ModelLoadError(Spec2FractalError):
    """The model could not be loaded: not found, not a diffusers pipeline, or not safetensors."""


class GenerationCancelled(Spec2FractalError):
    """A render was stopped between steps by its cancel hook."""

    def __init__(self, step: int, total: int) -> None:
        self.step = step
        self.total = total
        super().__init__(f"generation cancelled at step {step} of {total}")
