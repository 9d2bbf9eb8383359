"""Speed options and memory modes of a loaded diffusion pipeline (issue #22).

Each option is one of diffusers' or torch's public switches, applied once at load:

* ``compile``: ``torch.compile`` (the named backend; True means "inductor") of the
  denoiser's repeated blocks (``compile_repeated_blocks``: one small graph reused by every
  block, so compiling takes seconds, not minutes) and of the VAE decoder. Every graph the
  backend compiles is counted (:class:`CompileCounter`): after the warm-up renders at
  ``warmup`` sizes, a count that still grows is a recompilation a worker shows in /metrics.
* ``channels_last``: the UNet's and VAE's convolutions in NHWC, which cuDNN prefers.
* ``fuse_qkv``: one matmul for each attention's query, key and value (diffusers'
  ``fuse_qkv_projections``). LoRAs patch the unfused projections, so a request with LoRAs
  is refused on such a model (the backend's ``check``).
* ``vae``: another VAE (folder or hub id), e.g. SDXL's fp16-fix VAE, which need not upcast.
* ``step_cache``: ``"first_block"``, diffusers' First Block Cache (transformers only: it
  reuses the rest of the network's residual while the first block's output barely changes;
  ``step_cache_threshold`` trades quality for speed); ``"deep"``, DeepCache (UNets only:
  fractal.backends.deepcache; the deep blocks run every ``step_cache_interval`` steps);
  ``"auto"``, whichever of the two the model takes. Both change the pictures: docs/deploy.md.
* ``offload``: ``"none"``, ``"model"`` (a whole component on the GPU at a time),
  ``"sequential"`` (one layer at a time: slowest, least memory) or ``"auto"`` (from the
  device's free memory against the weights). On a CPU there is nothing to offload to:
  the pipeline stays where it is, and the description says ``"none (cpu)"``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fractal.backends.deepcache import INTERVALS, DeepCache, step_cache
from fractal.errors import InvalidRequestError, ModelLoadError
from fractal.naming import looks_like_path

__all__ = ["OFFLOAD_MODES", "STEP_CACHES", "CompileCounter", "SpeedOptions", "apply_speed",
           "choose_offload", "describe", "load_vae", "place", "resident_weight_bytes",
           "step_cache_of", "warm_up"]

logger = logging.getLogger(__name__)

OFFLOAD_MODES = ("none", "model", "sequential", "auto")
STEP_CACHES = ("first_block", "deep", "auto")
# "auto" keeps the whole pipeline on the GPU when its weights take at most this share of
# the free memory (the rest is the renders' activations), else offloads whole components
# when the largest one fits in that share, else layer by layer.
AUTO_SHARE = 0.6
MAX_WARMUP_SIDE = 8192
_KEYS = ("compile", "channels_last", "fuse_qkv", "vae", "step_cache", "step_cache_threshold",
         "step_cache_interval", "offload", "warmup")


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequestError(name, value, "must be true or false")
    return value


@dataclass(frozen=True)
class SpeedOptions:
    compile: str | None = None  # a torch.compile backend; None: not compiled
    channels_last: bool = False
    fuse_qkv: bool = False
    vae: str | None = None
    step_cache: str | None = None
    step_cache_threshold: float = 0.05  # diffusers' default for First Block Cache
    step_cache_interval: int = 3  # DeepCache: the deep blocks run every this many steps
    offload: str = "none"
    warmup: tuple[tuple[int, int], ...] = field(default=())

    @classmethod
    def parse(cls, value: SpeedOptions | Mapping[str, Any] | None) -> SpeedOptions:
        """Checked options from a mapping of the names above; each bad value is an
        InvalidRequestError naming its option."""
        if value is None or isinstance(value, SpeedOptions):
            return value or cls()
        if not isinstance(value, Mapping):
            raise InvalidRequestError("speed", value, "must be a mapping of speed options")
        for key in value:
            if key not in _KEYS:
                raise InvalidRequestError("speed", key,
                                          f"is not a speed option ({', '.join(_KEYS)})")
        compile_ = value.get("compile")
        if compile_ is True:
            compile_ = "inductor"
        elif compile_ is False or compile_ in ("", "none", "off"):
            compile_ = None
        if compile_ is not None:
            known = torch.compiler.list_backends(exclude_tags=())
            if not isinstance(compile_, str) or compile_ not in known:
                raise InvalidRequestError("compile", compile_,
                                          f"must be true, false or one of {', '.join(known)}")
        vae = value.get("vae")
        if vae is not None and (not isinstance(vae, str | Path) or not str(vae).strip()
                                or len(str(vae)) > 4096):
            raise InvalidRequestError("vae", vae, "must be a VAE folder or hub id")
        step_cache = value.get("step_cache")
        if step_cache in (False, "", "none", "off"):
            step_cache = None
        if step_cache is not None and step_cache not in STEP_CACHES:
            raise InvalidRequestError("step_cache", step_cache,
                                      f"must be none or one of {', '.join(STEP_CACHES)}")
        threshold = value.get("step_cache_threshold", 0.05)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) \
                or not math.isfinite(threshold) or not 0 < threshold <= 1:
            raise InvalidRequestError("step_cache_threshold", threshold,
                                      "must be a number above 0 and at most 1")
        interval = value.get("step_cache_interval", 3)
        if isinstance(interval, bool) or not isinstance(interval, int) \
                or interval not in INTERVALS:
            raise InvalidRequestError("step_cache_interval", interval,
                                      f"must be a whole number from {INTERVALS.start} to "
                                      f"{INTERVALS.stop - 1}")
        offload = value.get("offload", "none")
        if offload not in OFFLOAD_MODES:
            raise InvalidRequestError("offload", offload,
                                      f"must be one of {', '.join(OFFLOAD_MODES)}")
        return cls(compile=compile_,
                   channels_last=_flag("channels_last", value.get("channels_last", False)),
                   fuse_qkv=_flag("fuse_qkv", value.get("fuse_qkv", False)),
                   vae=str(vae).strip() if vae is not None else None, step_cache=step_cache,
                   step_cache_threshold=float(threshold), step_cache_interval=interval,
                   offload=offload,
                   warmup=_sizes(value.get("warmup", ())))

    @property
    def default(self) -> bool:
        return self == SpeedOptions()


def _sizes(value: Any) -> tuple[tuple[int, int], ...]:
    reason = "must be a list of [width, height] sizes (at most 16, each side 8 to 8192)"
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple) or len(value) > 16:
        raise InvalidRequestError("warmup", value, reason)
    sizes = []
    for size in value:
        if not isinstance(size, list | tuple) or len(size) != 2 or not all(
                isinstance(side, int) and not isinstance(side, bool)
                and 8 <= side <= MAX_WARMUP_SIDE for side in size):
            raise InvalidRequestError("warmup", value, reason)
        sizes.append((int(size[0]), int(size[1])))
    return tuple(sizes)


class CompileCounter:
    """A torch.compile backend that counts the graphs it compiles, then hands each to the
    named backend (``torch._dynamo.lookup_backend``, public in its ``__all__``)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.graphs = 0
        self.after_warmup = 0
        self._warm = False

    def __call__(self, graph: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        self.graphs += 1
        if self._warm:
            self.after_warmup += 1
            logger.warning("torch.compile recompiled (%d since warm-up)", self.after_warmup)
        return torch._dynamo.lookup_backend(self.backend)(graph, example_inputs)

    def mark_warm(self) -> None:
        self._warm = True


def load_vae(vae: str, dtype: torch.dtype) -> Any:
    """The override VAE, as ``from_pretrained(..., vae=...)`` takes it."""
    from diffusers import AutoencoderKL

    if looks_like_path(vae) and not Path(vae).expanduser().is_dir():
        raise ModelLoadError(f"VAE folder {vae!r} does not exist")
    source = str(Path(vae).expanduser()) if looks_like_path(vae) else vae
    try:
        return AutoencoderKL.from_pretrained(source, torch_dtype=dtype, use_safetensors=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"could not load VAE {vae!r}: {exc}") from exc


def _components(pipeline: Any) -> list[torch.nn.Module]:
    return [module for module in pipeline.components.values()
            if isinstance(module, torch.nn.Module)]


def _bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size()
               for t in (*module.parameters(), *module.buffers()))


