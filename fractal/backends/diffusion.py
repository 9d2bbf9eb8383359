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

    def _scheduler(self, name: str | None) -> Any:
        if name is None:
            return self._default_scheduler
        if name not in self._schedulers:
            self._schedulers[name] = make_scheduler(name, self._default_scheduler.config)
        return self._schedulers[name]

    def render(self, plan: RenderPlan, on_step: StepCallback) -> list[Image.Image]:
        # 1. Image-to-image at strength 0 is the source itself (diffusers would run 0 steps).
        if plan.init_image is not None and plan.strength == 0:
            return [plan.init_image.copy() for _ in plan.seeds]

        # 2. Pick the pipeline and sampler; both share the same weights.
        pipeline = self.text_pipeline if plan.init_image is None else self.image_pipeline
        pipeline.scheduler = self._scheduler(plan.scheduler)

        # 3. One generator per image, so image k of a batch equals its seed rendered alone.
        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in plan.seeds]

        def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict:
            on_step(step + 1, pipe.num_timesteps, _preview(tensors.get("latents")))
            return tensors

        # 4. Only the arguments this pipeline takes (FLUX has no negative prompt, ...).
        arguments: dict[str, Any] = {
            "prompt": plan.prompt,
            "negative_prompt": plan.negative_prompt or None,
            "width": plan.width,
            "height": plan.height,
            "num_inference_steps": plan.steps,
            "guidance_scale": plan.guidance,
            "num_images_per_prompt": plan.n,
            "generator": generators,
            "callback_on_step_end": callback,
            "callback_on_step_end_tensor_inputs": ["latents"],
            "output_type": "pil",
        }
        if plan.init_image is not None:
            # diffusers runs int(steps * strength) steps; never let that round down to none.
            arguments["num_inference_steps"] = max(plan.steps, math.ceil(1 / plan.strength))
            arguments.update(image=plan.init_image, strength=plan.strength)
        accepted = inspect.signature(pipeline.__call__).parameters
        arguments = {key: value for key, value in arguments.items() if key in accepted}

        # 5. Render.
        with torch.inference_mode():
            result = pipeline(**arguments)
        images = list(result.images)
        return [image if image.size == (plan.width, plan.height)
                else image.resize((plan.width, plan.height), Image.Resampling.LANCZOS)
                for image in images]


def _preview(latents: torch.Tensor | None) -> Image.Image | None:
    if latents is None or latents.ndim != 4 or latents.shape[1] != 4:
        return None
    rgb = torch.einsum("chw,cr->rhw", latents[0].float().cpu(), _LATENT_RGB)
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    preview = Image.fromarray(pixels)
    preview.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    return preview
