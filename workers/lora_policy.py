"""The operator's LoRA policy, applied by the worker too: with ``lora_hub`` off, a job may
not make this worker download a LoRA from the hub, whoever queued it (the API refuses such
requests first; a job written by other means meets the same rule here)."""

from __future__ import annotations

from fractal.errors import InvalidRequestError
from fractal.loras import check_loras, is_hub_id, parse_prompt_loras
from fractal.request import GenerationRequest
from fractal.styles import Style

__all__ = ["refuse_hub_loras"]


def refuse_hub_loras(request: GenerationRequest) -> None:
    """InvalidRequestError naming the first hub id among the request's LoRAs (``loras``,
    prompt tags, an inline style's)."""
    _, tags = parse_prompt_loras(request.prompt)
    named = [(f"loras[{index}].name", spec.name)
             for index, spec in enumerate(check_loras(request.loras))]
    named += [("prompt", spec.name) for spec in tags]
    if isinstance(request.style, dict):
        named += [(f"style.loras[{index}].name", spec.name)
                  for index, spec in enumerate(Style.inline(request.style).loras)]
    for field, name in named:
        if is_hub_id(name):
            raise InvalidRequestError(field, name, "is a hub id; this server takes LoRAs from "
                                      "its LoRA folder only (SPEC2FRACTAL_LORA_HUB is off)")