def choose_offload(weights: int, largest: int, free: int) -> str:
    """``auto``'s choice for a pipeline of ``weights`` bytes whose largest component has
    ``largest``, on a device with ``free`` bytes."""
    if weights <= free * AUTO_SHARE:
        return "none"
    if largest <= free * AUTO_SHARE:
        return "model"
    return "sequential"


def place(pipeline: Any, device: torch.device, offload: str) -> str:
    """Put ``pipeline`` on ``device`` or offload it as ``offload`` asks; returns the mode
    that applies ("none (cpu)" where there is nothing to offload to)."""
    if device.type == "cpu":
        if offload != "none":
            logger.info("offload=%s: a no-op on cpu (weights already live in RAM)", offload)
        pipeline.to(device)
        return "none (cpu)" if offload != "none" else "none"
    mode = offload
    if offload == "auto":
        sizes = [_bytes(module) for module in _components(pipeline)]
        if device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)
            mode = choose_offload(sum(sizes), max(sizes, default=0), int(free))
        else:  # MPS and others report no free figure
            mode = "none"
        logger.info("offload=auto chose %s (weights %d bytes)", mode, sum(sizes))
    if mode == "model":
        pipeline.enable_model_cpu_offload(device=device)
    elif mode == "sequential":
        pipeline.enable_sequential_cpu_offload(device=device)
    else:
        pipeline.to(device)
    return mode


