"""What each served model takes beyond a prompt: a style reference, which control types.

Read without loading anything: the built-in engine says it itself; a diffusers model's family
comes from its folder's configs, or from the local Hugging Face cache for a hub id, and the
operator's ``adapters`` setting says what that family has. When the API cannot read a model's
family (a hub id not cached here, a folder only the workers see), it does not guess: the
worker's own check ends such a job, naming the field.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.errors import field_error
from fractal.adapters import family_of_folder, parse_adapters
from fractal.backends.engine import EngineBackend
from fractal.naming import looks_like_path
from fractal.request import GenerationRequest
from workers.settings import Settings

__all__ = ["Capabilities", "capabilities_of", "check_capabilities"]

logger = logging.getLogger(__name__)

BUILT_IN = "fractal"


@dataclass(frozen=True)
class Capabilities:
    family: str | None  # the adapters' model family; None for the engine or when unknown
    known: bool  # False: the API could not tell; the worker decides
    style_reference: bool = False
    controls: list[str] = field(default_factory=list)


def _cached_folder(repo_id: str) -> Path | None:
    """The local Hugging Face cache's snapshot of a hub model, if its model_index.json is
    there (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "model_index.json")
    except Exception as exc:  # a malformed id, an unreadable cache: not known here
        logger.debug("no cached model_index.json for %s: %s", repo_id, exc)
        return None
    return Path(found).parent if isinstance(found, str) else None


def _family(model: str) -> str | None:
    if looks_like_path(model):
        return family_of_folder(model)
    folder = _cached_folder(model)
    return family_of_folder(folder) if folder is not None else None


def capabilities_of(model: str, settings: Settings) -> Capabilities:
    """A served model's capabilities, as far as the API can read them. Blocking (files)."""
    if model == BUILT_IN:
        described = EngineBackend().capabilities()
        return Capabilities(None, True, bool(described["style_reference"]),
                            list(described["controls"]))
    family = _family(model)
    if family is None:
        return Capabilities(None, False)
    adapters = parse_adapters(settings.adapters or None).get(family)
    described: dict[str, Any] = adapters.describe() if adapters is not None else \
        {"style_reference": False, "controls": []}
    return Capabilities(family, True, bool(described["style_reference"]),
                        list(described["controls"]))


def check_capabilities(request: GenerationRequest, settings: Settings) -> None:
    """A 422 naming ``style_image`` or ``control[i].type`` when the request's model is known
    not to take it. Blocking."""
    if request.style_image is None and not request.control:
        return
    model = request.model or settings.model
    capabilities = capabilities_of(model, settings)
    if not capabilities.known:
        return
    where = "the built-in engine" if model == BUILT_IN else \
        f"model family {capabilities.family}"
    if request.style_image is not None and not capabilities.style_reference:
        raise field_error(["body", "style_image"], f"{where} takes no style reference on this "
                          "server (the operator configures an IP-Adapter per family in the "
                          "`adapters` setting)", "<image>")
    for index, unit in enumerate(request.control or ()):
        kind = unit.get("type") if isinstance(unit, dict) else None
        if kind not in capabilities.controls:
            configured = ", ".join(capabilities.controls) or "none"
            raise field_error(["body", "control", index, "type"],
                              f"{where} has no `{kind}` control on this server (configured: "
                              f"{configured})", kind, choices=capabilities.controls)
