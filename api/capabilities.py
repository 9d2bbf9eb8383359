"""What each served model takes beyond a prompt: a style reference, which control types.

Read without loading anything: the built-in engine says it itself; a diffusers model's family
comes from its folder's configs, or from the local Hugging Face cache for a hub id, and the
operator's ``adapters`` setting says what that family has. When the API cannot read a model's
family (a hub id not cached here, a folder only the workers see), it does not guess: the
worker's own check ends such a job, naming the field.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.errors import field_error, field_loc
from fractal.adapters import family_of_folder, parse_adapters
from fractal.backends.engine import EngineBackend
from fractal.loras import (
    LORA_SUFFIX,
    PlannedLora,
    check_loras,
    is_hub_id,
    merge_loras,
    parse_prompt_loras,
)
from fractal.naming import looks_like_path
from fractal.request import GenerationRequest
from fractal.styles import Style
from workers.settings import Settings

__all__ = ["Capabilities", "capabilities_of", "check_capabilities", "check_lora_support",
           "lora_names"]

logger = logging.getLogger(__name__)

BUILT_IN = "fractal"


@dataclass(frozen=True)
class Capabilities:
    family: str | None  # the adapters' model family; None for the engine or when unknown
    known: bool  # False: the API could not tell; the worker decides
    style_reference: bool = False
    controls: list[str] = field(default_factory=list)
    loras: bool = False  # whether it applies LoRAs (the engine does not; diffusers models do)


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


@functools.cache
def _engine() -> Capabilities:
    # Its own answer, asked once: making an EngineBackend reads the style library.
    described = EngineBackend().capabilities()
    return Capabilities(None, True, bool(described["style_reference"]),
                        list(described["controls"]), bool(described.get("loras")))


def capabilities_of(model: str, settings: Settings) -> Capabilities:
    """A served model's capabilities, as far as the API can read them. Blocking (files)."""
    if model == BUILT_IN:
        return _engine()
    family = _family(model)
    if family is None:
        # Every diffusers model takes LoRAs; whether a file fits is its worker's to say.
        return Capabilities(None, False, loras=True)
    adapters = parse_adapters(settings.adapters or None).get(family)
    described: dict[str, Any] = adapters.describe() if adapters is not None else \
        {"style_reference": False, "controls": []}
    # Every family diffusers loads takes LoRAs (load_lora_weights); whether a given file
    # fits the model is the worker's to say, naming it.
    return Capabilities(family, True, bool(described["style_reference"]),
                        list(described["controls"]), loras=True)


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


def lora_names(folder: Path | None) -> dict[str, str] | None:
    """The LoRA files' names in ``folder``, by their case-folded form; None when this process
    cannot read it (unset, or a folder only the workers see): the workers then decide."""
    if folder is None:
        return None
    try:
        return {path.name.removesuffix(LORA_SUFFIX).casefold():
                path.name.removesuffix(LORA_SUFFIX)
                for path in folder.iterdir() if path.name.endswith(LORA_SUFFIX)}
    except OSError:
        return None


def _field(lora: PlannedLora, prompt_field: str) -> list[str | int]:
    return ["body", prompt_field] if lora.origin == "prompt" else \
        ["body", *field_loc(lora.field)]


def check_lora_support(request: GenerationRequest, settings: Settings,
                       style: Style | None = None, prompt_field: str = "prompt") -> None:
    """A 422 naming ``loras[i].name``, the prompt (a ``<lora:...>`` tag) or
    ``style.loras[i].name`` when a LoRA cannot be applied here: the model takes none (a
    style's are skipped there, not refused), a hub id on a server that takes none, a name
    not in the LoRA folder. ``style``: the request's style, when it names one. Blocking
    (reads the folder)."""
    if style is None and isinstance(request.style, dict):
        style = Style.inline(request.style)
    style_loras = style.loras if style is not None else ()
    asked = check_loras(request.loras)
    _, tags = parse_prompt_loras(request.prompt)
    if not (asked or tags or style_loras):
        return
    planned = merge_loras(asked, tags, style_loras)
    model = request.model or settings.model
    capabilities = capabilities_of(model, settings)
    applies = [lora for lora in planned
               if lora.origin != "style" or not capabilities.known or capabilities.loras]
    if capabilities.known and not capabilities.loras:
        where = "the built-in engine" if model == BUILT_IN else f"model {model}"
        for lora in applies:
            raise field_error(_field(lora, prompt_field), f"is a LoRA, and {where} takes "
                              "none (GET /models: `loras`)", lora.name)
    names = lora_names(settings.lora_dir)
    for lora in applies:
        if is_hub_id(lora.name):
            if not settings.lora_hub:
                raise field_error(_field(lora, prompt_field), "is a hub id; this server takes "
                                  "LoRAs from its LoRA folder only (GET /loras)", lora.name)
        elif names is not None and lora.name.removesuffix(LORA_SUFFIX).casefold() not in names:
            raise field_error(_field(lora, prompt_field), "is not a LoRA in this server's "
                              "LoRA folder (GET /loras)", lora.name,
                              choices=sorted(names.values()))
        elif names is None and settings.lora_dir is None:
            raise field_error(_field(lora, prompt_field), "names a LoRA, but this server has "
                              "no LoRA folder (SPEC2FRACTAL_LORA_DIR)", lora.name)