def resident_weight_bytes(pipeline: Any, mode: str) -> int | None:
    """The weight bytes an offloaded pipeline holds on its device at once (the memory guard
    counts these, not all of them): the largest component under ``model``, the largest
    layer under ``sequential``; None when nothing is offloaded."""
    if mode == "model":
        return max((_bytes(module) for module in _components(pipeline)), default=0)
    if mode == "sequential":
        return max((sum(t.numel() * t.element_size()
                        for t in (*leaf.parameters(recurse=False), *leaf.buffers(recurse=False)))
                    for module in _components(pipeline) for leaf in module.modules()), default=0)
    return None


def apply_speed(pipeline: Any, options: SpeedOptions, name: str) -> CompileCounter | None:
    """Apply everything but the VAE and the placement (both at load) to a pipeline whose
    modules are in place; returns the compile counter when it compiles."""
    denoiser = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
    if options.channels_last:
        for module in (getattr(pipeline, "unet", None), getattr(pipeline, "vae", None)):
            if module is not None:
                module.to(memory_format=torch.channels_last)
    if options.fuse_qkv:
        if not hasattr(pipeline, "fuse_qkv_projections") and \
                not hasattr(denoiser, "fuse_qkv_projections"):
            raise InvalidRequestError("fuse_qkv", True, f"is not supported by model {name!r}")
        # Fusing sets one fused processor on every attention: an IP-Adapter's would go, and
        # style references with it, silently. Refused instead.
        processors = getattr(denoiser, "attn_processors", {})
        if any("IPAdapter" in type(each).__name__ for each in processors.values()):
            raise InvalidRequestError("fuse_qkv", True, f"cannot be combined with model "
                                      f"{name!r}'s IP-Adapter (style reference)")
        try:
            if hasattr(pipeline, "fuse_qkv_projections"):
                pipeline.fuse_qkv_projections()
            else:
                denoiser.fuse_qkv_projections()
        except ValueError as exc:  # e.g. attentions with added KV projections
            raise InvalidRequestError("fuse_qkv", True,
                                      f"is not supported by model {name!r}: {exc}") from None
    if options.step_cache is not None:
        _apply_step_cache(pipeline, denoiser, options, name)
    if options.compile is None:
        return None
    counter = CompileCounter(options.compile)
    if getattr(denoiser, "_repeated_blocks", None):
        denoiser.compile_repeated_blocks(backend=counter)
    else:
        denoiser.compile(backend=counter)
    vae = getattr(pipeline, "vae", None)
    if vae is not None and hasattr(vae, "decoder"):
        vae.decoder.compile(backend=counter)
    return counter


