"""Any diffusers text-to-image pipeline as a backend; image-to-image shares its weights."""

from __future__ import annotations

import inspect
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from fractal.adapters import FamilyAdapters, family_of
from fractal.backends.base import PREVIEW_SIDE, StepCallback
from fractal.backends.deepcache import step_cache
from fractal.backends.inpaint import Inpainting
from fractal.backends.lora import LoraAdapters
from fractal.backends.model_adapters import ModelAdapters
from fractal.backends.model_defaults import defaults_for
from fractal.backends.refine import can_tile, iterations, refine
from fractal.backends.speed import SpeedOptions, apply_speed, describe, load_vae, place, warm_up
from fractal.backends.tiling import TileGrid
from fractal.backends.vae_tiles import decode, vae_tile_size, vae_tiling
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


def load_text_pipeline(model: str, dtype: torch.dtype, vae: Any = None) -> Any:
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
                source, torch_dtype=dtype, use_safetensors=True,
                **({"vae": vae} if vae is not None else {}))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"could not load diffusers model {model!r}: {exc}. It must be a diffusers folder "
            "(with model_index.json) or a hub id, with .safetensors weights"
        ) from exc


@dataclass(frozen=True)
class _Pass:
    """One pass of a render, as ``render`` runs it and the record describes it."""

    kind: str  # "base" (text), "refine" (image-to-image) or "upscale"
    width: int
    height: int
    steps: int  # denoising steps run
    total: int = 0  # image passes: the schedule whose last `steps` steps run
    strength: float | None = None  # as recorded
    pipeline_strength: float | None = None  # as the image-to-image pipeline is asked
    upscaler: str | None = None
    grid: TileGrid | None = None  # refine() over these tiles; None: through a pipeline
    tile: tuple[int, int] | None = None  # (width, height) in pixels when there are tiles
    vae_tile: int | None = None  # the VAE encodes and decodes in tiles of this many pixels
    # With a style reference / controls: whether this pass takes them (None: the plan has none).
    style_reference: bool | None = None
    controls: bool | None = None

    @property
    def plain(self) -> bool:
        return self.kind != "upscale" and self.grid is None and self.vae_tile is None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "width": self.width, "height": self.height,
                "steps": self.steps, "strength": self.strength, "upscaler": self.upscaler,
                "tiles": len(self.grid) if self.grid is not None else 1,
                "tile": list(self.tile) if self.tile else None, "vae_tile": self.vae_tile,
                **{key: value for key, value in (("style_reference", self.style_reference),
                                                 ("controls", self.controls))
                   if value is not None}}


