"""The memory guard of a loaded model (fractal.memory) and the check of its limit, as
``Spec2Fractal`` sets them up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fractal.backends.base import Backend
from fractal.errors import InvalidRequestError

if TYPE_CHECKING:
    from fractal.memory import MemoryGuard

__all__ = ["check_memory_limit", "memory_guard"]


def check_memory_limit(memory_limit: Any) -> None:
    if memory_limit is not None and (isinstance(memory_limit, bool)
                                     or not isinstance(memory_limit, int) or memory_limit <= 0):
        raise InvalidRequestError("memory_limit", memory_limit,
                                  "must be a positive number of bytes, or None for the "
                                  "device's free memory")


def memory_guard(backend: Backend, memory_limit: int | None) -> MemoryGuard | None:
    """The memory guard of a diffusion model; None for the built-in engine: its numpy
    working set is a few tens of bytes a pixel (peak RSS 0.52 GB at 4096², the largest size
    it takes, measured), which any machine that runs the service has."""
    pipeline = getattr(backend, "text_pipeline", None)
    if pipeline is None:
        return None
    from dataclasses import replace

    from fractal.memory import MemoryGuard, profile_of

    profile = profile_of(pipeline)
    offload = getattr(backend, "offload", "none")
    if offload in ("model", "sequential"):  # most weights stay in RAM (fractal.backends.speed)
        from fractal.backends.speed import resident_weight_bytes

        profile = replace(profile, weight_bytes=resident_weight_bytes(pipeline, offload))
    return MemoryGuard(profile, device=backend.device,  # type: ignore[attr-defined]
                       limit=memory_limit, multiple=backend.defaults.size_multiple,
                       passes=backend.passes)
