"""Any diffusers text-to-image pipeline as a backend; image-to-image shares its weights."""

from __future__ import annotations

import inspect
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from fractal.backends.base import PREVIEW_SIDE, StepCallback
from fractal.backends.model_defaults import defaults_for
from fractal.errors import InvalidRequestError, ModelLoadError
from fractal.naming import display_name, looks_like_path
from fractal.plan import RenderPlan
from fractal.schedulers import label_of, make_scheduler, scheduler_label

__all__ = ["DiffusionBackend"]

logger = logging.getLogger(__name__)

# Linear map from SD-family 4-channel latents to RGB: a preview for free, no VAE decode.
_LATENT_RGB = torch.tensor([
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
])


def load_text_pipeline(model: str, dtype: torch.dtype) -> Any:
    from diffusers import AutoPipelineForText2Image

    if looks_like_path(model) and not Path(model).expanduser().is_dir():
        raise ModelLoadError(f"model folder {model!r} does not exist")
    source = str(Path(model).expanduser()) if looks_like_path(model) else model
    try:
        with warnings.catch_warnings():
            # Newer diffusers renamed torch_dtype to dtype; older ones know only torch_dtype.
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            # safetensors only: a pickled checkpoint can run code when it is loaded.
            return AutoPipelineForText2Image.from_pretrained(
                source, torch_dtype=dtype, use_safetensors=True
            )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"could not load diffusers model {model!r}: {exc}. It must be a diffusers folder "
            "(with model_index.json) or a hub id, with .safetensors weights"
        ) from exc


class DiffusionBackend:
    def __init__(self, model: str, *, device: torch.device, dtype: torch.dtype) -> None:
        self.name = display_name(model)
        self.device = device
        logger.info("loading %s on %s (%s)", self.name, device, dtype)
        self.text_pipeline = load_text_pipeline(model, dtype).to(device)
        self.text_pipeline.set_progress_bar_config(disable=True)
        self._image_pipeline: Any = None
        self._default_scheduler = self.text_pipeline.scheduler
        self._schedulers: dict[str, Any] = {}
        self.defaults = defaults_for(model, self.text_pipeline)

    @property
    def image_pipeline(self) -> Any:
        """Image-to-image over the same modules: built on first use, never loaded twice."""
        if self._image_pipeline is None:
            from diffusers import AutoPipelineForImage2Image

            try:
                self._image_pipeline = AutoPipelineForImage2Image.from_pipe(self.text_pipeline)
            except ValueError as exc:
                raise InvalidRequestError(
                    "input_type", "image", f"is not supported by model {self.name!r}: {exc}"
                ) from None
            self._image_pipeline.set_progress_bar_config(disable=True)
        return self._image_pipeline

    def _is_flow_matching(self) -> bool:
        return type(self._default_scheduler).__name__.startswith("FlowMatch")

    def check(self, plan: RenderPlan) -> None:
        if plan.scheduler is not None and self._is_flow_matching():
            raise InvalidRequestError(
                "scheduler", plan.scheduler,
                f"cannot be changed for the flow-matching model {self.name!r}")
        pipeline = self.image_pipeline if plan.init_image is not None else self.text_pipeline
        accepted = inspect.signature(pipeline.__call__).parameters
        if plan.negative_prompt and "negative_prompt" not in accepted:
            raise InvalidRequestError("negative_prompt", plan.negative_prompt,
                                      f"is not supported by model {self.name!r}")

    def sampler_label(self, plan: RenderPlan) -> str:
        if plan.scheduler is not None:
            return scheduler_label(plan.scheduler)
        return label_of(self._default_scheduler)

    def passes(self, plan: RenderPlan) -> list[dict[str, Any]] | None:
        return None

    def _scheduler(self, name: str | None) -> Any:
        if name is None:
            return self._default_scheduler
        if name not in self._schedulers:
            self._schedulers[name] = make_scheduler(name, self._default_scheduler.config)
        return self._schedulers[name]

    def render(self, plan: RenderPlan, on_step: StepCallback) -> list[Image.Image]:
        return self.render_many([plan], on_step)[0]

    def render_many(self, plans: list[RenderPlan], on_step: StepCallback
                    ) -> list[list[Image.Image]]:
        """Compatible plans (same size, steps, guidance, sampler, input kind, strength) in one
        pipeline call: a prompt, a negative prompt, a generator and an input per image."""
        first = plans[0]
        # 1. Image-to-image at strength 0 is the source itself (diffusers would run 0 steps).
        if first.init_image is not None and first.strength == 0:
            return [[plan.init_image.copy() for _ in plan.seeds] for plan in plans]

        # 2. Pick the pipeline and sampler; both share the same weights.
        pipeline = self.text_pipeline if first.init_image is None else self.image_pipeline
        pipeline.scheduler = self._scheduler(first.scheduler)

        # 3. One generator per image, so image k of a batch equals its seed rendered alone.
        def each(values: list[Any]) -> list[Any]:
            return [value for plan, value in zip(plans, values, strict=True)
                    for _ in plan.seeds]

        generators = [torch.Generator(device="cpu").manual_seed(seed)
                      for plan in plans for seed in plan.seeds]
        negatives = each([plan.negative_prompt for plan in plans])

        def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict:
            on_step(step + 1, pipe.num_timesteps, _preview(tensors.get("latents")))
            return tensors

        # 4. Only the arguments this pipeline takes (FLUX has no negative prompt, ...).
        arguments: dict[str, Any] = {
            "prompt": each([plan.prompt for plan in plans]),
            "negative_prompt": negatives if any(negatives) else None,
            "width": first.width,
            "height": first.height,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance,
            "num_images_per_prompt": 1,
            "generator": generators,
            "callback_on_step_end": callback,
            "callback_on_step_end_tensor_inputs": ["latents"],
            "output_type": "pil",
        }
        if first.init_image is not None:
            # diffusers runs int(steps * strength) steps; never let that round down to none.
            arguments["num_inference_steps"] = max(first.steps, math.ceil(1 / first.strength))
            arguments.update(image=each([plan.init_image for plan in plans]),
                             strength=first.strength)
        accepted = inspect.signature(pipeline.__call__).parameters
        arguments = {key: value for key, value in arguments.items() if key in accepted}

        # 5. Render, then hand each plan its own images.
        with torch.inference_mode():
            images = list(pipeline(**arguments).images)
        size = (first.width, first.height)
        images = [image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)
                  for image in images]
        results, start = [], 0
        for plan in plans:
            results.append(images[start:start + plan.n])
            start += plan.n
        return results


def _preview(latents: torch.Tensor | None) -> Image.Image | None:
    if latents is None or latents.ndim != 4 or latents.shape[1] != 4:
        return None
    rgb = torch.einsum("chw,cr->rhw", latents[0].float().cpu(), _LATENT_RGB)
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    preview = Image.fromarray(pixels)
    preview.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    return preview
