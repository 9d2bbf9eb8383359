"""Renderers behind :class:`~fractal.Spec2Fractal`: the built-in engine and diffusers."""

from fractal.backends.base import Backend, StepCallback

__all__ = ["Backend", "StepCallback"]
