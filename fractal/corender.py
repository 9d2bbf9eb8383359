"""Co-rendering: which plans can share one pipeline call (same size, steps, guidance, sampler
and input kind). Not to be confused with batches, the service's many-jobs-at-once resource.

Prompts, seeds, styles and input images may all differ within a call; what the denoising loop
runs in lockstep may not.
"""

from __future__ import annotations

from collections.abc import Mapping

from fractal.plan import RenderPlan

__all__ = ["compatibility_key", "group_plans"]


def compatibility_key(plan: RenderPlan) -> tuple[object, ...]:
    return (plan.init_image is None, plan.width, plan.height, plan.steps, plan.guidance,
            plan.scheduler, plan.strength, plan.hires, plan.input_type == "upscale",
            plan.init_image.size if plan.init_image is not None else None,
            # Adapters are set on the pipeline for a whole call: one reference and one set of
            # controls per group (their images may differ only where the pipeline takes a
            # batch of them, which they do not: same hashes).
            tuple(sorted(plan.style_reference.describe().items())) if plan.style_reference
            else None,
            tuple(tuple(sorted(unit.describe().items())) for unit in plan.controls),
            # Masks may differ within a call (an inpainting pipeline takes one per image), but
            # "masked" renders each a crop of its own size: those render alone.
            None if plan.mask is None and plan.expand is None else
            (plan.inpaint_area, plan.mask_blur, plan.expand,
             id(plan) if plan.inpaint_area == "masked" else None),
            # LoRAs are switched for a whole call: one set of LoRAs and weights per group.
            tuple(sorted((lora.name.casefold(), lora.weight) for lora in plan.loras)))


def group_plans(plans: Mapping[int, RenderPlan]) -> list[list[int]]:
    """Indices of compatible plans, grouped, each group in the order the plans came."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for index, plan in plans.items():
        groups.setdefault(compatibility_key(plan), []).append(index)
    return list(groups.values())
