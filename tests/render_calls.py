"""Counting a model's pipeline calls: how many plans each ``render_many`` call rendered."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fractal import Spec2Fractal

__all__ = ["render_calls"]


@contextmanager
def render_calls(model: Spec2Fractal) -> Iterator[list[int]]:
    """Within the block, each call to the model's backend ``render_many`` appends its number
    of plans to the yielded list; the backend is as it was afterwards."""
    calls: list[int] = []
    backend = model.backend
    original = backend.render_many

    def counted(plans, on_step):  # type: ignore[no-untyped-def]
        calls.append(len(plans))
        return original(plans, on_step)

    backend.render_many = counted  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        del backend.render_many
