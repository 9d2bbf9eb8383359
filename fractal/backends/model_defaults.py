"""Size, steps and guidance a diffusers model renders best with, read from the model."""

from __future__ import annotations

from typing import Any

from fractal.plan import ModelDefaults

__all__ = ["defaults_for"]

# Few-step distilled models: many steps or classifier-free guidance ruin them.
_FEW_STEP_MARKERS = ("turbo", "lightning", "hyper", "schnell", "lcm")

# (pipeline class name prefix, steps, guidance): the model makers' recommendations.
_FAMILIES = (
    ("Flux", 28, 3.5),
    ("StableDiffusion3", 28, 7.0),
    ("StableDiffusionXL", 30, 5.0),
    ("StableDiffusion", 30, 7.5),
)


def native_size(pipeline: Any) -> int:
    scale = getattr(pipeline, "vae_scale_factor", 8)
    sample = getattr(pipeline, "default_sample_size", None)
    if sample is None:
        denoiser = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
        sample = getattr(getattr(denoiser, "config", None), "sample_size", None) or 64
    if isinstance(sample, (tuple, list)):
        sample = sample[0]
    return int(sample) * int(scale)


def size_multiple(pipeline: Any) -> int:
    """Sides the pipeline accepts are multiples of this: its VAE's scale, doubled for the
    transformers that pack 2×2 latent patches (SD3, FLUX)."""
    # At least 8: the request checks (and older pipelines) want multiples of 8.
    scale = max(8, int(getattr(pipeline, "vae_scale_factor", 8)))
    packs = type(pipeline).__name__.startswith(("Flux", "StableDiffusion3"))
    return scale * 2 if packs else scale


def defaults_for(model: str, pipeline: Any) -> ModelDefaults:
    side = native_size(pipeline)
    class_name = type(pipeline).__name__
    steps, guidance = 30, 7.5
    for prefix, family_steps, family_guidance in _FAMILIES:
        if class_name.startswith(prefix):
            steps, guidance = family_steps, family_guidance
            break
    scheduler = type(pipeline.scheduler).__name__
    if any(marker in model.lower() for marker in _FEW_STEP_MARKERS) or scheduler == "LCMScheduler":
        steps, guidance = 4, (1.0 if scheduler == "LCMScheduler" else 0.0)
    return ModelDefaults(width=side, height=side, steps=steps, guidance=guidance,
                         size_multiple=size_multiple(pipeline))