def _apply_step_cache(pipeline: Any, denoiser: Any, options: SpeedOptions, name: str) -> None:
    """First Block Cache on a transformer, DeepCache on a UNet; ``auto``: whichever the
    model takes (none, logged, when it takes neither)."""
    from diffusers import UNet2DConditionModel

    kind = options.step_cache
    unet = getattr(pipeline, "unet", None)
    if kind == "auto":
        kind = "deep" if isinstance(unet, UNet2DConditionModel) else \
            "first_block" if hasattr(denoiser, "enable_cache") else None
        logger.info("step_cache=auto chose %s for %s", kind or "none", name)
    if kind == "deep":
        try:
            DeepCache.apply(unet if unet is not None else denoiser,
                            options.step_cache_interval)
        except ValueError as exc:
            if options.step_cache == "auto":  # takes neither: none
                logger.info("step_cache=auto: none for %s (%s)", name, exc)
                return
            raise InvalidRequestError(
                "step_cache", options.step_cache, f"is not supported by model {name!r} "
                f"(DeepCache is for UNets; transformers take first_block): {exc}") from None
    elif kind == "first_block":
        if not hasattr(denoiser, "enable_cache"):
            raise InvalidRequestError(
                "step_cache", options.step_cache,
                f"is not supported by model {name!r} (First Block Cache is for "
                "transformers; UNets take step_cache=deep)")
        from diffusers.hooks import FirstBlockCacheConfig

        denoiser.enable_cache(FirstBlockCacheConfig(threshold=options.step_cache_threshold))


def step_cache_of(pipeline: Any) -> str | None:
    """The step cache a pipeline's denoiser runs with: "deep", "first_block" or None."""
    if DeepCache.of(getattr(pipeline, "unet", None)) is not None:
        return "deep"
    return "first_block" if getattr(getattr(pipeline, "transformer", None),
                                    "is_cache_enabled", False) else None


def describe(options: SpeedOptions, offload: str, dtype: torch.dtype,
             pipeline: Any = None) -> dict[str, Any]:
    """The options as GET /models and each image's record show them; with step_cache
    "auto", the cache it chose for ``pipeline`` after an arrow."""
    cache = step_cache = options.step_cache
    if cache == "auto":
        step_cache = step_cache_of(pipeline)
        cache = f"auto -> {step_cache or 'none'}"
    return {"dtype": str(dtype).removeprefix("torch."), "compile": options.compile,
            "channels_last": options.channels_last, "fuse_qkv": options.fuse_qkv,
            "vae": options.vae, "step_cache": cache,
            "step_cache_threshold": options.step_cache_threshold
            if step_cache == "first_block" else None,
            "step_cache_interval": options.step_cache_interval if step_cache == "deep" else None,
            "offload": offload if offload == options.offload else f"{options.offload} -> {offload}",
            "warmup": [list(size) for size in options.warmup]}


def warm_up(pipeline: Any, sizes: tuple[tuple[int, int], ...], guidance: float) -> None:
    """A two-step render at each size, so the first request does not pay the compile (with a
    deep cache: one full step and one reused, each path compiled; the cache is fresh after)."""
    for width, height in sizes:
        logger.info("warm-up render at %dx%d", width, height)
        with torch.inference_mode(), step_cache(pipeline):
            pipeline(prompt="warm-up", width=width, height=height, num_inference_steps=2,
                     guidance_scale=guidance, output_type="pil")
