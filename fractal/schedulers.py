"""Short sampler names, as people type them, mapped to diffusers scheduler classes."""

from __future__ import annotations

from typing import Any

from fractal.errors import InvalidRequestError

__all__ = ["SCHEDULERS", "check_scheduler", "label_of", "make_scheduler", "scheduler_label"]

# name -> (diffusers class name, extra config, A1111-style label for the `parameters` record)
SCHEDULERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "euler": ("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "euler_karras": ("EulerDiscreteScheduler", {"use_karras_sigmas": True}, "Euler Karras"),
    "heun": ("HeunDiscreteScheduler", {}, "Heun"),
    "lms": ("LMSDiscreteScheduler", {}, "LMS"),
    "dpm2": ("KDPM2DiscreteScheduler", {}, "DPM2"),
    "dpm2_a": ("KDPM2AncestralDiscreteScheduler", {}, "DPM2 a"),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}, "DPM++ 2M"),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True},
                        "DPM++ 2M Karras"),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"},
                     "DPM++ 2M SDE"),
    "dpmpp_sde": ("DPMSolverSinglestepScheduler", {}, "DPM++ SDE"),
    "ddim": ("DDIMScheduler", {}, "DDIM"),
    "pndm": ("PNDMScheduler", {}, "PLMS"),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC"),
    "lcm": ("LCMScheduler", {}, "LCM"),
    "tcd": ("TCDScheduler", {}, "TCD"),
}


def check_scheduler(name: str | None) -> str | None:
    """Normalise a sampler name (``"DPM++ 2M Karras"`` works too) or fail listing them all."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise InvalidRequestError("scheduler", name, "must be a sampler name")
    key = name.strip().lower().replace("++", "pp").replace(" ", "_").replace("-", "_")
    if key in SCHEDULERS:
        return key
    for short, (_, _, label) in SCHEDULERS.items():
        if label.lower() == name.strip().lower():
            return short
    raise InvalidRequestError("scheduler", name, "is not a known sampler", choices=SCHEDULERS)


def make_scheduler(name: str, base_config: Any) -> Any:
    """A new scheduler of kind ``name`` built from the model's own scheduler config."""
    import diffusers  # imported here so validation works without loading torch

    class_name, extra, _ = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(base_config, **extra)


def scheduler_label(name: str) -> str:
    return SCHEDULERS[name][2]


def label_of(scheduler: Any) -> str:
    """The A1111-style label of a scheduler instance (a model's own default, say)."""
    class_name = type(scheduler).__name__
    config = getattr(scheduler, "config", {})
    for candidate, extra, label in SCHEDULERS.values():
        if candidate == class_name and all(config.get(k) == v for k, v in extra.items()):
            return label
    return class_name.removesuffix("Scheduler")
