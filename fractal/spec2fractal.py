"""``Spec2Fractal``: load a model once, then render text, images, or both."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from fractal.backends.base import Backend, StepCallback
from fractal.backends.engine import ENGINE_NAME, EngineBackend
from fractal.corender import group_plans
from fractal.errors import GenerationCancelled, InvalidRequestError, Spec2FractalError
from fractal.guards import check_memory_limit, memory_guard
from fractal.images import ImageSource, load_image
from fractal.inputs import (
    colors_argument,
    edit_arguments,
    loras_argument,
    record_of_source,
    reference_arguments,
    request_image,
)
from fractal.loras import LoraFile, list_loras
from fractal.masks import InpaintJob, edit_record, inpaint_jobs, prepare_inpaint
from fractal.plan import (
    HIRES_FACTOR,
    UPSCALE_STRENGTH,
    ModelDefaults,
    RenderPlan,
    build_plan,
    hires_pass,
)
from fractal.record import attach_record, record_of
from fractal.references import load_references
from fractal.request import GenerationRequest
from fractal.styles import StyleLibrary
from fractal.validation import check_request, check_tiling

if TYPE_CHECKING:
    import torch

__all__ = ["CancelHook", "ProgressCallback", "Spec2Fractal"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, "Image.Image | None"], None]
# An Event (set it to cancel) or a function answering "should I stop now?".
CancelHook = threading.Event | Callable[[], bool]


class Spec2Fractal:
    """Text-to-image, image-to-image and hybrid rendering through one loaded model.

    ``model`` is a diffusers folder or hub id, or ``"fractal"`` (the default): the built-in
    offline engine. The model loads once, here; an instance renders one request at a time.

    ``memory_limit``: bytes a diffusion model may use on its device, its weights included;
    a request whose estimated peak is larger is refused before it starts (fractal.memory).
    None: what the device has (CUDA: free plus what torch holds; CPU: available RAM; MPS:
    no check).

    A text-to-image size over ``hires_factor`` × the model's native area renders in two
    passes; a diffusion pass with a side over ``tile_size`` pixels (default: the native
    side) denoises and decodes in tiles overlapping by ``tile_overlap`` (default: a quarter).

    ``adapters``: the IP-Adapter and ControlNets of each model family (fractal.adapters),
    e.g. ``{"sd15": {"ip_adapter": {...}, "controlnets": {"canny": "..."}}}``; the loaded
    model takes its family's, once, here. The built-in engine needs none: it takes a style
    reference and ``canny`` and ``image`` controls by itself.

    ``lora_dir``: the folder of LoRA files (``name.safetensors``) requests name in ``loras``,
    in ``<lora:name:weight>`` prompt tags or in a style (fractal.loras); hub ids
    (``owner/repo[/file.safetensors]``) load from the hub unless ``lora_hub`` is False (a
    service's workers: a tenant must not make them download arbitrary files). Each loads
    once, on first use.

    ``speed``: a diffusion model's speed options and memory mode (fractal.backends.speed:
    compile, channels_last, fuse_qkv, vae, step_cache, offload, warmup); the engine has none.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        styles: str | Path | Sequence[str | Path] | None = None,
        hires_factor: float = HIRES_FACTOR,
        memory_limit: int | None = None,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        adapters: Mapping[str, Any] | str | None = None,
        lora_dir: str | Path | None = None,
        lora_hub: bool = True,
        speed: Mapping[str, Any] | None = None,
    ) -> None:
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise InvalidRequestError("model", model, "must be a model folder, hub id or 'fractal'")
        if isinstance(hires_factor, bool) or not isinstance(hires_factor, (int, float)) \
                or not 1.0 <= hires_factor <= 64.0:
            raise InvalidRequestError("hires_factor", hires_factor,
                                      "must be a number between 1 and 64")
        self.hires_factor = float(hires_factor)
        check_memory_limit(memory_limit)
        check_tiling(tile_size, tile_overlap)
        from fractal.adapters import parse_adapters

        family_adapters = parse_adapters(adapters)
        if lora_dir is not None and not isinstance(lora_dir, (str, Path)):
            raise InvalidRequestError("lora_dir", lora_dir, "must be a folder")
        self.lora_dir = Path(lora_dir).expanduser() if lora_dir is not None else None
        self.styles = StyleLibrary()
        for path in [styles] if isinstance(styles, (str, Path)) else styles or ():
            self.styles.load(path)
        self._lock = threading.Lock()
        # A request may name the model as it was given here (a path, say) or as records do.
        self._names = {(model or ENGINE_NAME).strip().lower()}
        self._backend: Backend
        if model is None or model.strip().lower() == ENGINE_NAME:
            self._backend = EngineBackend(self.styles)
        else:
            from fractal.backends.diffusion import DiffusionBackend
            from fractal.backends.speed import SpeedOptions
            from fractal.device import resolve_device, resolve_dtype

            resolved = resolve_device(device)
            self._backend = DiffusionBackend(
                model.strip(), device=resolved, dtype=resolve_dtype(dtype, resolved),
                tile_size=tile_size, tile_overlap=tile_overlap, adapters=family_adapters,
                lora_dir=self.lora_dir, lora_hub=bool(lora_hub), speed=SpeedOptions.parse(speed))
        self._memory = memory_guard(self._backend, memory_limit)

    @property
    def model(self) -> str:
        """The loaded model's name, as records give it."""
        return self._backend.name

    @property
    def defaults(self) -> ModelDefaults:
        return self._backend.defaults

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def capabilities(self) -> dict[str, Any]:
        """What this model takes beyond a prompt: ``{"style_reference": bool, "controls":
        [control types], "loras": bool}``."""
        return self._backend.capabilities()

    def loras(self) -> list[LoraFile]:
        """The LoRA files in ``lora_dir``, by name (fractal.loras.LoraFile)."""
        return list_loras(self.lora_dir)

    # -- the one entry point -------------------------------------------------------------

    def generate(
        self,
        request: GenerationRequest | Mapping[str, Any],
        *,
        on_progress: ProgressCallback | None = None,
        cancel: CancelHook | None = None,
    ) -> list[Image.Image]:
        """Render a request; returns its ``n`` images, each with its record in ``image.info``.

        ``on_progress(step, total, preview)`` is called between steps. ``cancel`` stops the
        render at the next step with :class:`GenerationCancelled`.
        """
        if not isinstance(request, GenerationRequest):
            request = GenerationRequest.from_dict(request)
        check_request(request)
        init_image, source = request_image(request)
        return self._run(request, init_image, on_progress, cancel, source)

    def generate_many(
        self,
        requests: Sequence[GenerationRequest | Mapping[str, Any]],
        *,
        on_progress: Sequence[ProgressCallback | None] | None = None,
        cancel: Sequence[CancelHook | None] | None = None,
    ) -> list[list[Image.Image] | Spec2FractalError]:
        """Render several requests; compatible ones share one pipeline call.

        Requests with the same size, steps, guidance, sampler, input kind and strength are
        denoised together (prompts, seeds and input images may differ), which keeps a GPU
        busier. Each request's images are the same as :meth:`generate` would give (within ±1
        per channel: a batch sums floating point in another order). Progress and cancel stay
        per request (``on_progress[i]``, ``cancel[i]``), and so do failures: each entry of the
        result is that request's images, or the error that ended it.
        """
        count = len(requests)
        progress_hooks = list(on_progress or [None] * count)
        cancel_hooks = list(cancel or [None] * count)
        results: list[list[Image.Image] | Spec2FractalError | None] = [None] * count
        plans: dict[int, RenderPlan] = {}
        for index, request in enumerate(requests):
            try:
                if not isinstance(request, GenerationRequest):
                    request = GenerationRequest.from_dict(request)
                check_request(request)
                plans[index] = self._plan(request, *request_image(request))
            except InvalidRequestError as exc:
                results[index] = exc
        jobs = inpaint_jobs(plans, self.defaults)
        for index in [i for i, job in jobs.items() if job.skipped]:  # all-black masks
            results[index] = self._finish(plans.pop(index), jobs[index].unchanged(), jobs[index])
        render_plans = {i: jobs[i].render_plan or plan if i in jobs else plan
                        for i, plan in plans.items()}  # skipped ones are gone: all render
        for members in group_plans(render_plans):
            hooks = {i: _step_hook(progress_hooks[i], cancel_hooks[i]) for i in members}
            alive = list(members)

            def on_step(step: int, total: int, preview: Image.Image | None,
                        hooks: dict[int, StepCallback] = hooks,
                        alive: list[int] = alive) -> None:
                for index in list(alive):
                    try:
                        hooks[index](step, total, preview)
                    except GenerationCancelled as exc:  # this request ends; the others go on
                        results[index] = exc
                        alive.remove(index)
                if not alive:
                    raise GenerationCancelled(step, total)

            try:
                on_step(0, plans[members[0]].steps, None)  # drop those cancelled already
                chosen = list(alive)
                logger.info("rendering %d request(s) together with %s", len(chosen), self.model)
                with self._lock:
                    rendered = self._backend.render_many([render_plans[i] for i in chosen],
                                                         on_step)
            except GenerationCancelled:
                continue  # every member was cancelled; each has its own error already
            except InvalidRequestError as exc:  # found while rendering: a LoRA that won't load
                for index in alive:
                    results[index] = exc
                continue
            for index, images in zip(chosen, rendered, strict=True):
                if index in alive:  # not cancelled while the others rendered
                    job = jobs.get(index)
                    results[index] = self._finish(plans[index],
                                                  job.finish(images) if job else images, job)
        finished = [result for result in results if result is not None]
        assert len(finished) == count, "every request ends in images or an error"
        return finished

    # -- conveniences ----------------------------------------------------------------------

    def generate_from_text(
        self,
        prompt: str,
        *,
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
        scheduler: str | None = None,
        style: str | Mapping[str, Any] | None = None,
        lighting: str | None = None,
        colors: Sequence[str] | None = None,
        texture: float | None = None,
        n: int = 1,
        hires: str | dict[str, Any] | None = None,
        style_image: ImageSource | None = None,
        style_strength: float | None = None,
        style_mode: str | None = None,
        control: Sequence[Mapping[str, Any]] | None = None,
        loras: Sequence[Mapping[str, Any]] | None = None,
        on_progress: ProgressCallback | None = None,
        cancel: CancelHook | None = None,
    ) -> Image.Image | list[Image.Image]:
        """Text-to-image. One image for ``n=1``, else a list of ``n``.

        ``hires``: ``"auto"`` (None: two passes when the size is far over the model's native
        one), ``"off"``, or ``{"strength": 0.35, "steps": 10}`` to force two passes.

        ``style_image`` (PIL image, path or bytes): render in its style, at
        ``style_strength`` (0..1, default 0.6); ``style_mode`` "style" (colours, brushwork,
        texture: the default), "composition" or "both". ``control``: units such as
        ``{"type": "canny", "image": photo, "scale": 1.0, "start": 0.0, "end": 1.0}`` whose
        structure the render keeps (see GenerationRequest.control). ``loras``:
        ``[{"name": "ink", "weight": 0.8}]`` from ``lora_dir`` (or ``<lora:ink:0.8>`` in the
        prompt). ``style``: a preset's name or a style object (fractal.styles.Style.inline).
        """
        request = GenerationRequest(
            input_type="text", prompt=prompt, negative_prompt=negative_prompt, width=width,
            height=height, steps=steps, guidance=guidance, seed=seed, scheduler=scheduler,
            style=style, lighting=lighting, colors=colors_argument(colors), texture=texture, n=n,
            hires=hires, **reference_arguments(style_image, style_strength, style_mode, control),
            loras=loras_argument(loras),
        )
        check_request(request)
        images = self._run(request, None, on_progress, cancel)
        return images[0] if n == 1 else images

    def generate_from_image(
        self,
        image: ImageSource,
        prompt: str | None = None,
        *,
        style: str | Mapping[str, Any] | None = None,
        strength: float | None = None,
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
        scheduler: str | None = None,
        lighting: str | None = None,
        colors: Sequence[str] | None = None,
        texture: float | None = None,
        n: int = 1,
        style_image: ImageSource | None = None,
        style_strength: float | None = None,
        style_mode: str | None = None,
        control: Sequence[Mapping[str, Any]] | None = None,
        mask: ImageSource | None = None,
        mask_blur: int | None = None,
        inpaint_area: str | None = None,
        padding: int | None = None,
        expand: Mapping[str, int] | None = None,
        loras: Sequence[Mapping[str, Any]] | None = None,
        on_progress: ProgressCallback | None = None,
        cancel: CancelHook | None = None,
    ) -> Image.Image | list[Image.Image]:
        """Image-to-image (hybrid when a prompt is given). ``image``: PIL image, path or bytes.

        Inpainting: ``mask`` (the image's size; white repaints, black keeps, or transparent
        repaints), ``mask_blur``, ``inpaint_area`` "whole" or "masked" (+ ``padding``);
        outpainting: ``expand`` {"left", "right", "top", "bottom"} (docs/inpainting.md).

        ``strength`` runs from 0 (the source) to 1 (fully repainted); default 0.6 or the style's.
        ``style`` is a preset's name; ``style_image`` a reference picture whose style the
        result takes (see :meth:`generate_from_text` for it and ``control``).
        """
        request = GenerationRequest(
            input_type="hybrid" if prompt and prompt.strip() else "image", prompt=prompt,
            negative_prompt=negative_prompt, width=width, height=height, steps=steps,
            guidance=guidance, seed=seed, scheduler=scheduler, style=style, lighting=lighting,
            colors=colors_argument(colors), texture=texture, strength=strength, n=n,
            **reference_arguments(style_image, style_strength, style_mode, control),
            **edit_arguments(mask, mask_blur, inpaint_area, padding, expand),
            loras=loras_argument(loras),
        )
        check_request(request, has_image=True)
        images = self._run(request, load_image(image), on_progress, cancel)
        return images[0] if n == 1 else images

    def upscale(
        self,
        image: ImageSource,
        scale: int = 2,
        prompt: str | None = None,
        strength: float = UPSCALE_STRENGTH,
        seed: int | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: CancelHook | None = None,
    ) -> Image.Image:
        """``image`` (PIL image, path or bytes) made ``scale`` (2 or 4) times larger, with
        more detail: one image.

        An image this engine drew from a prompt (its record says so) is drawn again at the
        new size: the same scene with more detail. Others are resampled (Lanczos) and given a
        detail pass; a diffusion model refines the enlargement at ``strength`` (0..1).
        """
        request = GenerationRequest(input_type="upscale", prompt=prompt, strength=strength,
                                    seed=seed, scale=scale)
        check_request(request, has_image=True)
        source = load_image(image)
        return self._run(request, source, on_progress, cancel, record_of_source(image))[0]

    # -- the work --------------------------------------------------------------------------

    def _run(
        self,
        request: GenerationRequest,
        init_image: Image.Image | None,
        on_progress: ProgressCallback | None,
        cancel: CancelHook | None,
        source_record: dict[str, Any] | None = None,
    ) -> list[Image.Image]:
        plan = self._plan(request, init_image, source_record)
        on_step = _step_hook(on_progress, cancel)
        on_step(0, plan.steps, None)  # a render cancelled before it starts never starts
        logger.info("rendering %d image(s) %dx%d with %s, seed %d",
                    plan.n, plan.width, plan.height, self.model, plan.seeds[0])
        job = prepare_inpaint(plan, self.defaults) if plan.mask is not None else None
        if job is not None and job.skipped:  # an all-black mask: nothing to render
            return self._finish(plan, job.unchanged(), job)
        with self._lock:
            images = self._backend.render(job.render_plan if job else plan, on_step)
        return self._finish(plan, job.finish(images) if job else images, job)

    def _plan(self, request: GenerationRequest, init_image: Image.Image | None,
              source_record: dict[str, Any] | None = None) -> RenderPlan:
        if request.model is not None and \
                request.model.strip().lower() not in {*self._names, self.model.lower()}:
            raise InvalidRequestError("model", request.model,
                                      f"is not the loaded model ({self.model!r})")
        style_reference, controls = load_references(request)
        plan = build_plan(request, init_image, styles=self.styles, defaults=self.defaults,
                          hires_factor=self.hires_factor, source_record=source_record,
                          style_reference=style_reference, controls=controls)
        self._backend.check(plan)
        self._check_memory(request, plan)
        return plan

    def _check_memory(self, request: GenerationRequest, plan: RenderPlan) -> None:
        """Refuse, before any work, a render its device cannot hold (fractal.memory)."""
        if self._memory is None:
            return

        def replan(plan: RenderPlan, width: int, height: int) -> RenderPlan:
            return replace(plan, width=width, height=height, hires=hires_pass(
                request, width, height, plan.steps, self.defaults, self.hires_factor))

        if plan.mask is not None and plan.inpaint_area == "masked":  # a crop, at native area
            plan = replace(plan, width=self.defaults.width, height=self.defaults.height)
        self._memory.check(plan, replan)

    def _finish(self, plan: RenderPlan, images: list[Image.Image],
                job: InpaintJob | None = None) -> list[Image.Image]:
        return [attach_record(image, edit_record(record_of(plan, index, self._backend), job,
                                                 self._backend.passes))
                for index, image in enumerate(images)]


def _step_hook(on_progress: ProgressCallback | None, cancel: CancelHook | None) -> StepCallback:
    """One callback for a backend: report progress, and stop when the cancel hook says so."""
    should_stop = cancel.is_set if isinstance(cancel, threading.Event) else cancel

    def on_step(step: int, total: int, preview: Image.Image | None) -> None:
        if should_stop is not None and should_stop():
            raise GenerationCancelled(step, total)
        if on_progress is not None and step > 0:
            on_progress(step, total, preview)

    return on_step