class DiffusionBackend:
    def __init__(self, model: str, *, device: torch.device, dtype: torch.dtype,
                 tile_size: int | None = None, tile_overlap: int | None = None,
                 adapters: Mapping[str, FamilyAdapters] | None = None,
                 lora_dir: Path | None = None, lora_hub: bool = True,
                 speed: SpeedOptions | None = None) -> None:
        self.name = display_name(model)
        self.device = device
        logger.info("loading %s on %s (%s)", self.name, device, dtype)
        # Speed options and memory modes (fractal.backends.speed): the VAE and placement here,
        # the rest once every module is in place, at the end.
        options = speed or SpeedOptions()
        self.text_pipeline = load_text_pipeline(
            model, dtype, load_vae(options.vae, dtype) if options.vae else None)
        self.offload = place(self.text_pipeline, device, options.offload)
        self.text_pipeline.set_progress_bar_config(disable=True)
        self._image_pipeline: Any = None
        self._default_scheduler = self.text_pipeline.scheduler
        self._schedulers: dict[str, Any] = {}
        self.defaults = defaults_for(model, self.text_pipeline)
        # The tile budget: a pass whose side exceeds tile_size denoises in tiles (when this
        # denoiser can: SD and SDXL UNets) and runs the VAE in tiles.
        self.tile_size = tile_size or max(self.defaults.width, self.defaults.height)
        self.tile_overlap = tile_overlap if tile_overlap is not None else self.tile_size // 4
        if not 0 <= self.tile_overlap * 2 <= self.tile_size:
            raise InvalidRequestError("tile_overlap", tile_overlap,
                                      f"must be at most half the tile ({self.tile_size})")
        self._tiles_ok = can_tile(self.text_pipeline)
        # This family's IP-Adapter and ControlNets (fractal.adapters), loaded once, here.
        self.family = family_of(self.text_pipeline)
        self.adapters = (adapters or {}).get(self.family or "") or FamilyAdapters()
        self._adapters = ModelAdapters(self.text_pipeline, self.family, self.adapters,
                                       self.name, device, dtype)
        # Masks, and dedicated inpainting checkpoints (which cannot tile: see can_tile).
        self.inpainting = Inpainting(self.text_pipeline, self.name)
        # LoRAs (fractal.backends.lora): loaded on first use, kept, switched per call.
        self.lora_adapters = LoraAdapters(self.text_pipeline, self.family, self.name, lora_dir,
                                          hub=lora_hub)
        self.compiler = apply_speed(self.text_pipeline, options, self.name)
        warm_up(self.text_pipeline, options.warmup, self.defaults.guidance)
        if self.compiler is not None:
            self.compiler.mark_warm()  # from here on, a compiled graph is a recompilation
        self.speed = describe(options, self.offload, dtype, self.text_pipeline)

    def capabilities(self) -> dict[str, Any]:
        return {**self._adapters.capabilities(), "loras": self.lora_adapters.supported}

    @property
    def image_pipeline(self) -> Any:
        """Image-to-image over the same modules: built on first use, never loaded twice."""
        return self._image_to_image("input_type", "image")

    def _image_to_image(self, argument: str, value: Any) -> Any:
        if self._image_pipeline is None:
            from diffusers import AutoPipelineForImage2Image

            try:
                self._image_pipeline = AutoPipelineForImage2Image.from_pipe(self.text_pipeline)
            except ValueError as exc:
                raise InvalidRequestError(
                    argument, value, f"is not supported by model {self.name!r}: {exc}"
                ) from None
            self._image_pipeline.set_progress_bar_config(disable=True)
        return self._image_pipeline

    def _is_flow_matching(self) -> bool:
        return type(self._default_scheduler).__name__.startswith("FlowMatch")

    def loras(self, plan: RenderPlan) -> list[dict[str, Any]] | None:
        return self.lora_adapters.describe(plan.loras)

    def check(self, plan: RenderPlan) -> None:
        if plan.loras and self.speed["fuse_qkv"]:  # LoRAs patch the unfused projections
            raise InvalidRequestError("loras", [lora.name for lora in plan.loras],
                                      f"cannot apply: model {self.name!r} runs with fused QKV")
        self.lora_adapters.check(plan.loras)
        self._adapters.check(plan, self.text_pipeline)
        if plan.scheduler is not None and self._is_flow_matching():
            raise InvalidRequestError(
                "scheduler", plan.scheduler,
                f"cannot be changed for the flow-matching model {self.name!r}")
        if plan.hires is not None:  # its refine pass is image-to-image
            self._image_to_image("hires", f"{plan.width}x{plan.height} in two passes")
        self.inpainting.check(plan, self.text_pipeline, self._adapters.controlnets)
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
        layout = self._layout(plan)
        if not layout or (len(layout) == 1 and layout[0].plain):
            return None
        return [each.describe() for each in layout]

    # -- how a plan runs -----------------------------------------------------------------

    def _layout(self, plan: RenderPlan) -> list[_Pass]:
        """The passes ``render_many`` runs for ``plan``, each saying whether it takes the
        plan's style reference and controls; empty when it returns the source."""
        layout = self._passes(plan)
        if plan.mask is not None:
            # diffusers' inpainting pipeline, untiled at any size (the VAE still tiles).
            layout = [replace(step, grid=None, tile=None) for step in layout]
        if plan.style_reference is None and not plan.controls:
            return layout
        # Every pass takes both: diffusers' pipelines, and the tiled loop, which gives the
        # UNet the IP-Adapter's embeddings and runs the ControlNets per tile.
        return [replace(step, style_reference=True if plan.style_reference else None,
                        controls=True if plan.controls else None)
                for step in layout]

    def _passes(self, plan: RenderPlan) -> list[_Pass]:
        if plan.input_type == "text":
            if plan.hires is None:
                return [self._text_pass(plan.width, plan.height, plan.steps)]
            hires = plan.hires
            return [self._text_pass(hires.width, hires.height, plan.steps),
                    self._image_pass("refine", plan.width, plan.height, hires.steps,
                                     hires.strength, upscaler="Lanczos")]
        strength = plan.strength or 0.0
        if plan.input_type == "upscale":
            return [self._image_pass("upscale", plan.width, plan.height,
                                     math.ceil(plan.steps * strength), strength,
                                     upscaler="Lanczos")]
        if strength == 0:
            return []
        # Plain image-to-image: the steps diffusers' pipeline runs, which the tiled path
        # runs too; through the pipeline unless the image is over the tile budget.
        total = max(plan.steps, math.ceil(1 / strength))
        return [self._image_pass("refine", plan.width, plan.height,
                                 min(int(total * strength), total), strength, total=total,
                                 small_by_pipeline=True)]

    def _tiled(self, width: int, height: int) -> bool:
        return max(width, height) > self.tile_size

    def _vae_tile(self, width: int, height: int) -> int | None:
        side = vae_tile_size(self.text_pipeline.vae)
        if side is None or not self._tiled(width, height) or max(width, height) <= side:
            return None
        return side

    def _text_pass(self, width: int, height: int, steps: int) -> _Pass:
        return _Pass("base", width, height, steps, vae_tile=self._vae_tile(width, height))

    def _image_pass(self, kind: str, width: int, height: int, run: int, strength: float, *,
                    upscaler: str | None = None, total: int | None = None,
                    small_by_pipeline: bool = False) -> _Pass:
        pipeline_strength = strength
        if total is None:
            total, pipeline_strength = _schedule(run, strength)
        grid = tile = None
        tiled = self._tiled(width, height)
        if run > 0 and self._tiles_ok and (tiled or not small_by_pipeline):
            scale = int(self.text_pipeline.vae_scale_factor)
            grid = TileGrid(height // scale, width // scale, max(1, self.tile_size // scale),
                            self.tile_overlap // scale)
            if len(grid) > 1:
                tile_width, tile_height = grid.tile_size
                tile = (tile_width * scale, tile_height * scale)
        return _Pass(kind, width, height, run, total, strength, pipeline_strength, upscaler,
                     grid, tile, self._vae_tile(width, height))

    def _iterations(self, step: _Pass) -> int:
        """Progress ticks of a pass: denoiser calls, per tile."""
        if step.steps == 0:
            return 0
        if self._is_flow_matching():  # first-order, and its timesteps depend on the image
            return step.steps
        scheduler = self.text_pipeline.scheduler
        calls = iterations(scheduler, step.total or step.steps, step.steps)
        return calls * (len(step.grid) if step.grid is not None else 1)

    def _scheduler(self, name: str | None) -> Any:
        if name is None:
            return self._default_scheduler
        if name not in self._schedulers:
            self._schedulers[name] = make_scheduler(name, self._default_scheduler.config)
        return self._schedulers[name]

    # -- rendering -----------------------------------------------------------------------

    def render(self, plan: RenderPlan, on_step: StepCallback) -> list[Image.Image]:
        return self.render_many([plan], on_step)[0]

    def render_many(self, plans: list[RenderPlan], on_step: StepCallback
                    ) -> list[list[Image.Image]]:
        """Compatible plans (see fractal.corender) in one call per pass: a prompt, a negative
        prompt, a generator and an input per image. A two-pass plan renders at the native
        size, is upscaled (Lanczos) and refined; large refines denoise in blended tiles."""
        first = plans[0]
        layout = self._layout(first)
        # 1. Image-to-image at strength 0 is the source itself (diffusers would run 0 steps).
        if not layout:
            return [[plan.init_image.copy() for _ in plan.seeds] for plan in plans]

        # 2. The sampler, on both pipelines (they share it and the weights).
        scheduler = self._scheduler(first.scheduler)
        self.text_pipeline.scheduler = scheduler
        if first.init_image is not None or len(layout) > 1:
            self.image_pipeline.scheduler = scheduler

        # 3. One generator per image, so image k of a batch equals its seed rendered alone.
        def each(values: list[Any]) -> list[Any]:
            return [value for plan, value in zip(plans, values, strict=True)
                    for _ in plan.seeds]

        generators = [torch.Generator(device="cpu").manual_seed(seed)
                      for plan in plans for seed in plan.seeds]
        negatives = each([plan.negative_prompt for plan in plans])
        prompts = each([plan.prompt for plan in plans])
        masks = each([plan.mask for plan in plans])

        # The style reference's scales on the shared UNet (0 without one: see ip_adapter),
        # and the group's LoRAs (one set: fractal.corender), loaded here, under the lock.
        self._adapters.prepare(self.text_pipeline, first)
        self.lora_adapters.activate(first.loras)

        # 4. Progress runs over every pass (and every tile) as one count.
        ticks = [self._iterations(step) for step in layout]
        total, offsets = sum(ticks), [sum(ticks[:k]) for k in range(len(ticks))]

        # 5. The passes: text first (when any), then image passes on the previous result.
        images = None if first.init_image is None else each([plan.init_image for plan in plans])
        with torch.inference_mode():
            for step, offset, count in zip(layout, offsets, ticks, strict=True):
                def report(done: int, latents: torch.Tensor | None, offset: int = offset,
                           count: int = count) -> None:
                    on_step(offset + min(done, count), total, _preview(latents))

                if images is not None:
                    size = (step.width, step.height)
                    images = [image if image.size == size
                              else image.resize(size, Image.Resampling.LANCZOS)
                              for image in images]
                    if step.steps == 0:
                        continue
                arguments = {"prompts": prompts, "negatives": negatives if any(negatives)
                             else None, "generators": generators, "guidance": first.guidance}
                embeds = self._adapters.image_embeds(self.text_pipeline, first, len(prompts))
                # A deep cache starts fresh each pass (refine() bypasses it: a call per tile).
                with step_cache(self.text_pipeline):
                    if step.grid is not None:
                        logger.info("%s pass %dx%d in %d tiles", step.kind, step.width,
                                    step.height, len(step.grid))
                        images = refine(self.image_pipeline, images, total=step.total,
                                        run=step.steps, grid=step.grid, vae_tile=step.vae_tile,
                                        on_tile=report, image_embeds=embeds,
                                        control=self._adapters.tiled_control(
                                            self.image_pipeline, first, step.width,
                                            step.height), **arguments)
                    else:
                        images = self._pipeline_pass(step, images, report, plan=first,
                                                     image_embeds=embeds, masks=masks,
                                                     **arguments)
        size = (first.width, first.height)
        images = [image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)
                  for image in images]
        results, start = [], 0
        for plan in plans:
            results.append(images[start:start + plan.n])
            start += plan.n
        return results

    def _pipeline_pass(self, step: _Pass, images: list[Image.Image] | None,
                       report: Callable[[int, Any], None], *, plan: RenderPlan,
                       image_embeds: list[torch.Tensor] | None, prompts: list[str],
                       negatives: list[str] | None, generators: list[torch.Generator],
                       guidance: float, masks: list[Image.Image | None]
                       ) -> list[Image.Image]:
        """One pass through diffusers' own text- or image-to-image pipeline (its ControlNet
        pipeline when the plan has controls), or its inpainting one (fractal.backends.inpaint)."""
        if self.inpainting.applies(plan):
            pipeline, extra = self.inpainting.pipeline_for(
                self.text_pipeline, self._adapters.controlnets, plan, step.width, step.height,
                images, masks, image_embeds)
        else:
            pipeline, extra = self._adapters.pipeline_for(
                self.text_pipeline,
                self.text_pipeline if images is None else self.image_pipeline,
                plan, step.width, step.height, images is not None, image_embeds)

        def callback(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict:
            report(index + 1, tensors.get("latents"))
            return tensors

        # Only the arguments this pipeline takes (FLUX has no negative prompt, ...).
        arguments: dict[str, Any] = {
            "prompt": prompts,
            "negative_prompt": negatives,
            "width": step.width,
            "height": step.height,
            "num_inference_steps": step.steps,
            "guidance_scale": guidance,
            "num_images_per_prompt": 1,
            "generator": generators,
            "callback_on_step_end": callback,
            "callback_on_step_end_tensor_inputs": ["latents"],
            "output_type": "pil",
        }
        if images is not None:
            arguments.update(image=images, num_inference_steps=step.total,
                             strength=step.pipeline_strength)
        accepted = inspect.signature(pipeline.__call__).parameters
        arguments = {key: value for key, value in arguments.items() if key in accepted}
        arguments.update(extra)  # checked when loaded: these pipelines take them
        if step.vae_tile is not None and images is None and self._tiles_ok:
            # A UNet's latents decode here, tile by tile, blended (see vae_tiles).
            latents = pipeline(**{**arguments, "output_type": "latent"}).images
            return decode(pipeline, latents, step.vae_tile)
        with vae_tiling(pipeline.vae, step.vae_tile is not None):  # diffusers' own tiles
            return list(pipeline(**arguments).images)


def _schedule(run: int, strength: float) -> tuple[int, float]:
    """(schedule length, strength) for running the last ``run`` steps at about ``strength``:
    the nearest length whose ``run / length`` diffusers' pipelines count back to exactly
    ``run`` (SD's int(n × s) and FLUX's n − n × s round differently otherwise)."""
    if run == 0:
        return 0, strength
    ideal = max(run, round(run / strength))
    for distance in range(ideal + 1):
        for length in (ideal + distance, ideal - distance):
            if length >= run and length * (run / length) == run:
                return length, run / length
    return run, 1.0


def _preview(latents: torch.Tensor | None) -> Image.Image | None:
    if latents is None or latents.ndim != 4 or latents.shape[1] != 4:
        return None
    latent = latents[:1]
    if max(latent.shape[-2:]) > PREVIEW_SIDE:  # a 4K latent: average it down first
        shrink = PREVIEW_SIDE / max(latent.shape[-2:])
        size = (max(1, round(latent.shape[-2] * shrink)), max(1, round(latent.shape[-1] * shrink)))
        latent = torch.nn.functional.adaptive_avg_pool2d(latent.float(), size)
    rgb = torch.einsum("chw,cr->rhw", latent[0].float().cpu(), _LATENT_RGB)
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    preview = Image.fromarray(pixels)
    preview.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    return preview
